//! `pricer adapt`: a model adapted to a shop's own priced products, without
//! retraining ([`pricer::adapt`], the same code the page's worker runs).

use crate::data::{check_output, prices, write_atomic};
use crate::model::load_model;
use anyhow::{Context, Result, bail};
use pricer::adapt::{self, OwnItems, REFIT_FROM, SHOWN_SKIPS};
use pricer::estimator::{BATCH, MemberValues};
use pricer::metrics::Summary;
use pricer::{Error, Estimator};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct AdaptArgs {
    /// The model to adapt (a stack or minilm model file).
    #[arg(long)]
    pub model: PathBuf,
    /// Your priced products: CSV with a header (`title`, `price`, optional
    /// `description`, `category`) or JSONL, as `pricer eval` reads them.
    #[arg(long)]
    pub data: PathBuf,
    /// The adapted model file to write (not written when adapting fails).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure on these priced products (never used to adapt): the
    /// model before and after, as `pricer eval` would score them.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// With `--eval`: also adapt on the first N products of `--data` for each
    /// N (e.g. `100,300,1000`), a learning curve (the products are embedded once).
    #[arg(long, value_delimiter = ',', requires = "eval")]
    pub curve: Vec<usize>,
    /// Products from which the blend's weights are refitted (fewer: only a
    /// scale and bias). The default was chosen on learning curves
    /// (docs/benchmarks.md).
    #[arg(long, default_value_t = REFIT_FROM)]
    pub refit_from: usize,
    /// Prices written as text use a decimal comma (`12,99`, `1.299,00`);
    /// without it such a price is refused as ambiguous.
    #[arg(long)]
    pub decimal_comma: bool,
}

pub fn run(args: &AdaptArgs) -> Result<()> {
    check_output(&args.out)?;
    let est = load_model(&args.model)?;
    est.check_adaptable().with_context(|| format!("cannot adapt {}", args.model.display()))?;
    let file = std::fs::File::open(&args.data).with_context(|| format!("cannot read {}", args.data.display()))?;
    let name = args.data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let items = match adapt::read_shop_file(&est, &name, file, prices(args.decimal_comma)) {
        Ok(items) => items,
        Err(e) => {
            if let adapt::ShopFileError::NoUsable { skipped, .. } = &e {
                print_skipped(&args.data, skipped);
            }
            bail!("{}: {e}: nothing written", args.data.display());
        }
    };
    let start = Instant::now();
    let values = embed(&est, &items);
    let seconds = start.elapsed().as_secs_f64();
    let adaptation = match &args.eval {
        None => adapt::fit_with(&est, &items, values, &name, args.refit_from),
        Some(eval) => measure(args, &est, &items, values, eval, &name)?,
    }
    .with_context(|| format!("cannot adapt to {}: nothing written", args.data.display()))?;
    let bytes = est.adapted_file(&adaptation)?;
    // Beside the target, then renamed: an interruption leaves the previous file whole.
    write_atomic(&args.out, &bytes)?;
    let r = &adaptation.report;
    let rate = r.items as f64 / seconds.max(1e-9);
    if args.json {
        let json = serde_json::json!({
            "items": r.items, "skipped": skips_json(&args.data, &items.skipped),
            "method": r.method.name(), "folds": r.folds,
            "before": summary_json(&r.before), "after": summary_json(&r.after),
            "embed_seconds": seconds, "items_per_second": rate, "out": args.out.display().to_string(),
        });
        println!("{json}");
        return Ok(());
    }
    print_skipped(&args.data, &items.skipped);
    println!(
        "{}: {} products used, {} skipped; embedded in {seconds:.1} s ({rate:.0} products/s, {} threads)",
        args.data.display(),
        r.items,
        r.skipped,
        rayon::current_num_threads()
    );
    println!("cross-validated on your products ({} folds, each product estimated by a fit without it):", r.folds);
    println!("  {:<8} {:>10} {:>7} {:>7}", "", "MAE", "RMSLE", "hits");
    for (label, s) in [("before", &r.before), ("after", &r.after)] {
        println!("  {label:<8} {:>10} {:>7.3} {:>6.1}%", format!("${:.2}", s.mae), s.rmsle, s.hits_pct);
    }
    let why = if r.items < args.refit_from && r.method != adapt::Method::Unchanged {
        format!(" (with fewer than {} products only a scale and bias are refitted)", args.refit_from)
    } else {
        String::new()
    };
    println!("method: {}{why}", r.method.describe());
    println!(
        "wrote {} ({:.1} MiB): its estimates, ranges and comparables use your {} products",
        args.out.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        r.items
    );
    Ok(())
}

