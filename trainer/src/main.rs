//! `pricer`: curate data, train and evaluate price models, export them.

mod chat;
mod commands;
mod data;
mod linear;
mod model;
mod recipe;
mod report;
mod tester;
mod training;

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
    Curate(commands::curate::CurateArgs),
    /// Build a model file from a recipe: every step in order, each skipped
    /// when done, redone when its settings or inputs changed.
    Build(commands::build::BuildArgs),
    /// Train a model and write it as one GGUF file.
    Train(commands::train::TrainArgs),
    /// Evaluate a model on items with known prices (the Tester).
    Eval(commands::eval::EvalArgs),
    /// Evaluate several models (files or chat:MODEL) on the same items: one markdown table.
    Compare(commands::compare::CompareArgs),
    /// Estimate prices of products given as text or JSONL on stdin.
    Predict(commands::predict::PredictArgs),
    /// Adapt a model to your own priced products (no retraining): a second
    /// neighbour index of them and a blend refitted by cross-validation.
    Adapt(commands::adapt::AdaptArgs),
    /// Export a fine-tuning run as one quantized model file.
    Export(commands::export::ExportArgs),
    /// Show a model file's metadata: kind, provenance, recipe, test metrics.
    Info(commands::info::InfoArgs),
    /// Fine-tune a frontier chat model through its API (the course's week 6),
    /// asked as `--model chat:MODEL` asks; then `pricer eval --model chat:ID`.
    FrontierFinetune(commands::frontier::FrontierArgs),
    /// Research tools: masked-word training, soups, pseudo-labels, 8-bit
    /// analysis, speed, embeddings, comparables (`pricer lab --help`).
    #[command(subcommand)]
    Lab(commands::lab::LabCommand),
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
    let result = commands::run(&cli.command);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
