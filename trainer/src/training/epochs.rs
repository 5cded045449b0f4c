//! The one resumable epoch loop, shared by fine-tuning and masked-word
//! reading: seeded length-bucketed batches, AdamW with warm-up and decay,
//! gradient clipping, a progress bar, atomic checkpoints every few steps,
//! and the task's own validation after each epoch. A run killed anywhere
//! continues from its last checkpoint to the same result.

use crate::training::batches::bucketed_batches;
use crate::training::optim::{AdamW, grad_norm, lr_at};
use crate::training::run_folder::{RunState, save_checkpoint};
use anyhow::Result;
use candle_core::Tensor;
use std::path::Path;
use std::time::Instant;

/// What the loop needs of a training task.
pub trait Task {
    /// The loss of one batch (indices into the training rows) at optimizer step `step`.
    fn loss(&mut self, batch: &[usize], step: usize) -> Result<Tensor>;
    /// After an epoch's last step (before `state.epoch` moves on): validate,
    /// keep what is worth keeping, print the epoch's line. Returns why to
    /// stop early, if it should.
    fn end_epoch(&mut self, state: &mut RunState, examples_per_s: f64) -> Result<Option<String>>;
    /// Writes the run's record (`run.json`, `mlm.json`) with `state`.
    fn save_record(&mut self, state: &RunState) -> Result<()>;
}

/// How the loop steps through the data.
pub struct Schedule {
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// Peak learning rate (linear warm-up, then linear decay).
    pub lr: f64,
    /// Share of all steps spent warming up.
    pub warmup: f64,
    /// Gradients are scaled down to this global norm.
    pub clip: f64,
    /// Steps between checkpoints (0: at the end of each epoch only).
    pub checkpoint_every: usize,
    /// What a training row is, in the progress line (`ex`, `texts`).
    pub unit: &'static str,
}

/// Batches of one epoch: the same count every epoch.
pub fn batches_per_epoch(lengths: &[usize], s: &Schedule) -> usize {
    bucketed_batches(lengths, s.batch, s.seed, 0).len()
}

/// Runs the epochs left in `state`, over training rows of token `lengths`.
pub fn run_epochs(
    task: &mut impl Task,
    lengths: &[usize],
    s: &Schedule,
    state: &mut RunState,
    opt: &mut AdamW,
    varmap: &candle_nn::VarMap,
    checkpoint: &Path,
) -> Result<()> {
    let total_steps = batches_per_epoch(lengths, s) * s.epochs;
    let warmup = ((total_steps as f64) * s.warmup).round() as usize;
    while state.epoch < s.epochs {
        let epoch = state.epoch;
        let batches = bucketed_batches(lengths, s.batch, s.seed, epoch as u64);
        let bar = progress_bar(batches.len(), epoch, s.epochs, state.batch_in_epoch);
        let start = Instant::now();
        let mut seen = 0usize;
        for (bi, idx) in batches.iter().enumerate().skip(state.batch_in_epoch) {
            let loss = task.loss(idx, state.step)?;
            let grads = loss.backward()?;
            let norm = grad_norm(&grads, &opt.vars)?;
            let scale = if norm > s.clip { s.clip / norm } else { 1.0 };
            opt.step(&grads, lr_at(state.step, total_steps, warmup, s.lr), scale)?;
            state.step += 1;
            state.batch_in_epoch = bi + 1;
            state.loss_sum += loss.to_scalar::<f32>()? as f64;
            state.loss_count += 1;
            seen += idx.len();
            let rate = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let msg = format!("loss {:.4} | {rate:.1} {}/s", state.loss_sum / state.loss_count as f64, s.unit);
            if bar.is_hidden() && state.batch_in_epoch.is_multiple_of(20) {
                // Not a terminal (a log file): a plain line now and then instead of the bar.
                println!("epoch {}/{} batch {}/{} {msg}", epoch + 1, s.epochs, bi + 1, batches.len());
            }
            bar.set_message(msg);
            bar.inc(1);
            if s.checkpoint_every > 0 && state.step.is_multiple_of(s.checkpoint_every) {
                state.adam_t = opt.t;
                save_checkpoint(checkpoint, varmap, opt, state)?;
                task.save_record(state)?;
            }
        }
        bar.finish_and_clear();
        let rate = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let stop = task.end_epoch(state, rate)?;
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        if let Some(why) = stop
            && state.epoch < s.epochs
        {
            println!("{why}: stopping early");
            state.stopped_early = true;
            state.epoch = s.epochs;
        }
        state.done = state.epoch >= s.epochs;
        state.adam_t = opt.t;
        save_checkpoint(checkpoint, varmap, opt, state)?;
        task.save_record(state)?;
    }
    Ok(())
}

fn progress_bar(len: usize, epoch: usize, epochs: usize, at: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar.set_position(at as u64);
    bar
}
