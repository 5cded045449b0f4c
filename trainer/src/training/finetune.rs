//! `pricer train --kind minilm`: fine-tune a pretrained BERT encoder with a
//! price head, on the shared epoch loop (`epochs`): seeded dropout, the
//! price loss (weighted for `--focus` and pseudo-labels), validation each
//! epoch, best weights kept, early stopping; `--resume` continues a run.

use crate::data::{DataSet, for_each_product, load_data_set, write_atomic};
use crate::linear::{focus_weights, word_member_misses};
use crate::training::batches::splitmix64;
use crate::training::epochs::{Schedule, Task, batches_per_epoch, run_epochs};
use crate::training::loss::{price_loss, weighted_price_loss};
use crate::training::optim::AdamW;
use crate::training::run_folder::{
    BEST, CHECKPOINT, EpochStats, RunConfig, RunFile, RunState, device, load_base, load_checkpoint, read_run_file,
    save_weights, write_run,
};
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use pricer::bert::{Dropout, PriceModel, TrainableWeights, batch_tensors};
use pricer::metrics::Summary;
use pricer::text::{Budget, model_input};
use pricer::tokenizer::Tokens;
use std::path::Path;

/// A parameter's learning-rate factor under layer-wise decay `d`: 1 for the
/// head, `d^(layers - i)` for encoder layer `i`, `d^(layers + 1)` for the embeddings.
pub fn layer_lr_scale(name: &str, layers: usize, d: f64) -> f64 {
    let depth = if name.starts_with("embeddings.") {
        layers + 1
    } else if let Some(rest) = name.strip_prefix("encoder.layer.") {
        let i: usize = rest.split('.').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        layers.saturating_sub(i)
    } else {
        0
    };
    d.powi(depth as i32)
}

/// Start a new run (`config`) or continue one (`resume`).
pub fn run(config: Option<RunConfig>, out: &Path, resume: bool) -> Result<()> {
    let Some((config, saved_bert)) = start_or_resume(config, out, resume)? else {
        println!("{} already finished; nothing to resume", out.display());
        return Ok(());
    };
    let dev = device(&config.device)?;
    let (base_cfg, pretrained, tok) = load_base(&config.base)?;
    let bert_cfg = saved_bert.unwrap_or(base_cfg);
    let ds = load_data_set(&config.data, config.holdout, config.seed, false)?;
    if ds.validation.is_empty() {
        bail!("no validation items in {}", config.data.display());
    }
    let max_len = (config.max_tokens + 2).min(bert_cfg.max_position_embeddings);
    let examples = Examples::of(&config, &ds, &tok, max_len)?;
    let (varmap, model, mut opt) = model_and_optimizer(&config, &bert_cfg, pretrained, &dev)?;

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let ckpt = out.join(CHECKPOINT);
    let mut state = if resume && ckpt.exists() {
        let s = load_checkpoint(&ckpt, &varmap, &mut opt, &dev)?;
        println!("resuming {} at epoch {}, batch {} (step {})", out.display(), s.epoch + 1, s.batch_in_epoch, s.step);
        s
    } else {
        let (mean, std) = examples.target_scale();
        RunState { target_mean: mean, target_std: std, ..Default::default() }
    };
    let run_file = RunFile { config: config.clone(), bert: bert_cfg.clone(), state: state.clone(), soup: None };
    write_run(out, &run_file)?;
    write_atomic(&out.join("tokenizer.json"), tok.json().as_bytes())?;

    // Frozen mode: embed every text once; only the head trains.
    let frozen = if config.frozen {
        println!("embedding {} texts once (--frozen)", examples.train.len() + examples.validation.len());
        Some((
            embed_all(&model, &examples.train, tok.pad_id(), &dev)?,
            embed_all(&model, &examples.validation, tok.pad_id(), &dev)?,
        ))
    } else {
        None
    };
    let schedule = Schedule {
        epochs: config.epochs,
        batch: config.batch,
        seed: config.seed,
        lr: if config.frozen { config.head_lr } else { config.lr },
        warmup: config.warmup,
        clip: config.clip,
        checkpoint_every: config.checkpoint_every,
        unit: "ex",
    };
    let lengths: Vec<usize> = examples.train.iter().map(|t| t.ids.len()).collect();
    println!(
        "fine-tuning on {} ({} items, {} validation), {} epochs of {} batches of {}, lr {}, {} tokens max{}",
        config.device,
        ds.train.len(),
        ds.validation.len(),
        config.epochs,
        batches_per_epoch(&lengths, &schedule),
        config.batch,
        config.lr,
        max_len,
        if config.frozen { ", encoder frozen" } else { "" }
    );
    let mut task = Finetune {
        targets: examples.targets(&state),
        examples,
        model,
        frozen,
        validation: &ds.validation,
        dev,
        pad: tok.pad_id(),
        p_drop: bert_cfg.hidden_dropout_prob as f32,
        out,
        run_file,
        varmap: &varmap,
    };
    run_epochs(&mut task, &lengths, &schedule, &mut state, &mut opt, &varmap, &ckpt)?;
    println!(
        "done: best validation MAE ${:.2} at epoch {}; weights in {}",
        state.best_val_mae.unwrap_or(f64::NAN),
        state.best_epoch.unwrap_or(0),
        out.join(BEST).display()
    );
    println!("export it with: pricer export {} --quant q8_0 --out model.gguf", out.display());
    Ok(())
}

