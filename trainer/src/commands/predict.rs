//! `pricer predict`: estimates for products given as text or JSONL on stdin.

use crate::chat::ChatArgs;
use crate::tester::PriceSource;
use anyhow::{Result, bail};
use pricer::Estimator;
use pricer::estimator::Predictor;
use pricer::explain::{ExplainOptions, Explanation, TOP_WORDS};
use pricer::readers::{Format, NumberedRecord, Prices, read_numbered_products_as};
use pricer::{Estimate, Product};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// A model file (.gguf), or `chat:MODEL` (a chat model behind an
    /// OpenAI-compatible endpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// A product as text: title on the first line, then its description.
    /// Without it, products are read as JSON Lines from stdin.
    pub text: Option<String>,
    /// Also say why: the typical price, the words and details that raised
    /// or lowered the estimate, and comparable training items.
    #[arg(long)]
    pub explain: bool,
    /// List the K training items nearest to each product, with their prices
    /// (models with a neighbour index; 5 with --explain unless given).
    #[arg(long, value_name = "K")]
    pub neighbours: Option<usize>,
    /// With --explain: how many of the most influential words are taken out
    /// of the text one at a time to measure the encoder's share (one encoder
    /// pass each).
    #[arg(long, default_value_t = ExplainOptions::default().occlude, value_name = "N")]
    pub occlude: usize,
    #[command(flatten)]
    pub chat: ChatArgs,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let mut model = PriceSource::open(&args.model, &args.chat)?;
    if args.explain || args.neighbours.is_some() {
        let PriceSource::File(est) = &model else {
            bail!("--explain and --neighbours need a model file: a chat model gives no reasons to show");
        };
        let opts = ExplainOptions {
            comparables: args.neighbours.unwrap_or(5),
            occlude: if args.explain { args.occlude } else { 0 },
        };
        return explain_all(est, args, opts);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(text) = &args.text {
        let answer = model.estimate_all(&[Product::from_free_text(text)])?.remove(0);
        let ok = answer.is_ok();
        writeln!(out, "{}", answer_json(None, answer))?;
        if !ok {
            std::process::exit(1);
        }
        return Ok(());
    }
    // Products in batches: a file model answers line by line as they come;
    // a chat model gets the whole input at once, asked concurrently.
    let batch = if matches!(model, PriceSource::Chat(_)) { usize::MAX } else { 1 };
    let mut pending: Vec<(u64, Result<Product, String>)> = Vec::new();
    let (mut lines, mut priced) = (0usize, 0usize);
    let mut flush = |pending: &mut Vec<(u64, Result<Product, String>)>, out: &mut dyn Write| -> Result<()> {
        let products: Vec<Product> = pending.iter().filter_map(|(_, p)| p.as_ref().ok().cloned()).collect();
        let mut answers = model.estimate_all(&products)?.into_iter();
        for (line, p) in pending.drain(..) {
            let answer = match p {
                Ok(_) => answers.next().unwrap_or_else(|| Err("no estimate".into())),
                Err(e) => Err(e),
            };
            lines += 1;
            priced += usize::from(answer.is_ok());
            writeln!(out, "{}", answer_json(Some(line), answer))?;
        }
        Ok(())
    };
    for (n, record) in stdin_records()? {
        pending.push((n, record.map_err(|e| e.reason)));
        if pending.len() >= batch {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)?;
    if lines > 0 && priced == 0 {
        bail!("no line gave a price ({lines} read; each line's error is above)");
    }
    Ok(())
}

/// `predict --explain` / `--neighbours`: one JSON line per product.
fn explain_all(est: &Estimator, args: &PredictArgs, opts: ExplainOptions) -> Result<()> {
    if opts.comparables > 0 && !has_comparables(est) {
        bail!("{} has no titled neighbour index to list comparables from (export with --knn K)", args.model.display());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let one = |line: Option<u64>, p: Result<Product, String>, out: &mut dyn Write| -> Result<bool> {
        let answer = p.and_then(|p| est.explain(&p, opts).map_err(|e| e.to_string()));
        let ok = answer.is_ok();
        let mut obj = match answer {
            Ok(x) => explanation_json(&x, args.explain),
            Err(err) => serde_json::json!({"error": err}),
        };
        if let Some(n) = line {
            obj["line"] = n.into();
        }
        writeln!(out, "{obj}")?;
        Ok(ok)
    };
    if let Some(text) = &args.text {
        if !one(None, Ok(Product::from_free_text(text)), &mut out)? {
            std::process::exit(1);
        }
        return Ok(());
    }
    let (mut lines, mut priced) = (0usize, 0usize);
    for (n, record) in stdin_records()? {
        let ok = one(Some(n), record.map_err(|e| e.reason), &mut out)?;
        lines += 1;
        priced += usize::from(ok);
    }
    if lines > 0 && priced == 0 {
        bail!("no line gave a price ({lines} read; each line's error is above)");
    }
    Ok(())
}

/// The products on stdin, one JSON line each (gzip too), with their lines.
/// Through shared's reader, so a line too long to be a product is that
/// line's error, skipped without being held, and the next line is read.
fn stdin_records() -> Result<Box<dyn Iterator<Item = NumberedRecord>>> {
    Ok(read_numbered_products_as(std::io::stdin(), Format::Jsonl, Prices::DecimalPoint)?)
}

fn has_comparables(est: &Estimator) -> bool {
    let titled = |k: Option<&pricer::knn::Knn>| k.is_some_and(|k| k.labels.is_some());
    matches!(&est.predictor, Predictor::Stack(s) if titled(s.knn.as_ref()) || titled(s.own.as_deref()))
}

/// An explanation as the page shows it: the estimate, then (with `reasons`)
/// the first estimate (words and details alone, where the model has one), the typical price, the words that raised and lowered it most, the details
/// and the rest, then the comparables.
pub fn explanation_json(x: &Explanation, reasons: bool) -> serde_json::Value {
    let e = &x.estimate;
    let mut obj = serde_json::json!({"price": round2(e.price), "low": round2(e.low), "high": round2(e.high)});
    let part = |a: &pricer::explain::Attribution| {
        serde_json::json!({"label": a.label, "weight": round4(a.weight), "encoder": round4(a.encoder),
                           "percent": round2(100.0 * a.weight.exp_m1())})
    };
    if reasons {
        if let Some(first) = x.first {
            obj["first"] = round2(first).into();
        }
        obj["typical"] = round2(x.typical).into();
        obj["words"] = x.top_words(TOP_WORDS).into_iter().map(part).collect();
        obj["details"] = x.details.iter().map(part).collect();
        obj["rest"] = round4(x.rest).into();
    }
    obj["comparables"] = x
        .comparables
        .iter()
        .map(|c| {
            let mut c_json = serde_json::json!({"title": c.title, "category": c.category, "price": round2(c.price),
                               "similarity": round4(c.similarity as f64)});
            if c.yours {
                c_json["yours"] = true.into();
            }
            c_json
        })
        .collect();
    obj
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn answer_json(line: Option<u64>, answer: Result<Estimate, String>) -> serde_json::Value {
    let mut obj = match answer {
        Ok(e) => serde_json::json!({"price": round2(e.price), "low": round2(e.low), "high": round2(e.high)}),
        Err(err) => serde_json::json!({"error": err}),
    };
    if let Some(n) = line {
        obj["line"] = n.into();
    }
    obj
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
