//! 8-bit inference against f32 compute of the same weights: each side's
//! estimates, the gap between them, the f32 twin of a file, and the int8
//! kernels' input smoothing (SmoothQuant) calibrated on products' texts.

use anyhow::{Context, Result, bail};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pricer::estimator::MemberValues;
use pricer::model_file::ModelWriter;
use pricer::{Estimator, Product};
use std::collections::BTreeMap;
use std::path::Path;

/// One side's member values and estimated price of each product.
pub struct Side {
    pub values: Vec<MemberValues>,
    pub prices: Vec<f64>,
}

impl Side {
    pub fn of(model: &Estimator, items: &[Product]) -> Result<Side> {
        let values = model.member_values(items).into_iter().collect::<Result<Vec<_>, _>>()?;
        let prices = items
            .iter()
            .zip(&values)
            .map(|(p, v)| Ok(model.estimate_from(p, v.clone())?.price))
            .collect::<Result<Vec<f64>>>()?;
        Ok(Side { values, prices })
    }
}

/// The same model with every Q8_0 tensor dequantized to F32: the encoder
/// then multiplies in f32 (candle), the rest is unchanged.
pub fn f32_twin(int8: &Estimator, path: &Path) -> Result<Estimator> {
    let mut w = ModelWriter::from_file(&int8.file)?;
    let mut converted = 0;
    for (name, t) in &int8.file.tensors {
        if t.dtype() == GgmlDType::Q8_0 {
            w.add_tensor(name, QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::F32)?);
            converted += 1;
        }
    }
    if converted == 0 {
        bail!("{} holds no 8-bit tensors", path.display());
    }
    Ok(Estimator::from_bytes(&w.to_bytes()?)?)
}

/// The model with its neighbour index's vectors computed by its own encoder
/// from `items`, which must be the items the index holds (same count, same
/// prices, in order). Stored as export stores them.
pub fn with_index_of(model: Estimator, items: &[Product]) -> Result<Estimator> {
    let old = pricer::knn::Knn::read(&model.file)?;
    if old.len() != items.len() {
        bail!("{} items, but the neighbour index holds {}", items.len(), old.len());
    }
    if let Some(i) = (0..items.len()).find(|&i| {
        ((items[i].price.unwrap_or(0.0).ln_1p() as f32) - old.log_price(i)).abs()
            > 1e-4 * (1.0 + old.log_price(i).abs())
    }) {
        bail!(
            "item {} is priced {:?}, the index's item {} ${:.2}: not the items it was built from",
            i + 1,
            items[i].price,
            i + 1,
            old.price(i)
        );
    }
    let (vectors, dim) = pooled_vectors(&model, items)?;
    let log_prices = (0..old.len()).map(|i| old.log_price(i)).collect();
    let mut knn = pricer::knn::Knn::new(&vectors, log_prices, dim, old.k, old.temperature)?.with_vote(old.vote);
    knn.labels = old.labels;
    let mut w = ModelWriter::from_file(&model.file)?;
    knn.write(&mut w)?;
    Ok(Estimator::from_bytes(&w.to_bytes()?)?)
}

/// Relative price differences of the 8-bit kernels from f32 compute.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub mean: f64,
    pub p99: f64,
    pub max: f64,
}

impl Gap {
    /// The gap of `prices` from `reference`, item by item.
    pub fn between(prices: &[f64], reference: &[f64]) -> Gap {
        let mut diffs: Vec<f64> = prices.iter().zip(reference).map(|(a, b)| relative(*a, *b)).collect();
        diffs.sort_by(f64::total_cmp);
        let n = diffs.len();
        let at = |q: f64| diffs.get(((n as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
        Gap { mean: diffs.iter().sum::<f64>() / n.max(1) as f64, p99: at(0.99), max: at(1.0) }
    }
}

/// `|price - reference|` relative to the reference.
pub fn relative(price: f64, reference: f64) -> f64 {
    (price - reference).abs() / reference.abs().max(1e-9)
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mean {:.3}%, p99 {:.3}%, max {:.3}%", 100.0 * self.mean, 100.0 * self.p99, 100.0 * self.max)
    }
}

/// Per linear layer of the encoder, the factor of each input channel
/// (SmoothQuant): `peak(x_j)^alpha / peak(W_.j)^(1 - alpha)`, the input peaks
/// over the products' tokens in f32 compute, the weight peaks over every
/// output (query, key and value together: they share one quantized input).
pub fn calibrate(f32: &Estimator, items: &[Product], alpha: f64) -> Result<Vec<(String, Vec<f32>)>> {
    let n = f32.neural().ok_or_else(|| anyhow::anyhow!("the model has no encoder to smooth"))?;
    let tok = f32.prep.tokenizer.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no tokenizer"))?;
    let max_len = (f32.prep.max_tokens + 2).min(n.model.encoder.config.max_position_embeddings);
    let mut peaks: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for p in items {
        let Ok(text) = f32.prepare(p) else { continue };
        let t = tok.encode(&text.text, max_len)?;
        let ids = Tensor::new(t.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        for (name, v) in n.model.encoder.linear_input_peaks(&ids)? {
            let e = peaks.entry(name).or_insert_with(|| vec![0.0; v.len()]);
            e.iter_mut().zip(&v).for_each(|(a, b)| *a = a.max(*b));
        }
    }
    // Weight peaks per input channel, pooled over layers that share an input.
    let shared =
        |name: &str| name.rsplit_once('.').filter(|(p, _)| p.ends_with("attention.self")).map(|(p, _)| p.to_string());
    let mut weight_peaks: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for name in peaks.keys() {
        let w = f32.file.tensor(&format!("{name}.weight"))?;
        let (_, d_in) = w.shape().dims2()?;
        let w = w.dequantize(&Device::Cpu)?.abs()?.max(0)?.to_vec1::<f32>()?;
        let key = shared(name).unwrap_or_else(|| name.clone());
        let e = weight_peaks.entry(key).or_insert_with(|| vec![0.0; d_in]);
        e.iter_mut().zip(&w).for_each(|(a, b)| *a = a.max(*b));
    }
    Ok(peaks
        .into_iter()
        .map(|(name, x)| {
            let w = &weight_peaks[&shared(&name).unwrap_or_else(|| name.clone())];
            let s = x
                .iter()
                .zip(w)
                .map(|(&x, &w)| {
                    if x > 0.0 && w > 0.0 {
                        ((x as f64).powf(alpha) / (w as f64).powf(1.0 - alpha)).clamp(1e-3, 1e3) as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            (name, s)
        })
        .collect())
}

/// The model's pooled encoder vector of each product (rows of `dim`, in
/// order), with a progress bar: what a neighbour index holds.
pub fn pooled_vectors(model: &Estimator, products: &[Product]) -> Result<(Vec<f32>, usize)> {
    let bar = indicatif::ProgressBar::new(products.len() as u64);
    let mut vectors = Vec::new();
    let mut dim = 0;
    for chunk in products.chunks(256) {
        for v in model.member_values(chunk) {
            let pooled = v?.pooled.context("the model's encoder gave no pooled vector")?;
            dim = pooled.len();
            vectors.extend(pooled);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((vectors, dim))
}
