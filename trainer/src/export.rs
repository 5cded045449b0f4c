//! `pricer export`: a training run's best weights into one self-describing
//! model file, quantized, optionally blended with a linear model.

use crate::data::{load_data_set, write_atomic};
use crate::finetune::{BEST, read_run_file};
use crate::train::{finish, report_written};
use anyhow::{Context, Result, bail};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use pricer::baselines::LinearModel;
use pricer::bert::QUANTILES;
use pricer::estimator::{Prep, keys};
use pricer::model_file::{ModelFile, ModelWriter};
use pricer::{Estimator, Product};
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// 8-bit blocks (GGML Q8_0) for matrices: about a quarter of f32's size.
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// A `pricer train --kind minilm` run directory.
    pub run: PathBuf,
    #[arg(long, value_enum, default_value = "q8_0")]
    pub quant: Quant,
    /// The model file to write (.gguf).
    #[arg(long)]
    pub out: PathBuf,
    /// Blend with this linear model file (e.g. tfidf-ridge) into one ensemble
    /// file; blend weights are fitted on the run's validation split.
    #[arg(long)]
    pub ensemble_with: Option<PathBuf>,
}

/// Which storage type a tensor gets: matrices are quantized when their rows
/// split into whole blocks; vectors (biases, norms) stay f32.
fn storage_type(t: &Tensor, quant: Quant) -> GgmlDType {
    match (quant, t.rank()) {
        (_, r) if r < 2 => GgmlDType::F32,
        (Quant::F32, _) => GgmlDType::F32,
        (Quant::F16, _) => GgmlDType::F16,
        (Quant::Q8_0, _) => {
            let cols = t.dims()[t.rank() - 1];
            if cols.is_multiple_of(GgmlDType::Q8_0.block_size()) { GgmlDType::Q8_0 } else { GgmlDType::F16 }
        }
    }
}

/// Builds the model file bytes for a run (no test metrics yet).
pub fn model_bytes(run_dir: &Path, quant: Quant, linear: Option<(&LinearModel, [f64; 3])>) -> Result<Vec<u8>> {
    let run = read_run_file(run_dir)?;
    let best = run_dir.join(BEST);
    let weights = candle_core::safetensors::load(&best, &Device::Cpu)
        .with_context(|| format!("cannot load {} (has an epoch finished?)", best.display()))?;
    let tok_json = std::fs::read_to_string(run_dir.join("tokenizer.json")).context("run has no tokenizer.json")?;
    let mut w = ModelWriter::new(if linear.is_some() { "ensemble" } else { "minilm" });
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for name in names {
        let t = weights[name].to_dtype(DType::F32)?;
        w.add_tensor(name, QTensor::quantize(&t, storage_type(&t, quant))?);
    }
    w.set_str(keys::BERT_CONFIG, &serde_json::to_string(&run.bert)?)
        .set_f64(keys::TARGET_MEAN, run.state.target_mean)
        .set_f64(keys::TARGET_STD, run.state.target_std)
        .set_f32s(keys::QUANTILES, &QUANTILES.map(|q| q as f32))
        .set_str("pricer.quant", &format!("{quant:?}").to_lowercase())
        .set_str("pricer.provenance.train_command", &run.config.command)
        .set_str("pricer.provenance.base", &run.config.base.display().to_string())
        .set_f64("pricer.train.best_epoch", run.state.best_epoch.unwrap_or(0) as f64)
        .set_f64("pricer.train.best_val_mae", run.state.best_val_mae.unwrap_or(f64::NAN));
    Prep { max_tokens: run.config.max_tokens, tokenizer: Some(pricer::TextTokenizer::from_json(&tok_json)?) }
        .write(&mut w);
    if let Some((lin, weights)) = linear {
        lin.write(&mut w)?;
        w.set_f32s(keys::ENSEMBLE_WEIGHTS, &weights.map(|x| x as f32));
    }
    Ok(w.to_bytes()?)
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let run = read_run_file(&args.run)?;
    let ds = load_data_set(&run.config.data, run.config.holdout, run.config.seed, false)?;
    let linear = match &args.ensemble_with {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let file = ModelFile::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))?;
            let lin = LinearModel::read(&file).with_context(|| format!("{} is not a linear model", path.display()))?;
            let neural = Estimator::from_bytes(&model_bytes(&args.run, args.quant, None)?)?;
            let weights = fit_blend(&neural, &lin, &ds.validation)?;
            println!(
                "blend in log space: {:.3} x encoder + {:.3} x linear + {:.3}",
                weights[0], weights[1], weights[2]
            );
            Some((lin, weights))
        }
    };
    let mut w_bytes = model_bytes(&args.run, args.quant, linear.as_ref().map(|(l, w)| (l, *w)))?;
    // Provenance, range and test metrics come from the exported file itself.
    let file = ModelFile::from_bytes(&w_bytes)?;
    let mut w = rewriter(&file)?;
    finish(&mut w, &ds, run.config.seed)?;
    w_bytes = w.to_bytes()?;
    if args.quant != Quant::F32 && !ds.test.is_empty() {
        let exact = Estimator::from_bytes(&model_bytes(&args.run, Quant::F32, linear.as_ref().map(|(l, w)| (l, *w)))?)?;
        let quant = Estimator::from_bytes(&w_bytes)?;
        let (mean, max) = relative_difference(&exact, &quant, &ds.test)?;
        println!(
            "{:?} vs f32 estimates on the test split: mean {:.3}%, max {:.3}%",
            args.quant,
            100.0 * mean,
            100.0 * max
        );
        let mut w = rewriter(&ModelFile::from_bytes(&w_bytes)?)?;
        w.set_f64("pricer.quant.mean_rel_diff_vs_f32", mean).set_f64("pricer.quant.max_rel_diff_vs_f32", max);
        w_bytes = w.to_bytes()?;
    }
    write_atomic(&args.out, &w_bytes)?;
    report_written(&args.out, &w_bytes)
}

