//! `pricer eval`: the Tester. Runs a model over items with known prices,
//! prints each estimate coloured by how far off it is, then the summary.

use crate::chat::{ChatArgs, ChatPricer};
use crate::data::{Tally, for_each_product, split_kind};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::metrics::{Grade, Summary};
use pricer::{Estimate, Estimator, Product};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// What `--model` names: a model file, or a chat model asked through the network.
pub enum Pricer {
    File(Box<Estimator>),
    /// A model file's first estimates (`eval --first`).
    First(Box<Estimator>),
    Chat(Box<ChatPricer>),
}

impl Pricer {
    /// `chat:MODEL` or a model file's path.
    pub fn open(spec: &Path, chat: &ChatArgs) -> Result<Self> {
        match spec.to_str().and_then(|s| s.strip_prefix("chat:")) {
            Some(model) => Ok(Pricer::Chat(Box::new(ChatPricer::new(model, chat)?))),
            None => Ok(Pricer::File(Box::new(load_model(spec)?))),
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Pricer::File(e) | Pricer::First(e) => &e.kind,
            Pricer::Chat(_) => "chat",
        }
    }

    /// Every product's estimate, or why there is none. A chat model has no
    /// likely range: its range is its estimate.
    pub fn estimate_all(&mut self, products: &[Product]) -> Result<Vec<Result<Estimate, String>>> {
        Ok(match self {
            Pricer::File(e) => e.estimate_batch(products).into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            Pricer::First(e) => products
                .iter()
                .map(|p| match e.first_estimate(p) {
                    Ok(Some(price)) => Ok(Estimate { price, low: price, high: price }),
                    Ok(None) => Err("the model gives no first estimate".to_string()),
                    Err(e) => Err(e.to_string()),
                })
                .collect(),
            Pricer::Chat(c) => c
                .price_all(products)?
                .into_iter()
                .map(|r| r.map(|price| Estimate { price, low: price, high: price }))
                .collect(),
        })
    }
}

/// How a model is named in tables: a file by its name, a chat model in full.
pub fn model_name(spec: &Path) -> String {
    let s = spec.to_string_lossy();
    if s.starts_with("chat:") {
        return s.to_string();
    }
    spec.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| s.to_string())
}

/// One data file's evaluation.
pub struct Evaluated {
    pub rows: Vec<Row>,
    pub summary: Summary,
    /// Items the model gave no estimate for (counted, not scored as zero).
    pub errors: usize,
}

/// One evaluated item.
pub struct Row {
    /// Position among the file's priced items (pairs two models' rows).
    pub item: usize,
    pub title: String,
    pub estimate: f64,
    pub truth: f64,
    pub low: f64,
    pub high: f64,
}

/// Warns when validation figures are asked of a model that has seen the
/// validation items (`export --index-validation` or `--refit`).
fn warn_if_validation_seen(model: &Pricer, name: &str, validation: bool) {
    let (Pricer::File(est) | Pricer::First(est)) = model else { return };
    if !validation {
        return;
    }
    let mut seen = Vec::new();
    if let Ok(n) = est.file.u32(pricer::estimator::keys::VALIDATION_INDEXED) {
        seen.push(format!("its neighbour index holds {n} of them"));
    }
    if let Ok(names) = est.file.str(pricer::estimator::keys::REFITTED) {
        seen.push(format!("its members {names} were refitted on them"));
    }
    if let Ok(n) = est.file.u32(pricer::estimator::keys::VALIDATION_LEARNT) {
        seen.push(format!("it learnt from {n} of them (train --with-validation)"));
    }
    if !seen.is_empty() {
        eprintln!(
            "note: {name} has seen the validation items ({}): its validation figures are not out-of-sample",
            seen.join("; ")
        );
    }
}

