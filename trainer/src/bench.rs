//! `pricer bench`: training and inference speed of the encoder on synthetic
//! batches of a fixed shape, for comparing devices, builds and frameworks.

use crate::finetune::{device, load_base, price_loss};
use crate::optim::{AdamW, grad_norm};
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
        println!("{:>6} {:>6} {:>14} {:>14}", "seq", "batch", "train ex/s", "forward ex/s");
    }
    for &seq in &args.seq {
        for &batch in &args.batch {
            let ids: Vec<u32> = (0..batch * seq).map(|i| 1000 + (i as u32 * 7919) % 20000).collect();
            let ids = Tensor::from_vec(ids, (batch, seq), &dev)?;
            let mask = Tensor::ones((batch, seq), DType::U32, &dev)?;
            let y = Tensor::zeros(batch, DType::F32, &dev)?;
            let mut step = |n: u64| -> Result<()> {
                let mut d = Dropout::new(0.1, n);
                let loss = price_loss(&model.forward(&ids, &mask, Some(&mut d))?, &y)?;
                let grads = loss.backward()?;
                let _ = grad_norm(&grads, &opt.vars)?;
                opt.step(&grads, 1e-5, 1.0)?;
                dev.synchronize()?;
                Ok(())
            };
            step(0)?;
            let t = Instant::now();
            for n in 0..args.steps {
                step(n as u64 + 1)?;
            }
            let train = (args.steps * batch) as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..args.steps {
                let _ = model.forward(&ids, &mask, None)?.to_device(&candle_core::Device::Cpu)?;
            }
            let fwd = (args.steps * batch) as f64 / t.elapsed().as_secs_f64();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"seq": seq, "batch": batch, "train_ex_s": train, "forward_ex_s": fwd, "device": args.device})
                );
            } else {
                println!("{seq:>6} {batch:>6} {train:>14.1} {fwd:>14.1}");
            }
        }
    }
    Ok(())
}
