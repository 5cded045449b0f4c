//! `pricer compare`: several models (files or chat models) on the same
//! items, one markdown table, each against the first with a paired interval.

use crate::chat::ChatArgs;
use crate::data::{prices, split_files};
use crate::tester::{PriceSource, Reading, Row, evaluate, model_name, paired_mae_difference, warn_if_validation_seen};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Items with known prices (a file), or a `curate` directory (its test splits).
    #[arg(long)]
    pub data: PathBuf,
    /// Model files and `chat:MODEL`s, compared in this order.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// With a `curate` directory: its validation splits instead of its test splits.
    #[arg(long)]
    pub validation: bool,
    /// Evaluate only the first N priced items of each file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Stop at the first malformed record.
    #[arg(long)]
    pub strict: bool,
    /// Prices written as text use a decimal comma (`12,99`, `1.299,00`);
    /// without it such a price is refused as ambiguous.
    #[arg(long)]
    pub decimal_comma: bool,
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// `pricer compare`: each model on each file (or split), one markdown table.
pub fn run(args: &CompareArgs) -> Result<()> {
    let files = if args.data.is_dir() {
        split_files(&args.data, args.validation)?
    } else {
        vec![(args.data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(), args.data.clone())]
    };
    let read = Reading { limit: args.limit, strict: args.strict, prices: prices(args.decimal_comma), cut: None };
    let mut table = vec![
        "| model | data | items | MAE | RMSLE | hits | median error | no estimate | MAE vs the first model (95% CI) |"
            .to_string(),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |".to_string(),
    ];
    // The first model's rows per split, to pair the others' with.
    let mut first: Vec<Vec<Row>> = Vec::new();
    for (m, spec) in args.models.iter().enumerate() {
        let mut model = PriceSource::open(spec, &args.chat)?;
        warn_if_validation_seen(&model, &model_name(spec), args.validation);
        for (f, (split, path)) in files.iter().enumerate() {
            let e = evaluate(&mut model, path, read, false)?;
            let s = &e.summary;
            let vs = match first.get(f) {
                Some(base) if m > 0 => match paired_mae_difference(base, &e.rows, 2000, 42) {
                    Some(d) => format!("{:+.2} [{:+.2}, {:+.2}] on {}", d.mean, d.low, d.high, d.n),
                    None => "no item in common".into(),
                },
                _ => String::new(),
            };
            table.push(format!(
                "| {} | {split} | {} | ${:.2} | {:.3} | {:.1}% | ${:.2} | {} | {vs} |",
                model_name(spec),
                s.n,
                s.mae,
                s.rmsle,
                s.hits_pct,
                s.median_abs_error,
                e.errors
            ));
            if m == 0 {
                first.push(e.rows);
            }
        }
    }
    println!("{}", table.join("\n"));
    if args.models.len() > 1 {
        println!(
            "\n(MAE vs the first model: the mean of the paired absolute-error differences on the items both \
             estimated, in dollars; the 95% interval from 2,000 paired bootstrap resamples. An interval that \
             holds 0 cannot tell the two apart on these items.)"
        );
    }
    Ok(())
}