/// The config to train with (a new one, or the saved one when resuming, with
/// the encoder's saved shape); `None` when the run already finished.
fn start_or_resume(
    config: Option<RunConfig>,
    out: &Path,
    resume: bool,
) -> Result<Option<(RunConfig, Option<pricer::bert::Config>)>> {
    if resume {
        let run = read_run_file(out)?;
        return Ok((!run.state.done).then_some((run.config, Some(run.bert))));
    }
    let config = config.context("a new run needs its config")?;
    if out.join(CHECKPOINT).exists() {
        bail!("{} already holds a run: continue it with --resume, or choose another --out", out.display());
    }
    Ok(Some((config, None)))
}

/// The training and validation rows as tokens, the training log prices, and
/// each training row's loss weight (`--focus`, `--pseudo`; `None`: all 1).
struct Examples {
    train: Vec<Tokens>,
    validation: Vec<Tokens>,
    train_logs: Vec<f64>,
    /// How many leading training rows are real items (the rest are pseudo-labelled).
    real: usize,
    weights: Option<Vec<f32>>,
}

impl Examples {
    fn of(config: &RunConfig, ds: &DataSet, tok: &pricer::TextTokenizer, max_len: usize) -> Result<Self> {
        let encode = |set: &[pricer::Product]| -> Result<Vec<Tokens>> {
            set.iter()
                .map(|p| {
                    let text = model_input(p, Budget::Tokens(tok, config.max_tokens))?;
                    Ok(tok.encode(&text, max_len)?)
                })
                .collect()
        };
        let mut ex = Examples {
            train: encode(&ds.train)?,
            validation: encode(&ds.validation)?,
            train_logs: ds.train.iter().map(|p| p.price.unwrap_or(0.0).ln_1p()).collect(),
            real: ds.train.len(),
            weights: None,
        };
        if config.focus != 0.0 {
            if !(config.focus > 0.0 && config.focus <= 10.0) {
                bail!("--focus {}: must lie in [0, 10]", config.focus);
            }
            let prep = pricer::estimator::Prep { max_tokens: ds.prep.max_tokens, tokenizer: ds.tokenizer.clone() };
            let misses = word_member_misses(&ds.train, &prep, 5)?;
            let w = focus_weights(&misses, config.focus);
            let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            println!(
                "focus {}: real items weighted by the word member's 5-fold misses (mean {:.3} in log price), weights {lo:.2} to {hi:.2}",
                config.focus,
                misses.iter().sum::<f64>() / misses.len() as f64
            );
            ex.weights = Some(w);
        }
        if let Some(path) = &config.pseudo {
            if config.frozen {
                bail!("--pseudo trains the encoder: not with --frozen");
            }
            if !(config.pseudo_weight > 0.0 && config.pseudo_weight <= 1.0) {
                bail!("--pseudo-weight {}: must lie in (0, 1]", config.pseudo_weight);
            }
            let pseudo = pseudo_items(path, ds)?;
            println!(
                "self-training: {} model-priced items from {}, weight {}",
                pseudo.len(),
                path.display(),
                config.pseudo_weight
            );
            let mut w = ex.weights.take().unwrap_or_else(|| vec![1f32; ex.train.len()]);
            w.extend(std::iter::repeat_n(config.pseudo_weight as f32, pseudo.len()));
            ex.train.extend(encode(&pseudo)?);
            ex.train_logs.extend(pseudo.iter().map(|p| p.price.unwrap_or(0.0).ln_1p()));
            ex.weights = Some(w);
        }
        Ok(ex)
    }

