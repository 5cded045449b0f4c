//! Pricer's model crate: the single source of truth shared by the trainer and
//! the browser.
//!
//! The journey of one product, one module per stage:
//! raw record ([`readers`]) -> [`Product`] -> prepared text ([`text`]) ->
//! tokens ([`tokenizer`]) -> features or tensors ([`baselines`]) ->
//! [`Estimate`] ([`estimator`]), scored by [`metrics`]. Every model is one
//! GGUF file ([`model_file`]).

pub mod baselines;
pub mod bert;
pub mod estimator;
pub mod explain;
pub mod fused;
pub mod fused_layer;
pub mod int8;
pub mod knn;
pub mod metrics;
pub mod model_file;
pub mod product;
pub mod readers;
pub mod text;
pub mod tokenizer;

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
}
