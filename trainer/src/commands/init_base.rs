//! `pricer init-base`: a randomly initialised BERT model folder, in the same
//! layout as a downloaded one: for tests, experiments and training from scratch.

use crate::data::{load_tokenizer, write_atomic};
use anyhow::{Context, Result};
use candle_core::Device;
use pricer::bert::{Config, Encoder, TrainableWeights};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct InitBaseArgs {
    /// The tokenizer.json the model will use (its vocabulary size sets the embeddings).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The model folder to write (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 64)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 256)]
    pub max_positions: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(args: &InitBaseArgs) -> Result<()> {
    if args.heads == 0 || !args.hidden.is_multiple_of(args.heads) {
        anyhow::bail!("--hidden {} must be a multiple of --heads {}", args.hidden, args.heads);
    }
    let tok = load_tokenizer(&args.tokenizer)?;
    let cfg = Config {
        vocab_size: tok.vocab_size(),
        hidden_size: args.hidden,
        num_hidden_layers: args.layers,
        num_attention_heads: args.heads,
        intermediate_size: args.intermediate,
        max_position_embeddings: args.max_positions,
        ..Config::tiny(0)
    };
    let varmap = candle_nn::VarMap::new();
    Encoder::load(&TrainableWeights::new(&varmap, Default::default(), args.seed, &Device::Cpu), &cfg)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    varmap.save(args.out.join("model.safetensors"))?;
    write_atomic(&args.out.join("config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    write_atomic(&args.out.join("tokenizer.json"), tok.json().as_bytes())?;
    println!("wrote a random {}-layer, {}-wide BERT to {}", cfg.num_hidden_layers, cfg.hidden_size, args.out.display());
    Ok(())
}
