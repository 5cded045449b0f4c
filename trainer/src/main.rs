//! `pricer`: curate data, train and evaluate price models, export them.

mod adapt;
mod bench;
mod chat;
mod comparables;
mod curate;
mod data;
mod embed;
mod eval;
mod export;
mod finetune;
mod fit;
mod frontier;
mod info;
mod init_base;
mod mlm;
mod optim;
mod predict;
mod pseudo;
mod quant;
mod report;
mod soup;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pricer", version, about = "Estimate what a product costs from its description")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Curate raw product files into train / validation / test sets, with a data report.
    Curate(curate::CurateArgs),
    /// Train a model and write it as one GGUF file.
    Train(train::TrainArgs),
    /// Evaluate a model on items with known prices (the Tester).
    Eval(eval::EvalArgs),
    /// Estimate prices of products given as text or JSONL on stdin.
    Predict(predict::PredictArgs),
    /// Evaluate several models (files or chat:MODEL) on the same items: one markdown table.
    Compare(eval::CompareArgs),
    /// Check a device against the CPU: same batch, outputs, loss, gradients.
    CheckDevice(bench::CheckDeviceArgs),
    /// Fine-tune a frontier chat model through its API (the course's week 6),
    /// asked as `--model chat:MODEL` asks; then `pricer eval --model chat:ID`.
    FrontierFinetune(frontier::FrontierArgs),
    /// Export a fine-tuning run as one quantized model file.
    Export(export::ExportArgs),
    /// Adapt a model to your own priced products (no retraining): a second
    /// neighbour index of them and a blend refitted by cross-validation.
    Adapt(adapt::AdaptArgs),
    /// Measure how far a file's 8-bit inference is from f32 inference of the same weights.
    QuantError(quant::QuantErrorArgs),
    /// Domain-adaptive masked-word training of the encoder on product texts
    /// (priced or not), before it learns prices: writes a base model folder.
    Mlm(mlm::MlmArgs),
    /// Price products that have none with a model (self-training data for `train --pseudo`).
    PseudoLabel(pseudo::PseudoLabelArgs),
    /// Average the weights of fine-tuning runs on the same data into one run
    /// (a model soup): one model's size and speed, often better than each.
    Soup(soup::SoupArgs),
    /// Calibrate the 8-bit kernels' per-channel input smoothing on products' texts.
    Smooth(quant::SmoothArgs),
    /// Show a model file's metadata: kind, provenance, test metrics.
    Info(info::InfoArgs),
    /// Write a randomly initialised BERT model folder (tests, training from scratch).
    InitBase(init_base::InitBaseArgs),
    /// Measure the encoder's training and inference speed (examples/s).
    Bench(bench::BenchArgs),
    /// Write the encoder's pooled vector of every item as a NumPy matrix (.npy).
    Embed(embed::EmbedArgs),
    /// Measure a model's comparable products on each test split: price-range
    /// coverage, their median's error, lookup and explanation time, index size.
    Comparables(comparables::ComparablesArgs),
}

/// Keeps freed memory in the process: candle allocates a fresh tensor for
/// every op, and returning those pages to the kernel only to fault them in
/// again cost a quarter of CPU training time (seen with `perf`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes glibc's allocator parameters, takes plain
    // integers, and runs first in main, before any other thread exists.
    unsafe {
        // Allocations up to 32 MiB (glibc's ceiling for this) come from the heap, not mmap...
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // ...and free heap memory is never trimmed back to the kernel.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Ends quietly when the reader of stdout goes away (`pricer eval ... | head`),
/// like other command-line tools, instead of panicking in `println!`.
#[cfg(unix)]
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default action of one signal; the handler value is
    // libc's own constant, and this runs first in main, before other threads.
    // Socket writes are unaffected: Rust's std sends with MSG_NOSIGNAL.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_pipe() {}

fn main() {
    keep_freed_memory();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Curate(a) => curate::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Compare(a) => eval::compare(a),
        Command::Bench(a) => bench::run(a),
        Command::CheckDevice(a) => bench::check_device(a),
        Command::Export(a) => export::run(a),
        Command::FrontierFinetune(a) => frontier::run(a),
        Command::InitBase(a) => init_base::run(a),
        Command::Info(a) => info::run(a),
        Command::Adapt(a) => adapt::run(a),
        Command::QuantError(a) => quant::run(a),
        Command::Smooth(a) => quant::run_smooth(a),
        Command::Mlm(a) => mlm::run(a),
        Command::Soup(a) => soup::run(a),
        Command::PseudoLabel(a) => pseudo::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Comparables(a) => comparables::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
