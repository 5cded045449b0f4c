//! Training the encoder: the run folder (config, state, checkpoints, best
//! weights), batches, the loss, the optimizer, and the two loops that use
//! them: fine-tuning with a price head, and masked-word reading.

pub mod batches;
pub mod epochs;
pub mod finetune;
pub mod loss;
pub mod mlm;
pub mod optim;
pub mod run_folder;
