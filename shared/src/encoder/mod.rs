//! The encoder: tokens to a pooled vector and the price head's outputs.
//! [`bert`] is the model (candle's primitive ops, trainable); [`fused`] and
//! [`fused_layer`] are the same computation as CPU ops with their own backward
//! (training speed); [`int8`] runs it from 8-bit files in integers, with the
//! same bits natively and in the browser.

pub mod bert;
pub mod fused;
pub mod fused_layer;
pub mod int8;
#[cfg(not(target_arch = "wasm32"))]
pub mod int8_native;
