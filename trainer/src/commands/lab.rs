//! `pricer lab`: the research tools behind the default model's recipe, kept
//! and documented (their figures are in docs/benchmarks.md), out of the way
//! of the journey from data to a published page.

use super::{bench, comparables, embed, init_base, mlm, pseudo, quant_error, smooth, soup, speed};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Domain-adaptive masked-word training of the encoder on product texts
    /// (priced or not), before it learns prices: writes a base model folder.
    Mlm(mlm::MlmArgs),
    /// Average the weights of fine-tuning runs on the same data into one run
    /// (a model soup): one model's size and speed, often better than each.
    Soup(soup::SoupArgs),
    /// Price products that have none with a model (self-training data for `train --pseudo`).
    PseudoLabel(pseudo::PseudoLabelArgs),
    /// Measure how far a file's 8-bit inference is from f32 inference of the same weights.
    QuantError(quant_error::QuantErrorArgs),
    /// Calibrate the 8-bit kernels' per-channel input smoothing on products' texts.
    Smooth(smooth::SmoothArgs),
    /// Write the encoder's pooled vector of every item as a NumPy matrix (.npy).
    Embed(embed::EmbedArgs),
    /// Measure a model's comparable products on each test split: price-range
    /// coverage, their median's error, lookup and explanation time, index size.
    Comparables(comparables::ComparablesArgs),
    /// Measure the encoder's training and inference speed (examples/s).
    Bench(bench::BenchArgs),
    /// Measure a model file's inference speed on real products (products/s
    /// of the whole stack and of the encoder alone, at each batch size).
    Speed(speed::SpeedArgs),
    /// Check a device against the CPU: same batch, outputs, loss, gradients.
    CheckDevice(bench::CheckDeviceArgs),
    /// Write a randomly initialised BERT model folder (tests, training from scratch).
    InitBase(init_base::InitBaseArgs),
}

pub fn run(command: &LabCommand) -> Result<()> {
    match command {
        LabCommand::Mlm(a) => mlm::run(a),
        LabCommand::Soup(a) => soup::run(a),
        LabCommand::PseudoLabel(a) => pseudo::run(a),
        LabCommand::QuantError(a) => quant_error::run(a),
        LabCommand::Smooth(a) => smooth::run(a),
        LabCommand::Embed(a) => embed::run(a),
        LabCommand::Comparables(a) => comparables::run(a),
        LabCommand::Bench(a) => bench::run(a),
        LabCommand::Speed(a) => speed::run(a),
        LabCommand::CheckDevice(a) => bench::check_device(a),
        LabCommand::InitBase(a) => init_base::run(a),
    }
}
