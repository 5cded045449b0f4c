//! `pricer embed`: the encoder's pooled vector of every item of a file, as a
//! NumPy `.npy` matrix, for analysis outside Pricer (nearest neighbours,
//! projections, other regressors).

use crate::data::priced_products;
use crate::training::run_folder::{RUN_FILE, RunWeights, load_base};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use pricer::bert::{Config, Encoder, batch_tensors};
use pricer::text::{Budget, model_input};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    /// A base model folder (config.json, model.safetensors, tokenizer.json)
    /// or a `pricer train --kind minilm` run directory (its best weights).
    #[arg(long)]
    pub encoder: PathBuf,
    /// Items: curated JSONL, raw Amazon JSONL, or CSV (priced items only).
    #[arg(long)]
    pub data: PathBuf,
    /// The `.npy` file to write: one row of f32 per item, in file order.
    #[arg(long)]
    pub out: PathBuf,
    /// Token budget of the text (special tokens not counted).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

/// The encoder of a base folder or a run directory, with its tokenizer.
pub fn load_encoder(dir: &Path) -> Result<(Encoder, pricer::TextTokenizer)> {
    if dir.join(RUN_FILE).exists() {
        let run = RunWeights::load(dir)?;
        let tok = run.tokenizer()?;
        Ok((encoder_from(run.weights, &run.file.bert)?, tok))
    } else {
        let (cfg, weights, tok) = load_base(dir)?;
        Ok((encoder_from(weights, &cfg)?, tok))
    }
}

fn encoder_from(weights: std::collections::HashMap<String, Tensor>, cfg: &Config) -> Result<Encoder> {
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    Ok(Encoder::load(&vb, cfg)?)
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    let (encoder, tok) = load_encoder(&args.encoder)?;
    let (products, _) = priced_products(&args.data, false)?;
    if products.is_empty() {
        bail!("no priced items in {}", args.data.display());
    }
    let max_len = (args.max_tokens + 2).min(encoder.config.max_position_embeddings);
    let rows = products
        .iter()
        .map(|p| Ok(tok.encode(&model_input(p, Budget::Tokens(&tok, args.max_tokens))?, max_len)?))
        .collect::<Result<Vec<_>>>()?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    // Sorted by length so batches carry little padding; written back in file order.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].ids.len());
    let dim = encoder.config.hidden_size;
    let mut out = vec![0f32; rows.len() * dim];
    for chunk in order.chunks(32) {
        let batch: Vec<_> = chunk.iter().map(|&i| rows[i].clone()).collect();
        let (ids, mask) = batch_tensors(&batch, tok.pad_id(), &Device::Cpu)?;
        let pooled = encoder.pooled(&ids, &mask, None)?.to_vec2::<f32>()?;
        for (&i, v) in chunk.iter().zip(pooled) {
            out[i * dim..(i + 1) * dim].copy_from_slice(&v);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    write_npy(&args.out, &out, rows.len(), dim)?;
    println!("wrote {} ({} x {dim})", args.out.display(), rows.len());
    Ok(())
}

/// Writes a 2-D little-endian f32 array in NumPy's `.npy` format (version 1.0).
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend(b"\x93NUMPY\x01\x00");
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&bytes)?;
    Ok(())
}