/// Member values of every item, batches spread over all cores.
fn embed(est: &Estimator, items: &OwnItems) -> Vec<Result<MemberValues, Error>> {
    let bar = indicatif::ProgressBar::new(items.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("embedding {bar:30} {pos}/{len} [{elapsed} < {eta}]")
            .expect("a valid progress template"),
    );
    let values: Vec<Vec<Result<MemberValues, Error>>> = items
        .products
        .par_chunks(BATCH)
        .map(|chunk| {
            let v = est.member_values(chunk);
            bar.inc(chunk.len() as u64);
            v
        })
        .collect();
    bar.finish_and_clear();
    values.into_iter().flatten().collect()
}

/// Adapts on the first N products for each N of `--curve` and on all of
/// them, printing each one's cross-validated and held-out error; gives the
/// adaptation on all.
fn measure(
    args: &AdaptArgs,
    est: &Estimator,
    items: &OwnItems,
    values: Vec<Result<MemberValues, Error>>,
    eval: &Path,
    name: &str,
) -> Result<Result<adapt::Adaptation, Error>> {
    let file = std::fs::File::open(eval).with_context(|| format!("cannot read {}", eval.display()))?;
    let eval_name = eval.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let held_out = adapt::read_shop_file(est, &eval_name, file, prices(args.decimal_comma))
        .with_context(|| format!("--eval {}", eval.display()))?;
    let held_values: Vec<MemberValues> = embed(est, &held_out).into_iter().collect::<Result<_, _>>()?;
    let truth: Vec<f64> = held_out.products.iter().map(|p| p.price.unwrap_or(0.0)).collect();
    let score = |e: &Estimator, a: Option<&adapt::Adaptation>| -> Result<Summary> {
        let mut pairs = Vec::new();
        for ((p, v), t) in held_out.products.iter().zip(&held_values).zip(&truth) {
            let v = match a {
                Some(a) => adapt::adapted_values(a, v.clone()),
                None => v.clone(),
            };
            pairs.push((e.estimate_from(p, v)?.price, *t));
        }
        Summary::of(&pairs).context("no held-out product")
    };
    let unadapted = score(est, None)?;
    let values: Vec<std::result::Result<MemberValues, String>> =
        values.into_iter().map(|v| v.map_err(|e| e.to_string())).collect();
    let mut sizes: Vec<usize> = args.curve.iter().copied().filter(|&n| n < items.len()).collect();
    sizes.push(items.len());
    println!(
        "held out: {} ({} products), unadapted: MAE ${:.2}, RMSLE {:.3}, hits {:.1}%",
        eval.display(),
        held_out.len(),
        unadapted.mae,
        unadapted.rmsle,
        unadapted.hits_pct
    );
    println!("| products | method | CV MAE before -> after | held-out MAE | held-out RMSLE | held-out hits |");
    println!("|---:|---|---|---:|---:|---:|");
    let mut last = None;
    for n in sizes {
        let (sub, at) = items.first(n);
        let sub_values = at.iter().map(|&i| values[i].clone().map_err(Error::Model)).collect();
        let a = match adapt::fit_with(est, &sub, sub_values, name, args.refit_from) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let mut adapted = load_model(&args.model)?;
        adapted.apply_adaptation(&a)?;
        let s = score(&adapted, Some(&a))?;
        let r = &a.report;
        println!(
            "| {} | {} | ${:.2} -> ${:.2} | ${:.2} | {:.3} | {:.1}% |",
            r.items,
            r.method.name(),
            r.before.mae,
            r.after.mae,
            s.mae,
            s.rmsle,
            s.hits_pct
        );
        last = Some(a);
    }
    Ok(Ok(last.expect("at least the full size")))
}

fn print_skipped(data: &Path, skipped: &[adapt::Skipped]) {
    for s in skipped.iter().take(SHOWN_SKIPS) {
        eprintln!("{}:{}: skipped: {}", data.display(), s.line, s.reason);
    }
    if skipped.len() > SHOWN_SKIPS {
        eprintln!("... and {} more skipped", skipped.len() - SHOWN_SKIPS);
    }
}

fn skips_json(data: &Path, skipped: &[adapt::Skipped]) -> serde_json::Value {
    let file = data.display().to_string();
    skipped.iter().map(|s| serde_json::json!({"file": file, "line": s.line, "reason": s.reason})).collect()
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({"mae": s.mae, "rmsle": s.rmsle, "hits_pct": s.hits_pct})
}
