//! Pricer in the browser: the page (`app`, a Leptos CSR app) and the Web
//! Worker that runs the model (`worker`), which talk in the JSON messages of
//! `protocol`. The page never runs the model itself, so it never freezes.

#[cfg(feature = "page")]
pub mod app;
pub mod format;
mod js;
pub mod protocol;
pub mod worker;

pub use protocol::*;