/// A writer holding everything a model file holds, to amend and write again.
fn rewriter(file: &ModelFile) -> Result<ModelWriter> {
    let mut w = ModelWriter::new(file.kind()?);
    for (k, v) in &file.metadata {
        if k != pricer::model_file::keys::CRC {
            w.set(k, v.clone());
        }
    }
    for (name, t) in &file.tensors {
        let copy = candle_core::quantized::ggml_file::qtensor_from_ggml(
            t.dtype(),
            &t.data()?,
            t.shape().dims().to_vec(),
            &Device::Cpu,
        )?;
        w.add_tensor(name, copy);
    }
    Ok(w)
}

/// Least squares of log(1 + truth) on the encoder's and the linear model's log estimates.
fn fit_blend(neural: &Estimator, lin: &LinearModel, val: &[Product]) -> Result<[f64; 3]> {
    let est = neural.estimate_batch(val);
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for (p, e) in val.iter().zip(est) {
        let e = e?;
        let text = pricer::text::model_input(p, neural.prep.budget())?;
        rows.push(vec![(0u32, e.price.ln_1p() as f32), (1u32, lin.price(p, &text).ln_1p() as f32)]);
        y.push(p.price.unwrap_or(0.0).ln_1p());
    }
    if rows.len() < 3 {
        bail!("too few validation items to fit blend weights");
    }
    let (w, b) = crate::fit::ridge(&rows, 2, &y, 1e-6);
    Ok([w[0], w[1], b])
}

/// Mean and largest |a - b| / a between two models' estimates.
fn relative_difference(a: &Estimator, b: &Estimator, items: &[Product]) -> Result<(f64, f64)> {
    let (mut sum, mut max) = (0.0, 0.0f64);
    for (x, y) in a.estimate_batch(items).into_iter().zip(b.estimate_batch(items)) {
        let (x, y) = (x?.price, y?.price);
        let d = (x - y).abs() / x.abs().max(1e-9);
        sum += d;
        max = max.max(d);
    }
    Ok((sum / items.len().max(1) as f64, max))
}