    /// The target's scaling: mean and standard deviation of the real items' log prices.
    fn target_scale(&self) -> (f64, f64) {
        let real = &self.train_logs[..self.real];
        let mean = real.iter().sum::<f64>() / real.len() as f64;
        let std = (real.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / real.len() as f64).sqrt().max(1e-6);
        (mean, std)
    }

    /// Standardized targets of every training row.
    fn targets(&self, state: &RunState) -> Vec<f32> {
        self.train_logs.iter().map(|l| ((l - state.target_mean) / state.target_std) as f32).collect()
    }
}

/// The price model on `dev` (its weights in `varmap`) and its optimizer
/// (the head alone when frozen; layer-wise rates when asked).
fn model_and_optimizer(
    config: &RunConfig,
    bert_cfg: &pricer::bert::Config,
    pretrained: std::collections::HashMap<String, Tensor>,
    dev: &Device,
) -> Result<(candle_nn::VarMap, PriceModel, AdamW)> {
    let varmap = candle_nn::VarMap::new();
    let model = {
        let w = TrainableWeights::new(&varmap, pretrained, config.seed, dev);
        PriceModel::load(&w, bert_cfg)?
    };
    let named_vars: Vec<(String, candle_core::Var)> = {
        let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?;
        data.iter()
            .filter(|(k, _)| !config.frozen || k.starts_with("head."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut opt = AdamW::new(named_vars, config.weight_decay)?;
    if config.layer_decay != 1.0 {
        if !(config.layer_decay > 0.0 && config.layer_decay <= 1.0) {
            bail!("--layer-decay {}: must lie in (0, 1]", config.layer_decay);
        }
        let layers = bert_cfg.num_hidden_layers;
        opt.lr_scale =
            opt.vars.iter().map(|(n, _)| (n.clone(), layer_lr_scale(n, layers, config.layer_decay))).collect();
    }
    Ok((varmap, model, opt))
}

/// Fine-tuning as the epoch loop sees it.
struct Finetune<'a> {
    examples: Examples,
    targets: Vec<f32>,
    model: PriceModel,
    /// `--frozen`: the pooled vectors of the training and validation rows.
    frozen: Option<(Tensor, Tensor)>,
    validation: &'a [pricer::Product],
    dev: Device,
    pad: u32,
    p_drop: f32,
    out: &'a Path,
    run_file: RunFile,
    varmap: &'a candle_nn::VarMap,
}

impl Task for Finetune<'_> {
    fn loss(&mut self, idx: &[usize], step: usize) -> Result<Tensor> {
        let seed = self.run_file.config.seed;
        let mut dropout = Dropout::new(self.p_drop, splitmix64(seed, step as u64));
        let out_t = match &self.frozen {
            Some((train_pooled, _)) => {
                let ix = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), &self.dev)?;
                self.model.head.forward(&train_pooled.index_select(&ix, 0)?, Some(&mut dropout))?
            }
            None => {
                let rows: Vec<Tokens> = idx.iter().map(|&i| self.examples.train[i].clone()).collect();
                let (ids, mask) = batch_tensors(&rows, self.pad, &self.dev)?;
                self.model.forward(&ids, &mask, Some(&mut dropout))?
            }
        };
        let y = Tensor::from_vec(idx.iter().map(|&i| self.targets[i]).collect::<Vec<_>>(), idx.len(), &self.dev)?;
        Ok(match &self.examples.weights {
            None => price_loss(&out_t, &y)?,
            Some(w) => {
                let w = Tensor::from_vec(idx.iter().map(|&i| w[i]).collect::<Vec<_>>(), idx.len(), &self.dev)?;
                weighted_price_loss(&out_t, &y, &w)?
            }
        })
    }

    fn end_epoch(&mut self, state: &mut RunState, rate: f64) -> Result<Option<String>> {
        let config = &self.run_file.config;
        let val_pred = match &self.frozen {
            Some((_, val_pooled)) => head_logs(&self.model, val_pooled)?,
            None => predict_logs(&self.model, &self.examples.validation, self.pad, &self.dev)?,
        };
        let pairs: Vec<(f64, f64)> = val_pred
            .iter()
            .zip(self.validation)
            .map(|(zv, p)| ((zv * state.target_std + state.target_mean).exp_m1().max(0.0), p.price.unwrap_or(0.0)))
            .collect();
        let s = Summary::of(&pairs).context("validation is not empty")?;
        let train_loss = state.loss_sum / state.loss_count.max(1) as f64;
        let improved = state.best_val_mae.is_none_or(|b| s.mae < b);
        println!(
            "epoch {}/{}: train loss {train_loss:.4} | validation MAE ${:.2} RMSLE {:.3} hits {:.1}% | {rate:.1} ex/s{}",
            state.epoch + 1,
            config.epochs,
            s.mae,
            s.rmsle,
            s.hits_pct,
            if improved { " | best so far" } else { "" }
        );
        state.history.push(EpochStats {
            epoch: state.epoch + 1,
            train_loss,
            val_mae: s.mae,
            val_rmsle: s.rmsle,
            val_hits_pct: s.hits_pct,
            examples_per_s: rate,
        });
        if improved {
            state.best_val_mae = Some(s.mae);
            state.best_epoch = Some(state.epoch + 1);
            state.bad_epochs = 0;
            save_weights(&self.out.join(BEST), self.varmap)?;
        } else {
            state.bad_epochs += 1;
        }
        Ok((state.bad_epochs >= config.patience)
            .then(|| format!("validation MAE has not improved for {} epochs", state.bad_epochs)))
    }

    fn save_record(&mut self, state: &RunState) -> Result<()> {
        self.run_file.state = state.clone();
        write_run(self.out, &self.run_file)
    }
}

