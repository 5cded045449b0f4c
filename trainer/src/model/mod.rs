//! Model files: opening them, and what a file carries besides its weights
//! (the card's figures, the int8 calibration).

pub mod calibrate;
pub mod card;

use anyhow::{Context, Result};
use pricer::Estimator;
use std::path::Path;

/// Reads and opens a model file.
pub fn load_model(path: &Path) -> Result<Estimator> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    Estimator::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))
}
