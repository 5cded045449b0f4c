//! A fine-tuning run's folder: `run.json` (config, encoder shape, state),
//! the resumable checkpoint and the best weights; loading a base model folder.

use crate::data::{load_tokenizer, write_atomic};
use crate::training::optim::AdamW;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use pricer::bert::Config;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything that defines a run; saved in `run.json`, reused by `--resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub base: PathBuf,
    pub data: PathBuf,
    pub epochs: usize,
    pub lr: f64,
    pub head_lr: f64,
    pub batch: usize,
    pub max_tokens: usize,
    pub seed: u64,
    pub device: String,
    pub frozen: bool,
    pub warmup: f64,
    pub weight_decay: f64,
    /// Layer-wise learning-rate decay (1: none; runs before it had none).
    #[serde(default = "no_layer_decay")]
    pub layer_decay: f64,
    /// Model-priced items to learn from too, and their weight.
    #[serde(default)]
    pub pseudo: Option<PathBuf>,
    #[serde(default)]
    pub pseudo_weight: f64,
    /// Real items' loss weighted toward the word member's misses (0: none).
    #[serde(default)]
    pub focus: f64,
    pub clip: f64,
    pub patience: usize,
    pub checkpoint_every: usize,
    pub holdout: f64,
    pub command: String,
}

fn no_layer_decay() -> f64 {
    1.0
}

/// Validation metrics after one epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_mae: f64,
    pub val_rmsle: f64,
    pub val_hits_pct: f64,
    pub examples_per_s: f64,
}

/// Where a run stands; saved inside every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub step: usize,
    pub adam_t: usize,
    pub loss_sum: f64,
    pub loss_count: usize,
    pub best_val_mae: Option<f64>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub history: Vec<EpochStats>,
    pub done: bool,
    pub stopped_early: bool,
    pub target_mean: f64,
    pub target_std: f64,
}

/// `run.json`: the config, the encoder's shape and the latest state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFile {
    pub config: RunConfig,
    pub bert: Config,
    pub state: RunState,
    /// Set when the run is an average of others (`pricer soup`), not trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soup: Option<SoupRecord>,
}

pub const RUN_FILE: &str = "run.json";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const BEST: &str = "best.safetensors";

pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Ok(Device::new_cuda(0).context("no usable CUDA device")?)
            }
            #[cfg(not(feature = "cuda"))]
            bail!("this pricer was built without CUDA: rebuild with `cargo build --release --features cuda`")
        }
        other => bail!("unknown device {other:?} (cpu or cuda)"),
    }
}

/// Reads a run directory's `run.json`.
pub fn read_run_file(dir: &Path) -> Result<RunFile> {
    let p = dir.join(RUN_FILE);
    let bytes =
        std::fs::read(&p).with_context(|| format!("{} is not a training run (no {RUN_FILE})", dir.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", p.display()))
}

pub fn write_run(dir: &Path, run: &RunFile) -> Result<()> {
    write_atomic(&dir.join(RUN_FILE), serde_json::to_string_pretty(run)?.as_bytes())
}

/// Loads a Hugging Face model folder: config, weights, tokenizer.
pub fn load_base(dir: &Path) -> Result<(Config, HashMap<String, Tensor>, pricer::TextTokenizer)> {
    let cfg_path = dir.join("config.json");
    let cfg: Config = serde_json::from_slice(
        &std::fs::read(&cfg_path)
            .with_context(|| format!("cannot read {} (is --base a model folder?)", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not a BERT config", cfg_path.display()))?;
    let w_path = dir.join("model.safetensors");
    let weights = candle_core::safetensors::load(&w_path, &Device::Cpu)
        .with_context(|| format!("cannot load {}", w_path.display()))?;
    // Some checkpoints prefix every name with `bert.`.
    let weights = weights.into_iter().map(|(k, v)| (k.strip_prefix("bert.").unwrap_or(&k).to_string(), v)).collect();
    let tok = load_tokenizer(&dir.join("tokenizer.json"))?;
    Ok((cfg, weights, tok))
}

pub fn save_weights(path: &Path, varmap: &candle_nn::VarMap) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?;
    let tensors: HashMap<String, Tensor> =
        data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
    save_tensors(path, &tensors)
}

/// Tensors as one safetensors file, written atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Weights, optimizer moments and the run state in one file, written atomically.
pub fn save_checkpoint(path: &Path, varmap: &candle_nn::VarMap, opt: &AdamW, state: &RunState) -> Result<()> {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?.iter() {
        t.insert(format!("w.{k}"), v.as_tensor().to_device(&Device::Cpu)?);
    }
    for (k, m) in &opt.m {
        t.insert(format!("m.{k}"), m.to_device(&Device::Cpu)?);
        t.insert(format!("v.{k}"), opt.v[k].to_device(&Device::Cpu)?);
    }
    let json = serde_json::to_vec(state)?;
    t.insert("state".into(), Tensor::from_vec(json.clone(), json.len(), &Device::Cpu)?);
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&t, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

pub fn load_checkpoint(path: &Path, varmap: &candle_nn::VarMap, opt: &mut AdamW, dev: &Device) -> Result<RunState> {
    let t = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read checkpoint {} (damaged?)", path.display()))?;
    let state_bytes = t.get("state").context("checkpoint has no state")?.to_vec1::<u8>()?;
    let state: RunState = serde_json::from_slice(&state_bytes).context("checkpoint state is damaged")?;
    for (k, v) in varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?.iter() {
        let w = t.get(&format!("w.{k}")).with_context(|| format!("checkpoint lacks weight {k}"))?;
        v.set(&w.to_device(dev)?)?;
    }
    for (k, _) in opt.vars.clone() {
        let m = t.get(&format!("m.{k}")).with_context(|| format!("checkpoint lacks optimizer state of {k}"))?;
        let v = t.get(&format!("v.{k}")).with_context(|| format!("checkpoint lacks optimizer state of {k}"))?;
        opt.m.insert(k.clone(), m.to_device(dev)?);
        opt.v.insert(k.clone(), v.to_device(dev)?);
    }
    opt.t = state.adam_t;
    Ok(state)
}

/// What a soup was made of, kept in its `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoupRecord {
    pub greedy: bool,
    /// Every run offered, with its own best validation MAE and whether the soup kept it.
    pub ingredients: Vec<Ingredient>,
    pub val_mae: f64,
    pub val_rmsle: f64,
    pub val_hits_pct: f64,
}