pub fn load_model(path: &std::path::Path) -> Result<Estimator> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    Estimator::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let mut model = Pricer::open(&args.model, &args.chat)?;
    let name = model_name(&args.model);
    warn_if_validation_seen(&model, &name, args.validation);
    let mut tokenizer = None;
    if let Some(n) = args.max_tokens {
        let Pricer::File(est) = &mut model else { bail!("--max-tokens needs a model file") };
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
        let Pricer::File(est) = model else { bail!("--first needs a model file") };
        if !est.gives_first_estimate() {
            bail!("--first needs a stack of an encoder and linear members (this model is {:?})", est.kind);
        }
        model = Pricer::First(est);
    }
    if let Some(out) = &args.write_card {
        let Pricer::File(est) = &model else { bail!("--write-card needs a model file") };
        if !args.data.is_dir() {
            bail!("--write-card needs a curate directory (its test splits are the card's)");
        }
        let mut tests = Vec::new();
        for (name, path) in split_files(&args.data, false)? {
            tests.push(crate::data::Split { name, products: priced_products(&path)? });
        }
        let mut w = pricer::model_file::ModelWriter::from_file(&est.file)?;
        crate::train::write_test_metrics(&mut w, est, &tests)?;
        std::fs::write(out, w.to_bytes()?).with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {} with this build's test metrics on {} splits", out.display(), tests.len());
    }
    let read = Reading { limit: args.limit, strict: args.strict, cut: tokenizer.as_ref().zip(args.max_tokens) };
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

