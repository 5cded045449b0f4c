//! One file per subcommand: its arguments and `run`, over the library
//! modules (`data`, `training`, `linear`, `model`, `tester`). No command
//! imports another; `build` runs the others through [`run`].

pub mod adapt;
pub mod bench;
pub mod build;
pub mod comparables;
pub mod compare;
pub mod curate;
pub mod embed;
pub mod eval;
pub mod export;
pub mod frontier;
pub mod info;
pub mod init_base;
pub mod lab;
pub mod mlm;
pub mod predict;
pub mod pseudo;
pub mod quant_error;
pub mod smooth;
pub mod soup;
pub mod speed;
pub mod train;

use crate::Command;
use anyhow::Result;

/// Runs one parsed command line.
pub fn run(command: &Command) -> Result<()> {
    match command {
        Command::Curate(a) => curate::run(a),
        Command::Build(a) => build::run(a, &run_argv),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Adapt(a) => adapt::run(a),
        Command::Export(a) => export::run(a),
        Command::Info(a) => info::run(a),
        Command::FrontierFinetune(a) => frontier::run(a),
        Command::Lab(c) => lab::run(c),
    }
}

/// Parses and runs `pricer ARGS...` in this process (what `build` runs for
/// each step): the same parser and code as the command line.
pub fn run_argv(args: &[String]) -> Result<()> {
    use clap::Parser;
    let argv = std::iter::once("pricer".to_string()).chain(args.iter().cloned());
    let cli = crate::Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("pricer {}: {e}", args.join(" ")))?;
    run(&cli.command)
}
