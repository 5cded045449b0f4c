//! `pricer quant-error`: how far a file's 8-bit inference (integer kernels,
//! as the browser runs it) is from f32 inference of the same weights.

use crate::eval::{load_model, priced_products};
use anyhow::{Result, bail};
use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor};
use pricer::Estimator;
use pricer::model_file::ModelWriter;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct QuantErrorArgs {
    /// A model file with 8-bit (Q8_0) encoder weights.
    #[arg(long)]
    pub model: PathBuf,
    /// Products to estimate both ways (priced items of a data file).
    #[arg(long)]
    pub data: PathBuf,
    /// At most this many products.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(args: &QuantErrorArgs) -> Result<()> {
    let int8 = load_model(&args.model)?;
    // The same file with every Q8_0 tensor dequantized to F32: the encoder
    // then multiplies in f32 (candle), the rest is unchanged.
    let mut w = ModelWriter::from_file(&int8.file)?;
    let mut converted = 0;
    for (name, t) in &int8.file.tensors {
        if t.dtype() == GgmlDType::Q8_0 {
            w.add_tensor(name, QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::F32)?);
            converted += 1;
        }
    }
    if converted == 0 {
        bail!("{} holds no 8-bit tensors", args.model.display());
    }
    let f32 = Estimator::from_bytes(&w.to_bytes()?)?;
    let mut items = priced_products(&args.data)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    let (mut sum, mut max, mut n) = (0.0, 0.0f64, 0usize);
    let mut diffs = Vec::new();
    for (a, b) in int8.estimate_batch(&items).into_iter().zip(f32.estimate_batch(&items)) {
        let (a, b) = (a?.price, b?.price);
        let d = (a - b).abs() / b.abs().max(1e-9);
        sum += d;
        max = max.max(d);
        n += 1;
        diffs.push(d);
    }
    diffs.sort_by(f64::total_cmp);
    let p99 = diffs.get(((n as f64 - 1.0) * 0.99).round() as usize).copied().unwrap_or(f64::NAN);
    println!(
        "{} products: 8-bit kernels vs f32 on the same weights: mean {:.3}%, p99 {:.3}%, max {:.3}%",
        n,
        100.0 * sum / n.max(1) as f64,
        100.0 * p99,
        100.0 * max
    );
    Ok(())
}
