//! Pricer's model crate: the single source of truth shared by the trainer and
//! the browser.
//!
//! The journey of one product, one folder per stage:
//! 1. [`data`]: a raw record ([`readers`]) becomes a [`Product`] ([`product`]),
//!    its prepared text ([`text`]) and its tokens ([`tokenizer`]).
//! 2. [`encoder`]: tokens become a pooled vector and the price head's outputs
//!    ([`bert`]; the same computation fused for CPU training in [`fused`] and
//!    [`fused_layer`], and in integers for 8-bit files in [`int8`]).
//! 3. [`members`]: the stack's other members read the same product: linear
//!    models on words and details ([`baselines`]) and the nearest training
//!    items ([`knn`]).
//! 4. [`estimate`]: one GGUF file ([`model_file`]) loaded as an [`Estimator`]
//!    ([`estimator`]) blends them into an [`Estimate`] (price and range), says
//!    why ([`explain`]), is scored by [`metrics`], and adapts to a shop's
//!    own priced products without retraining ([`adapt`]).
//!
//! Each stage's modules are also re-exported here (`pricer::readers`...).

pub mod data;
pub mod encoder;
pub mod estimate;
pub mod members;

pub use data::{product, readers, text, tokenizer};
#[cfg(not(target_arch = "wasm32"))]
pub use encoder::int8_native;
pub use encoder::{bert, fused, fused_layer, int8};
pub use estimate::{adapt, estimator, explain, metrics, model_file};
pub use members::{baselines, knn};

pub use estimator::{Estimate, Estimator};
pub use product::{Product, SourceFormat};
pub use tokenizer::TextTokenizer;

/// Everything that can go wrong in the shared crate, each with a message a
/// user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file: {0}")]
    ModelFile(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("nothing to price: the product has no title and no description")]
    EmptyProduct,
    #[error("model: {0}")]
    Model(String),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error met elsewhere (another of the page's workers), as it read there.
    #[error("{0}")]
    Relayed(String),
}
