//! `pricer eval`: the Tester. Runs a model over items with known prices,
//! prints each estimate coloured by how far off it is, then the summary.

use crate::data::{Tally, for_each_product, split_kind};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::Estimator;
use pricer::metrics::{Grade, Summary};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model file (.gguf) made by `pricer train` or `pricer export`.
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
}

/// One evaluated item.
pub struct Row {
    pub title: String,
    pub estimate: f64,
    pub truth: f64,
    pub low: f64,
    pub high: f64,
}

pub fn load_model(path: &std::path::Path) -> Result<Estimator> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    Estimator::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let name = args.model.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !args.data.is_dir() {
        let (rows, s) = evaluate(&model, &args.data, args, !args.json)?;
        if let Some(dir) = &args.report {
            write_report(dir, &name, &rows, &s)?;
        }
        if args.json {
            println!("{}", summary_json(&s, &name, None));
        } else {
            println!();
            println!("model {name} ({}) on {}", model.kind, args.data.display());
            println!(
                "items {} | MAE ${:.2} | RMSLE {:.3} | hits {:.1}% | median error ${:.2}",
                s.n, s.mae, s.rmsle, s.hits_pct, s.median_abs_error
            );
        }
        return Ok(());
    }
    // A curate directory: every test (or validation) split, one line each.
    let want = if args.validation { "validation" } else { "test" };
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&args.data)
        .with_context(|| format!("cannot list {}", args.data.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().to_string();
            let (kind, split) = split_kind(&file)?;
            (kind == want).then(|| (if split.is_empty() { want.to_string() } else { split }, e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no {want} split ({want}.jsonl or {want}-NAME.jsonl)", args.data.display());
    }
    if !args.json {
        println!("model {name} ({})", model.kind);
        println!("| split | items | MAE | RMSLE | hits | median error |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    for (split, path) in files {
        let (rows, s) = evaluate(&model, &path, args, false)?;
        if let Some(dir) = &args.report {
            write_report(&dir.join(&split), &name, &rows, &s)?;
        }
        if args.json {
            println!("{}", summary_json(&s, &name, Some(&split)));
        } else {
            println!(
                "| {split} | {} | ${:.2} | {:.3} | {:.1}% | ${:.2} |",
                s.n, s.mae, s.rmsle, s.hits_pct, s.median_abs_error
            );
        }
    }
    Ok(())
}

fn summary_json(s: &Summary, model: &str, split: Option<&str>) -> serde_json::Value {
    let mut out = serde_json::json!({
        "n": s.n, "mae": s.mae, "rmsle": s.rmsle, "hits_pct": s.hits_pct,
        "median_abs_error": s.median_abs_error, "model": model,
    });
    if let Some(split) = split {
        out["split"] = split.into();
    }
    out
}

/// Estimates every priced item of one file, printing a row per item when asked.
fn evaluate(model: &Estimator, data: &Path, args: &EvalArgs, print_rows: bool) -> Result<(Vec<Row>, Summary)> {
    let color = print_rows && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut tally = Tally::default();
    let mut products = Vec::new();
    for_each_product(data, args.strict, &mut tally, |p, t| {
        if products.len() >= limit {
            return Ok(());
        }
        if p.price.is_none() {
            t.drop("no price");
            return Ok(());
        }
        products.push(p);
        Ok(())
    })?;
    let mut rows: Vec<Row> = Vec::new();
    for (p, e) in products.iter().zip(model.estimate_batch(&products)) {
        let truth = p.price.unwrap_or(0.0);
        match e {
            Ok(e) => {
                tally.kept += 1;
                let row = Row { title: p.title.clone(), estimate: e.price, truth, low: e.low, high: e.high };
                if print_rows {
                    print_row(rows.len() + 1, &row, color);
                }
                rows.push(row);
            }
            Err(err) => {
                eprintln!("{}: {:?}: {err}; skipped", data.display(), p.title);
                tally.drop("cannot estimate");
            }
        }
    }
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.estimate, r.truth)).collect();
    let Some(s) = Summary::of(&pairs) else {
        bail!("no priced items in {} ({})", data.display(), tally.summary());
    };
    if print_rows && tally.dropped.values().sum::<u64>() > 0 {
        println!("({})", tally.summary());
    }
    Ok((rows, s))
}

fn print_row(i: usize, r: &Row, color: bool) {
    let grade = Grade::of(r.estimate, r.truth);
    let (on, off) = match (color, grade) {
        (false, _) => ("", ""),
        (true, Grade::Green) => ("\x1b[32m", "\x1b[0m"),
        (true, Grade::Orange) => ("\x1b[33m", "\x1b[0m"),
        (true, Grade::Red) => ("\x1b[31m", "\x1b[0m"),
    };
    let title: String = r.title.chars().take(48).collect();
    println!(
        "{on}{i:>5}  estimate ${:>8.2}  truth ${:>8.2}  error ${:>8.2}  {:<6}  {title}{off}",
        r.estimate,
        r.truth,
        (r.estimate - r.truth).abs(),
        format!("{grade:?}").to_lowercase()
    );
}

fn write_report(dir: &std::path::Path, name: &str, rows: &[Row], s: &Summary) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.estimate, r.truth)).collect();
    let caption = format!("{name}: MAE ${:.2}, RMSLE {:.3}, hits {:.1}%", s.mae, s.rmsle, s.hits_pct);
    report::scatter(&dir.join("scatter.svg"), &caption, &pairs)?;
    let mut w = csv::Writer::from_path(dir.join("items.csv"))?;
    w.write_record(["title", "estimate", "truth", "error", "low", "high", "grade"])?;
    for r in rows {
        w.write_record([
            r.title.clone(),
            format!("{:.2}", r.estimate),
            format!("{:.2}", r.truth),
            format!("{:.2}", (r.estimate - r.truth).abs()),
            format!("{:.2}", r.low),
            format!("{:.2}", r.high),
            format!("{:?}", Grade::of(r.estimate, r.truth)).to_lowercase(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
