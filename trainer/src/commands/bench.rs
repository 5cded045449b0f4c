//! `pricer bench`: training and inference speed of the encoder on synthetic
//! batches of a fixed shape, for comparing devices, builds and frameworks.

use crate::training::loss::price_loss;
use crate::training::optim::{AdamW, grad_norm};
use crate::training::run_folder::{device, load_base};
use anyhow::Result;
use candle_core::{DType, Tensor};
use pricer::bert::{Dropout, PriceModel, TrainableWeights};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The base model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub base: PathBuf,
    /// Sequence lengths to measure (tokens, special tokens included).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub seq: Vec<usize>,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub batch: Vec<usize>,
    /// Timed training steps per shape (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object per shape instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let dev = device(&args.device)?;
    let (cfg, pretrained, _) = load_base(&args.base)?;
    let varmap = candle_nn::VarMap::new();
    let model = PriceModel::load(&TrainableWeights::new(&varmap, pretrained, 0, &dev), &cfg)?;
    let vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = AdamW::new(vars, 0.01)?;
    if !args.json {
        println!(
            "{:>6} {:>6} {:>14} {:>14} {:>12} {:>12} {:>12}",
            "seq", "batch", "train ex/s", "forward ex/s", "fwd ms/step", "bwd ms/step", "opt ms/step"
        );
    }
    for &seq in &args.seq {
        for &batch in &args.batch {
            let ids = synthetic_ids(batch * seq, cfg.vocab_size);
            let ids = Tensor::from_vec(ids, (batch, seq), &dev)?;
            let mask = Tensor::ones((batch, seq), DType::U32, &dev)?;
            let y = Tensor::zeros(batch, DType::F32, &dev)?;
            // Seconds of each part of a step: forward with the loss, backward,
            // gradient norm and optimizer (each synchronised, so a GPU's queue
            // does not move time from one part to the next).
            let mut parts = [0f64; 3];
            let mut step = |n: u64, parts: &mut [f64; 3]| -> Result<()> {
                let t0 = Instant::now();
                let mut d = Dropout::new(0.1, n);
                let loss = price_loss(&model.forward(&ids, &mask, Some(&mut d))?, &y)?;
                dev.synchronize()?;
                let t1 = Instant::now();
                let grads = loss.backward()?;
                dev.synchronize()?;
                let t2 = Instant::now();
                let _ = grad_norm(&grads, &opt.vars)?;
                opt.step(&grads, 1e-5, 1.0)?;
                dev.synchronize()?;
                parts[0] += (t1 - t0).as_secs_f64();
                parts[1] += (t2 - t1).as_secs_f64();
                parts[2] += t2.elapsed().as_secs_f64();
                Ok(())
            };
            step(0, &mut [0f64; 3])?;
            let t = Instant::now();
            for n in 0..args.steps {
                step(n as u64 + 1, &mut parts)?;
            }
            let train = (args.steps * batch) as f64 / t.elapsed().as_secs_f64();
            let [fwd_ms, bwd_ms, opt_ms] = parts.map(|s| 1e3 * s / args.steps.max(1) as f64);
            let t = Instant::now();
            for _ in 0..args.steps {
                let _ = model.forward(&ids, &mask, None)?.to_device(&candle_core::Device::Cpu)?;
            }
            let fwd = (args.steps * batch) as f64 / t.elapsed().as_secs_f64();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"seq": seq, "batch": batch, "train_ex_s": train, "forward_ex_s": fwd,
                                       "step_forward_ms": fwd_ms, "step_backward_ms": bwd_ms,
                                       "step_optimizer_ms": opt_ms, "device": args.device})
                );
            } else {
                println!("{seq:>6} {batch:>6} {train:>14.1} {fwd:>14.1} {fwd_ms:>12.0} {bwd_ms:>12.0} {opt_ms:>12.0}");
            }
        }
    }
    Ok(())
}