/// One run offered to a soup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ingredient {
    pub run: PathBuf,
    pub val_mae: f64,
    pub kept: bool,
}

/// A run's best weights and what describes them, read once (a run still
/// training may replace its best weights while they are used): the one
/// loader of a run's weights (export, soup, embed).
pub struct RunWeights {
    pub dir: PathBuf,
    pub file: RunFile,
    pub weights: HashMap<String, Tensor>,
    /// The run's tokenizer, as JSON text.
    pub tokenizer_json: String,
}

impl RunWeights {
    pub fn load(dir: &Path) -> Result<Self> {
        let file = read_run_file(dir)?;
        if file.state.best_val_mae.is_none() {
            bail!("{} has no best weights yet (no epoch finished)", dir.display());
        }
        let best = dir.join(BEST);
        let weights = candle_core::safetensors::load(&best, &Device::Cpu)
            .with_context(|| format!("cannot load {} (damaged?)", best.display()))?;
        let tokenizer_json = std::fs::read_to_string(dir.join("tokenizer.json"))
            .with_context(|| format!("{} has no tokenizer.json", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), file, weights, tokenizer_json })
    }

    /// The run's tokenizer.
    pub fn tokenizer(&self) -> Result<pricer::TextTokenizer> {
        load_tokenizer(&self.dir.join("tokenizer.json"))
    }
}