/// `pricer compare`: each model on each file (or split), one markdown table.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let files = if args.data.is_dir() {
        split_files(&args.data, args.validation)?
    } else {
        vec![(args.data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(), args.data.clone())]
    };
    let read = Reading { limit: args.limit, strict: args.strict, cut: None };
    let mut table = vec![
        "| model | data | items | MAE | RMSLE | hits | median error | no estimate | MAE vs the first model (95% CI) |"
            .to_string(),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |".to_string(),
    ];
    // The first model's rows per split, to pair the others' with.
    let mut first: Vec<Vec<Row>> = Vec::new();
    for (m, spec) in args.models.iter().enumerate() {
        let mut model = Pricer::open(spec, &args.chat)?;
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

/// The MAE of `b` minus the MAE of `a` on the items both estimated, with a
/// paired bootstrap interval.
#[derive(Debug, Clone, Copy)]
pub struct Difference {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
}

/// Paired bootstrap of the MAE difference `b - a` (95%: the 2.5th and 97.5th
/// percentiles of `resamples` means of resampled item differences, seeded).
pub fn paired_mae_difference(a: &[Row], b: &[Row], resamples: usize, seed: u64) -> Option<Difference> {
    use rand::{Rng, SeedableRng};
    let by_item: std::collections::HashMap<usize, &Row> = a.iter().map(|r| (r.item, r)).collect();
    let d: Vec<f64> = b
        .iter()
        .filter_map(|rb| {
            let ra = by_item.get(&rb.item)?;
            Some((rb.estimate - rb.truth).abs() - (ra.estimate - ra.truth).abs())
        })
        .collect();
    if d.is_empty() {
        return None;
    }
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> =
        (0..resamples.max(1)).map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Some(Difference { mean, low: at(0.025), high: at(0.975), n })
}

/// A curate directory's test (or validation) split files, by split name.
pub fn split_files(dir: &Path, validation: bool) -> Result<Vec<(String, PathBuf)>> {
    let want = if validation { "validation" } else { "test" };
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().to_string();
            let (kind, split) = split_kind(&file)?;
            (kind == want).then(|| (if split.is_empty() { want.to_string() } else { split }, e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no {want} split ({want}.jsonl or {want}-NAME.jsonl)", dir.display());
    }
    Ok(files)
}

fn summary_json(e: &Evaluated, model: &str, split: Option<&str>) -> serde_json::Value {
    let s = &e.summary;
    let mut out = serde_json::json!({
        "n": s.n, "mae": s.mae, "rmsle": s.rmsle, "hits_pct": s.hits_pct,
        "median_abs_error": s.median_abs_error, "errors": e.errors, "model": model,
    });
    if let Some(split) = split {
        out["split"] = split.into();
    }
    out
}

/// How items are read for an evaluation.
#[derive(Clone, Copy)]
struct Reading<'a> {
    limit: Option<usize>,
    strict: bool,
    /// Cut already prepared texts to this many tokens with this tokenizer.
    cut: Option<(&'a pricer::TextTokenizer, usize)>,
}

/// Estimates every priced item of one file, printing a row per item when asked.
/// The priced products of a data file (malformed lines skipped with a count on stderr).
pub fn priced_products(data: &Path) -> Result<Vec<Product>> {
    let mut tally = Tally::default();
    let mut products = Vec::new();
    for_each_product(data, false, &mut tally, |p, _| {
        if p.price.is_some() {
            products.push(p);
        }
        Ok(())
    })?;
    Ok(products)
}

fn evaluate(model: &mut Pricer, data: &Path, read: Reading, print_rows: bool) -> Result<Evaluated> {
    let color = print_rows && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let limit = read.limit.unwrap_or(usize::MAX);
    let mut tally = Tally::default();
    let mut products = Vec::new();
    for_each_product(data, read.strict, &mut tally, |p, t| {
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
    if let Some((tok, n)) = read.cut {
        for p in &mut products {
            if let Some(text) = &p.prepared_text {
                p.prepared_text = Some(tok.truncate(text, n)?.trim_end().to_string());
            }
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut errors = 0;
    for (item, (p, e)) in products.iter().zip(model.estimate_all(&products)?).enumerate() {
        let truth = p.price.unwrap_or(0.0);
        match e {
            Ok(e) => {
                tally.kept += 1;
                let row = Row { item, title: p.title.clone(), estimate: e.price, truth, low: e.low, high: e.high };
                if print_rows {
                    print_row(rows.len() + 1, &row, color);
                }
                rows.push(row);
            }
            Err(err) => {
                eprintln!("{}: {:?}: {err}; skipped", data.display(), p.title);
                tally.drop("no estimate");
                errors += 1;
            }
        }
    }
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.estimate, r.truth)).collect();
    let Some(s) = Summary::of(&pairs) else {
        if errors > 0 {
            bail!("no estimate for any of the {errors} priced items in {} (the reasons are above)", data.display());
        }
        bail!("no priced items in {} ({})", data.display(), tally.summary());
    };
    if print_rows && tally.dropped.values().sum::<u64>() > 0 {
        println!("({})", tally.summary());
    }
    Ok(Evaluated { rows, summary: s, errors })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(errors: &[f64]) -> Vec<Row> {
        errors
            .iter()
            .enumerate()
            .map(|(item, e)| Row { item, title: String::new(), estimate: 100.0 + e, truth: 100.0, low: 0.0, high: 0.0 })
            .collect()
    }

    #[test]
    fn paired_difference_pairs_items_and_its_interval_says_when_models_differ() {
        let a = rows(&(0..200).map(|i| (i % 17) as f64 * 3.0).collect::<Vec<_>>());
        let same = paired_mae_difference(&a, &a, 500, 1).unwrap();
        assert_eq!((same.mean, same.low, same.high, same.n), (0.0, 0.0, 0.0, 200));
        // Every error $1 smaller (signs kept): exactly -1.
        let better = rows(&(0..200).map(|i| ((i % 17) as f64 * 3.0 - 1.0).max(0.0)).collect::<Vec<_>>());
        let d = paired_mae_difference(&a, &better, 500, 1).unwrap();
        assert!(d.mean < 0.0 && d.high < 0.0, "{d:?}");
        // Noise around the same errors: the interval holds 0; a consistent gain of $5 with the same noise: not.
        let noise = |i: usize| ((i * 7919) % 11) as f64 - 5.0;
        let noisy = rows(&(0..200).map(|i| (i % 17) as f64 * 3.0 + 10.0 + noise(i)).collect::<Vec<_>>());
        let base = rows(&(0..200).map(|i| (i % 17) as f64 * 3.0 + 10.0).collect::<Vec<_>>());
        let tie = paired_mae_difference(&base, &noisy, 2000, 1).unwrap();
        assert!(tie.low < 0.0 && tie.high > 0.0, "{tie:?}");
        let gain = rows(&(0..200).map(|i| (i % 17) as f64 * 3.0 + 5.0 + noise(i)).collect::<Vec<_>>());
        let g = paired_mae_difference(&base, &gain, 2000, 1).unwrap();
        assert!(g.high < 0.0 && (g.mean + 5.0).abs() < 1.0, "{g:?}");
        // Only items both estimated are paired; none in common is no answer.
        let some: Vec<Row> = better.into_iter().filter(|r| r.item % 2 == 0).collect();
        assert_eq!(paired_mae_difference(&a, &some, 100, 1).unwrap().n, 100);
        assert!(paired_mae_difference(&a, &[], 100, 1).is_none());
    }
}