/// Model-priced items of `path` whose titles are in none of the data set's
/// validation or test splits.
fn pseudo_items(path: &Path, ds: &DataSet) -> Result<Vec<pricer::Product>> {
    let held: std::collections::HashSet<String> = ds
        .validation
        .iter()
        .chain(ds.tests.iter().flat_map(|s| s.products.iter()))
        .map(|p| p.title.to_lowercase())
        .collect();
    let mut out = Vec::new();
    let mut left_out = 0usize;
    for_each_product(path, false, &mut Default::default(), |p, _| {
        match p.price {
            Some(v) if v > 0.0 && !held.contains(&p.title.to_lowercase()) => out.push(p),
            _ => left_out += 1,
        }
        Ok(())
    })?;
    if out.is_empty() {
        bail!("{}: no priced item to learn from", path.display());
    }
    if left_out > 0 {
        println!("{}: {left_out} items left out (no price, or a validation or test title)", path.display());
    }
    Ok(out)
}

/// Pooled vectors of all texts, without gradients, in batches.
fn embed_all(model: &PriceModel, rows: &[Tokens], pad: u32, dev: &Device) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in rows.chunks(32) {
        let (ids, mask) = batch_tensors(chunk, pad, dev)?;
        parts.push(model.encoder.pooled(&ids, &mask, None)?.detach());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn head_logs(model: &PriceModel, pooled: &Tensor) -> Result<Vec<f64>> {
    let out = model.head.forward(pooled, None)?;
    Ok(out.narrow(D::Minus1, 0, 1)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// Standardized point outputs of all texts, no dropout, batched by length.
pub fn predict_logs(model: &PriceModel, rows: &[Tokens], pad: u32, dev: &Device) -> Result<Vec<f64>> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].ids.len());
    let mut out = vec![0.0; rows.len()];
    for chunk in order.chunks(32) {
        let batch: Vec<Tokens> = chunk.iter().map(|&i| rows[i].clone()).collect();
        let (ids, mask) = batch_tensors(&batch, pad, dev)?;
        let o =
            model.forward(&ids, &mask, None)?.narrow(1, 0, 1)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for (&i, v) in chunk.iter().zip(o) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_decay_gives_lower_layers_smaller_rates() {
        let f = |n: &str| layer_lr_scale(n, 6, 0.8);
        assert_eq!(f("head.dense.weight"), 1.0);
        assert!((f("encoder.layer.5.output.dense.weight") - 0.8).abs() < 1e-12);
        assert!((f("encoder.layer.0.attention.self.query.bias") - 0.8f64.powi(6)).abs() < 1e-12);
        assert!((f("embeddings.word_embeddings.weight") - 0.8f64.powi(7)).abs() < 1e-12);
        assert_eq!(layer_lr_scale("embeddings.LayerNorm.weight", 6, 1.0), 1.0);
    }

    #[test]
    fn weighted_loss_with_equal_weights_is_the_loss_and_weights_shift_it() {
        let y = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        let out = Tensor::new(&[[1.5f32, 1.5, 0.5, 0.5], [-1.0, -2.0, -1.0, -0.5]], &Device::Cpu).unwrap();
        let plain = price_loss(&out, &y).unwrap().to_scalar::<f32>().unwrap();
        let ones = Tensor::new(&[0.3f32, 0.3], &Device::Cpu).unwrap();
        let same = weighted_price_loss(&out, &y, &ones).unwrap().to_scalar::<f32>().unwrap();
        assert!((plain - same).abs() < 1e-6, "{plain} vs {same}");
        // All the weight on the second row: its loss alone (point exact; q10 1 below the truth: 0.1 x 1;
        // q90 0.5 above it: 0.1 x 0.5).
        let second = Tensor::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
        let l = weighted_price_loss(&out, &y, &second).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (0.1 + 0.05)).abs() < 1e-6, "{l}");
    }

    #[test]
    fn loss_is_zero_only_when_all_outputs_hit_the_target() {
        let y = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        let exact = Tensor::new(&[[0.5f32, 0.5, 0.5, 0.5], [-1.0, -1.0, -1.0, -1.0]], &Device::Cpu).unwrap();
        assert!(price_loss(&exact, &y).unwrap().to_scalar::<f32>().unwrap().abs() < 1e-7);
        // Point off by 1 (squared: 1, mean over 2 rows: 0.5); q10 output 1 above the truth: pinball 0.9 * 1 / 2.
        let off = Tensor::new(&[[1.5f32, 1.5, 0.5, 0.5], [-1.0, -1.0, -1.0, -1.0]], &Device::Cpu).unwrap();
        let l = price_loss(&off, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (0.5 + 0.45)).abs() < 1e-6, "{l}");
    }
}
