//! `pricer eval`: the Tester. Runs a model over items with known prices,
//! prints each estimate coloured by how far off it is, then the summary.

use crate::chat::ChatArgs;
use crate::data::{Split, priced_products, prices, split_files};
use crate::model::card::write_test_metrics;
use crate::tester::{PriceSource, Reading, evaluate, model_name, summary_json, warn_if_validation_seen, write_report};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model file (.gguf) made by `pricer train` or `pricer export`, or
    /// `chat:MODEL`: a chat model behind an OpenAI-compatible endpoint.
    #[arg(long)]
    pub model: PathBuf,
    /// Items with known prices: curated JSONL, raw Amazon JSONL, or CSV; or a
    /// `curate` directory, whose test splits (all of them) are evaluated.
    #[arg(long)]
    pub data: PathBuf,
    /// With a `curate` directory: evaluate its validation splits instead of its test splits.
    #[arg(long)]
    pub validation: bool,
    /// Evaluate only the first N priced items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the scatter chart (scatter.svg) and the per-item table (items.csv) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print only the summary, as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Stop at the first malformed record.
    #[arg(long)]
    pub strict: bool,
    /// Prices written as text use a decimal comma (`12,99`, `1.299,00`);
    /// without it such a price is refused as ambiguous.
    #[arg(long)]
    pub decimal_comma: bool,
    /// Let the model read at most N tokens of each item (fewer than it was
    /// made for), to measure what a shorter, faster input costs in accuracy.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Evaluate the first estimate instead: the linear members alone, the
    /// encoder's and neighbours' shares at the training mean (what the page
    /// shows while the encoder runs). A stack of an encoder and linear members.
    #[arg(long, conflicts_with = "max_tokens")]
    pub first: bool,
    /// Write a copy of the model file whose card's test metrics (and
    /// scatter) are this build's, measured on `--data`'s test splits: after
    /// a change of the inference code, the card says what the page computes.
    #[arg(long, value_name = "OUT.gguf", conflicts_with_all = ["max_tokens", "first", "validation", "limit"])]
    pub write_card: Option<PathBuf>,
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// `pricer compare`: several models on the same items, one table.
pub fn run(args: &EvalArgs) -> Result<()> {
    let mut model = PriceSource::open(&args.model, &args.chat)?;
    let name = model_name(&args.model);
    warn_if_validation_seen(&model, &name, args.validation);
    let mut tokenizer = None;
    if let Some(n) = args.max_tokens {
        let PriceSource::File(est) = &mut model else { bail!("--max-tokens needs a model file") };
        if n == 0 || n > est.prep.max_tokens {
            bail!("--max-tokens {n}: the model reads 1 to {} tokens", est.prep.max_tokens);
        }
        // Curated items carry text already cut to the model's budget: it is
        // cut again by the model's tokenizer, so a model without one cannot.
        let Some(tok) = est.prep.tokenizer.clone() else {
            bail!("--max-tokens needs a model with a tokenizer (an encoder or a stack with one)")
        };
        est.prep.max_tokens = n;
        tokenizer = Some(tok);
    }
    if args.first {
        let PriceSource::File(est) = model else { bail!("--first needs a model file") };
        if !est.gives_first_estimate() {
            bail!("--first needs a stack of an encoder and linear members (this model is {:?})", est.kind);
        }
        model = PriceSource::First(est);
    }
    if let Some(out) = &args.write_card {
        let PriceSource::File(est) = &model else { bail!("--write-card needs a model file") };
        if !args.data.is_dir() {
            bail!("--write-card needs a curate directory (its test splits are the card's)");
        }
        let mut tests = Vec::new();
        for (name, path) in split_files(&args.data, false)? {
            tests.push(Split { name, products: priced_products(&path, false)?.0 });
        }
        let mut w = pricer::model_file::ModelWriter::from_file(&est.file)?;
        write_test_metrics(&mut w, est, &tests)?;
        std::fs::write(out, w.to_bytes()?).with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {} with this build's test metrics on {} splits", out.display(), tests.len());
    }
    let read = Reading {
        limit: args.limit,
        strict: args.strict,
        prices: prices(args.decimal_comma),
        cut: tokenizer.as_ref().zip(args.max_tokens),
    };
    if !args.data.is_dir() {
        let e = evaluate(&mut model, &args.data, read, !args.json)?;
        if let Some(dir) = &args.report {
            write_report(dir, &name, &e.rows, &e.summary)?;
        }
        if args.json {
            println!("{}", summary_json(&e, &name, None));
        } else {
            let s = &e.summary;
            println!();
            println!("model {name} ({}) on {}", model.kind(), args.data.display());
            println!(
                "items {} | MAE ${:.2} | RMSLE {:.3} | hits {:.1}% | median error ${:.2}{}",
                s.n,
                s.mae,
                s.rmsle,
                s.hits_pct,
                s.median_abs_error,
                if e.errors > 0 { format!(" | no estimate for {}", e.errors) } else { String::new() }
            );
        }
        return Ok(());
    }
    // A curate directory: every test (or validation) split, one line each.
    let files = split_files(&args.data, args.validation)?;
    if !args.json {
        println!("model {name} ({})", model.kind());
        println!("| split | items | MAE | RMSLE | hits | median error | no estimate |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    for (split, path) in files {
        let e = evaluate(&mut model, &path, read, false)?;
        if let Some(dir) = &args.report {
            write_report(&dir.join(&split), &name, &e.rows, &e.summary)?;
        }
        if args.json {
            println!("{}", summary_json(&e, &name, Some(&split)));
        } else {
            let s = &e.summary;
            println!(
                "| {split} | {} | ${:.2} | {:.3} | {:.1}% | ${:.2} | {} |",
                s.n, s.mae, s.rmsle, s.hits_pct, s.median_abs_error, e.errors
            );
        }
    }
    Ok(())
}
