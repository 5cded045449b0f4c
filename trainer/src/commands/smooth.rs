//! `pricer lab smooth`: the int8 kernels' per-channel input smoothing,
//! calibrated on products' texts in f32, added to (or taken out of) a file.

use crate::data::{priced_products, spread, write_atomic};
use crate::model::calibrate::{Gap, Side, calibrate, f32_twin};
use crate::model::load_model;
use anyhow::{Result, bail};
use pricer::Estimator;
use pricer::estimator::keys::{SMOOTH_ALPHA, SMOOTH_TEXTS};
use pricer::model_file::ModelWriter;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SmoothArgs {
    /// A model file with 8-bit (Q8_0) encoder weights.
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration products (a validation split: their texts, prices unused).
    #[arg(long)]
    pub data: PathBuf,
    /// The model file to write: the same weights with smoothing factors added.
    #[arg(long)]
    pub out: PathBuf,
    /// Migration strength: 0 leaves the inputs as they are, 1 moves all of a
    /// channel's range into the weights.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Calibrate on at most this many products (spread evenly over the file).
    #[arg(long, default_value_t = 512)]
    pub limit: usize,
    /// Take the smoothing out instead (the kernels then quantize inputs as they come).
    #[arg(long)]
    pub remove: bool,
}

pub fn run(args: &SmoothArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha {}: must lie in 0..=1", args.alpha);
    }
    let int8 = load_model(&args.model)?;
    let f32 = f32_twin(&int8, &args.model)?;
    let items = spread(&priced_products(&args.data, false)?.0, args.limit);
    if items.is_empty() {
        bail!("{}: no priced product to calibrate on", args.data.display());
    }
    // The file without any smoothing, then (unless removing it) the new factors.
    let mut w = ModelWriter::new(int8.file.kind()?);
    for (k, v) in &int8.file.metadata {
        if k != pricer::model_file::keys::CRC && k != SMOOTH_ALPHA && k != SMOOTH_TEXTS {
            w.set(k, v.clone());
        }
    }
    for (name, t) in &int8.file.tensors {
        if !name.ends_with(pricer::bert::SMOOTHING_SUFFIX) {
            w.add_tensor(name, pricer::model_file::copy_tensor(t)?);
        }
    }
    let factors = if args.remove { Vec::new() } else { calibrate(&f32, &items, args.alpha)? };
    for (name, s) in &factors {
        w.add_f32(&pricer::bert::smoothing_name(name), s)?;
    }
    if !args.remove {
        w.set_f64(SMOOTH_ALPHA, args.alpha).set_u32(SMOOTH_TEXTS, items.len() as u32);
    }
    let bytes = w.to_bytes()?;
    let smoothed = Estimator::from_bytes(&bytes)?;
    let reference = Side::of(&f32, &items)?.prices;
    println!(
        "{} calibration products, {}: 8-bit vs f32 before {}; after {}",
        items.len(),
        if args.remove { "smoothing removed".to_string() } else { format!("alpha {}", args.alpha) },
        Gap::between(&Side::of(&int8, &items)?.prices, &reference),
        Gap::between(&Side::of(&smoothed, &items)?.prices, &reference)
    );
    write_atomic(&args.out, &bytes)?;
    println!("wrote {} ({} linear layers smoothed)", args.out.display(), factors.len());
    Ok(())
}
