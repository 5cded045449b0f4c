//! Model files: opening them, and what a file carries besides its weights
//! (the card's figures, the int8 calibration).

pub mod calibrate;
pub mod card;

use anyhow::{Context, Result, bail};
use pricer::Estimator;
use pricer::model_file::MAX_FILE_BYTES;
use std::path::Path;

/// Reads and opens a model file: its first bytes are checked before the rest
/// is read, and at most [`MAX_FILE_BYTES`] are (a device or a huge file is
/// refused without filling the memory).
pub fn load_model(path: &Path) -> Result<Estimator> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read model {}", path.display()))?;
    let mut bytes = Vec::new();
    (&mut file).take(4).read_to_end(&mut bytes).with_context(|| format!("cannot read model {}", path.display()))?;
    if bytes != b"GGUF" {
        // Let the loader say what it says of a foreign file.
        return Estimator::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()));
    }
    file.take(MAX_FILE_BYTES - 3)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read model {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("cannot load {}: larger than any Pricer model ({MAX_FILE_BYTES} bytes at most)", path.display());
    }
    Estimator::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))
}