/// Token ids of a synthetic batch: for a BERT-sized vocabulary the ids
/// scripts/bench_torch.py feeds PyTorch (1000 + i * 7919 mod 20000), for a
/// smaller one the same walk within its ids.
fn synthetic_ids(n: usize, vocab: usize) -> Vec<u32> {
    let (first, span) = if vocab >= 21_000 { (1000, 20_000) } else { (vocab.min(5), vocab.saturating_sub(5).max(1)) };
    (0..n).map(|i| (first + (i * 7919) % span) as u32).collect()
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckDeviceArgs {
    /// The base model folder.
    #[arg(long)]
    pub base: PathBuf,
    /// The device checked against the CPU.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Largest relative difference accepted (max |a - b| / max |a|).
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
}

/// Outputs, loss and named gradients of one training step, on the CPU.
type StepResult = (Tensor, Tensor, Vec<(String, Tensor)>);

/// The same batch through the same weights on the CPU and on `--device`:
/// outputs, loss and every gradient must agree within the tolerance.
pub fn check_device(args: &CheckDeviceArgs) -> Result<()> {
    let dev = device(&args.device)?;
    let (cfg, pretrained, _) = load_base(&args.base)?;
    let run = |d: &candle_core::Device| -> Result<StepResult> {
        let varmap = candle_nn::VarMap::new();
        let model = PriceModel::load(&TrainableWeights::new(&varmap, pretrained.clone(), 0, d), &cfg)?;
        let ids = synthetic_ids(args.batch * args.seq, cfg.vocab_size);
        let ids = Tensor::from_vec(ids, (args.batch, args.seq), d)?;
        // Ragged lengths, so padding and the attention mask are exercised too.
        let mask: Vec<u32> = (0..args.batch)
            .flat_map(|b| (0..args.seq).map(move |t| (t < args.seq - b * args.seq / (2 * args.batch)) as u32))
            .collect();
        let mask = Tensor::from_vec(mask, (args.batch, args.seq), d)?;
        let y = Tensor::from_vec(
            (0..args.batch).map(|i| i as f32 / args.batch as f32 - 0.5).collect::<Vec<_>>(),
            args.batch,
            d,
        )?;
        let mut drop = Dropout::new(0.1, 7);
        let out = model.forward(&ids, &mask, Some(&mut drop))?;
        let loss = price_loss(&out, &y)?;
        let grads = loss.backward()?;
        let mut g: Vec<(String, Tensor)> = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    grads
                        .get(v.as_tensor())
                        .ok_or_else(|| anyhow::anyhow!("{k}: no gradient"))?
                        .to_device(&candle_core::Device::Cpu)?,
                ))
            })
            .collect::<Result<_>>()?;
        g.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out.to_device(&candle_core::Device::Cpu)?, loss.to_device(&candle_core::Device::Cpu)?, g))
    };
    let (out_a, loss_a, grads_a) = run(&candle_core::Device::Cpu)?;
    let (out_b, loss_b, grads_b) = run(&dev)?;
    let rel = |a: &Tensor, b: &Tensor| -> Result<f64> {
        let scale = a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
        Ok(diff / scale.max(1e-12))
    };
    let mut worst = ("".to_string(), 0.0f64);
    let mut report = |name: &str, r: f64| {
        if r > worst.1 {
            worst = (name.to_string(), r);
        }
    };
    report("outputs", rel(&out_a, &out_b)?);
    report("loss", rel(&loss_a.reshape(1)?, &loss_b.reshape(1)?)?);
    for ((name, a), (_, b)) in grads_a.iter().zip(&grads_b) {
        report(&format!("grad {name}"), rel(a, b)?);
    }
    println!(
        "cpu vs {}: loss {:.6} vs {:.6}; {} gradients; largest relative difference {:.2e} ({})",
        args.device,
        loss_a.to_scalar::<f32>()?,
        loss_b.to_scalar::<f32>()?,
        grads_a.len(),
        worst.1,
        worst.0
    );
    if worst.1 > args.tolerance {
        anyhow::bail!("{} differs by {:.2e}, over the tolerance {:.0e}", worst.0, worst.1, args.tolerance);
    }
    println!("ok: within {:.0e}", args.tolerance);
    Ok(())
}
