//! The Tester: a price source (a model file or a chat model) run over items
//! with known prices, each estimate graded, then the summary; and the paired
//! comparison of two sources on the same items.

use crate::chat::{ChatArgs, ChatPricer};
use crate::data::{Tally, for_each_product_as};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::metrics::{Grade, Summary};
use pricer::{Estimate, Estimator, Product};
use std::io::IsTerminal;
use std::path::Path;

/// What `--model` names: a model file, or a chat model asked through the network.
pub enum PriceSource {
    File(Box<Estimator>),
    /// A model file's first estimates (`eval --first`).
    First(Box<Estimator>),
    Chat(Box<ChatPricer>),
}

impl PriceSource {
    /// `chat:MODEL` or a model file's path.
    pub fn open(spec: &Path, chat: &ChatArgs) -> Result<Self> {
        match spec.to_str().and_then(|s| s.strip_prefix("chat:")) {
            Some(model) => Ok(PriceSource::Chat(Box::new(ChatPricer::new(model, chat)?))),
            None => Ok(PriceSource::File(Box::new(crate::model::load_model(spec)?))),
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            PriceSource::File(e) | PriceSource::First(e) => &e.kind,
            PriceSource::Chat(_) => "chat",
        }
    }

    /// Every product's estimate, or why there is none. A chat model has no
    /// likely range: its range is its estimate.
    pub fn estimate_all(&mut self, products: &[Product]) -> Result<Vec<Result<Estimate, String>>> {
        Ok(match self {
            PriceSource::File(e) => {
                e.estimate_batch(products).into_iter().map(|r| r.map_err(|e| e.to_string())).collect()
            }
            PriceSource::First(e) => products
                .iter()
                .map(|p| match e.first_estimate(p) {
                    Ok(Some(price)) => Ok(Estimate { price, low: price, high: price }),
                    Ok(None) => Err("the model gives no first estimate".to_string()),
                    Err(e) => Err(e.to_string()),
                })
                .collect(),
            PriceSource::Chat(c) => c
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
pub fn warn_if_validation_seen(model: &PriceSource, name: &str, validation: bool) {
    let (PriceSource::File(est) | PriceSource::First(est)) = model else { return };
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

pub fn summary_json(e: &Evaluated, model: &str, split: Option<&str>) -> serde_json::Value {
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
pub struct Reading<'a> {
    pub limit: Option<usize>,
    pub strict: bool,
    /// How prices written as text mark decimals.
    pub prices: pricer::readers::Prices,
    /// Cut already prepared texts to this many tokens with this tokenizer.
    pub cut: Option<(&'a pricer::TextTokenizer, usize)>,
}

/// Estimates every priced item of one file, printing a row per item when asked.
pub fn evaluate(model: &mut PriceSource, data: &Path, read: Reading, print_rows: bool) -> Result<Evaluated> {
    let color = print_rows && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let limit = read.limit.unwrap_or(usize::MAX);
    let mut tally = Tally::default();
    let mut products = Vec::new();
    for_each_product_as(data, read.strict, read.prices, &mut tally, |p, t| {
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

pub fn write_report(dir: &std::path::Path, name: &str, rows: &[Row], s: &Summary) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.estimate, r.truth)).collect();
    let caption = format!("{name}: MAE ${:.2}, RMSLE {:.3}, hits {:.1}%", s.mae, s.rmsle, s.hits_pct);
    report::scatter(&dir.join("scatter.svg"), &caption, &pairs)?;
    let mut w = csv::Writer::from_path(dir.join("items.csv"))?;
    w.write_record(["title", "estimate", "truth", "error", "low", "high", "grade"])?;
    for r in rows {
        w.write_record([
            pricer::text::spreadsheet_safe(&r.title).into_owned(),
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
