//! `pricer lab mlm`: masked-word reading of product texts before the
//! encoder learns prices (`training::mlm`); writes a base model folder.

use anyhow::Result;

/// The run's settings: parsed from the command line and kept in the run's
/// `mlm.json`, so that `--resume` continues with the same ones.
pub type MlmArgs = crate::training::mlm::MlmConfig;

pub fn run(args: &MlmArgs) -> Result<()> {
    crate::training::mlm::run(args)
}
