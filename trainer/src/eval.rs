//! `pricer eval`: the Tester. Runs a model over items with known prices,
//! prints each estimate coloured by how far off it is, then the summary.

use crate::data::{Tally, for_each_product};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::Estimator;
use pricer::metrics::{Grade, Summary};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model file (.gguf) made by `pricer train` or `pricer export`.
    #[arg(long)]
    pub model: PathBuf,
    /// Items with known prices: curated JSONL, raw Amazon JSONL, or CSV.
    #[arg(long)]
    pub data: PathBuf,
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
    let color = !args.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut rows: Vec<Row> = Vec::new();
    let mut tally = Tally::default();
    let limit = args.limit.unwrap_or(usize::MAX);
    for_each_product(&args.data, args.strict, &mut tally, |p, t| {
        if rows.len() >= limit {
            return Ok(());
        }
        let Some(truth) = p.price else {
            t.drop("no price");
            return Ok(());
        };
        match model.estimate(&p) {
            Ok(e) => {
                t.kept += 1;
                let row = Row { title: p.title.clone(), estimate: e.price, truth, low: e.low, high: e.high };
                if !args.json {
                    print_row(rows.len() + 1, &row, color);
                }
                rows.push(row);
            }
            Err(err) => {
                eprintln!("{}: {:?}: {err}; skipped", args.data.display(), p.title);
                t.drop("cannot estimate");
            }
        }
        Ok(())
    })?;
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.estimate, r.truth)).collect();
    let Some(s) = Summary::of(&pairs) else {
        bail!("no priced items in {} ({})", args.data.display(), tally.summary());
    };
    let name = args.model.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if let Some(dir) = &args.report {
        write_report(dir, &name, &rows, &s)?;
    }
    if args.json {
        let out = serde_json::json!({
            "n": s.n, "mae": s.mae, "rmsle": s.rmsle, "hits_pct": s.hits_pct,
            "median_abs_error": s.median_abs_error, "model": name,
        });
        println!("{out}");
    } else {
        println!();
        println!("model {name} ({}) on {}", model.kind, args.data.display());
        println!(
            "items {} | MAE ${:.2} | RMSLE {:.3} | hits {:.1}% | median error ${:.2}",
            s.n, s.mae, s.rmsle, s.hits_pct, s.median_abs_error
        );
        if tally.dropped.values().sum::<u64>() > 0 {
            println!("({})", tally.summary());
        }
    }
    Ok(())
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
