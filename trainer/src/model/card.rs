//! What every model file carries after its weights: the likely range and
//! validation figures, provenance, and the test metrics of the card.

use crate::data::{DataSet, Split, sha256_files};
use anyhow::{Result, bail};
use pricer::estimator::keys;
use pricer::metrics::{Summary, coverage_pct};
use pricer::model_file::ModelWriter;
use pricer::{Estimator, Product};

/// Prints what was written and its test metrics.
pub fn report_written(out: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let est = Estimator::from_bytes(bytes)?;
    println!("wrote {} ({:.1} MiB)", out.display(), bytes.len() as f64 / (1 << 20) as f64);
    for split in keys::test_splits(&est.file) {
        let f = |k: &str| est.file.f64(&keys::test_key(&split, k)).unwrap_or(f64::NAN);
        println!(
            "test{}: n {} | MAE ${:.2} | RMSLE {:.3} | hits {:.1}% | range coverage {:.1}%",
            if split.is_empty() { String::new() } else { format!(" {split}") },
            f("n"),
            f("mae"),
            f("rmsle"),
            f("hits_pct"),
            f("coverage_pct"),
        );
    }
    Ok(())
}

/// The likely range (10% and 90% quantiles of the log residuals) and the
/// summary of a model's estimates on validation items: what its file says
/// of validation.
pub struct ValidationFit {
    range: (f64, f64),
    summary: Option<Summary>,
}

impl ValidationFit {
    /// Measures the model in `w` (weights and preparation already there) on
    /// `validation`.
    pub fn of(w: &mut ModelWriter, validation: &[Product]) -> Result<Self> {
        if validation.is_empty() {
            bail!("no validation items: the likely range is fitted on them");
        }
        // Provisional range so the file loads.
        w.set_f64(keys::RANGE_LOW, 0.0).set_f64(keys::RANGE_HIGH, 0.0);
        let est = Estimator::from_bytes(&w.to_bytes()?)?;
        let val: Vec<(f64, f64)> = validation
            .iter()
            .zip(est.estimate_batch(validation))
            .map(|(p, e)| Ok((e?.price, p.price.unwrap_or(0.0))))
            .collect::<Result<_>>()?;
        let mut residuals: Vec<f64> = val.iter().map(|(e, t)| t.ln_1p() - e.max(0.0).ln_1p()).collect();
        let range = (quantile(&mut residuals, 0.1), quantile(&mut residuals, 0.9));
        Ok(Self { range, summary: Summary::of(&val) })
    }
}

/// Adds what every model file carries after its weights: the likely range
/// (from validation residuals), provenance, and metrics on the test split.
/// Needs the weights and preparation already in `w`.
pub fn finish(w: &mut ModelWriter, ds: &DataSet, seed: u64) -> Result<()> {
    let fit = ValidationFit::of(w, &ds.validation)?;
    finish_with(w, ds, seed, &fit)
}

/// [`finish`] with the range and validation figures measured on another
/// model (the same one before it saw the validation items).
pub fn finish_with(w: &mut ModelWriter, ds: &DataSet, seed: u64, fit: &ValidationFit) -> Result<()> {
    w.set_f64(keys::RANGE_LOW, fit.range.0).set_f64(keys::RANGE_HIGH, fit.range.1);
    if let Some(s) = &fit.summary {
        w.set_f64(keys::VALIDATION_MAE, s.mae).set_f64(keys::VALIDATION_RMSLE, s.rmsle);
    }
    let argv: Vec<String> = std::env::args().collect();
    w.set_str(keys::DATA_SHA256, &sha256_files(&ds.sources)?)
        .set_str(keys::DATA_SET, &ds.name)
        // File names only: the card must not show the training machine's paths.
        .set_str(
            keys::DATA_FILES,
            &ds.sources
                .iter()
                .map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set_u32(keys::SEED, seed as u32)
        .set_str(keys::COMMAND, &argv.join(" "))
        .set_str(keys::DATE, &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .set_str(keys::VERSION, env!("CARGO_PKG_VERSION"))
        .set_f64(keys::TRAIN_ITEMS, ds.train.len() as f64);
    let est = Estimator::from_bytes(&w.to_bytes()?)?;
    write_test_metrics(w, &est, &ds.tests)
}

/// The model card's test metrics (each split's summary, coverage, and its
/// estimates for the scatter) of `est` on `tests`, written into `w`.
pub fn write_test_metrics(w: &mut ModelWriter, est: &Estimator, tests: &[Split]) -> Result<()> {
    let mut names = Vec::new();
    for split in tests {
        let estimates = est.estimate_batch(&split.products);
        let mut pairs = Vec::new();
        let mut ranges = Vec::new();
        for (p, e) in split.products.iter().zip(estimates) {
            let e = e?;
            let t = p.price.unwrap_or(0.0);
            pairs.push((e.price, t));
            ranges.push((e.low, e.high, t));
        }
        let Some(s) = Summary::of(&pairs) else { continue };
        let key = |k: &str| keys::test_key(&split.name, k);
        w.set_f64(&key("n"), s.n as f64)
            .set_f64(&key("mae"), s.mae)
            .set_f64(&key("rmsle"), s.rmsle)
            .set_f64(&key("hits_pct"), s.hits_pct)
            .set_f64(&key("median_abs_error"), s.median_abs_error)
            .set_f64(&key("coverage_pct"), coverage_pct(&ranges));
        let (est_v, truth_v): (Vec<f32>, Vec<f32>) = pairs.iter().map(|(e, t)| (*e as f32, *t as f32)).unzip();
        w.set_f32s(&key("estimate"), &est_v).set_f32s(&key("truth"), &truth_v);
        names.push(split.name.clone());
    }
    if !names.is_empty() {
        w.set_strs(keys::TEST_SPLITS, &names);
    }
    Ok(())
}

/// The q-quantile (linear interpolation) of `xs`.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let pos = q * (xs.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    if i + 1 < xs.len() { xs[i] * (1.0 - frac) + xs[i + 1] * frac } else { xs[i] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0, 5.0], 0.5), 3.0);
        assert!((quantile(&mut [0.0, 10.0], 0.1) - 1.0).abs() < 1e-12);
    }
}
