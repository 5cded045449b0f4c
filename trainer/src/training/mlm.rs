//! `pricer mlm`: domain-adaptive masked-language-model training. The
//! encoder reads every product text there is, priced or not, learning to
//! fill in masked words, before `pricer train --kind minilm` teaches it
//! prices. The output is a base model folder like the one it started from.
//!
//! MiniLM's checkpoint has no MLM head: the decoder is tied to the word
//! embeddings (as BERT's is), with a new output bias, and the transform
//! (dense, GELU, layer norm) starts as the identity, so that from the first
//! step the logits are the hidden states' dot products with the words.

use crate::data::texts::read_texts;
use crate::data::write_atomic;
use crate::training::batches::splitmix64;
use crate::training::epochs::{Schedule, Task, batches_per_epoch, run_epochs};
use crate::training::optim::AdamW;
use crate::training::run_folder::{CHECKPOINT, RunState, device, load_base, load_checkpoint, save_tensors};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use pricer::bert::{Config, Dropout, Encoder, LayerNorm, TrainableWeights, Weights, batch_tensors};
use pricer::tokenizer::Tokens;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct MlmConfig {
    /// The base model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub base: PathBuf,
    /// Text sources: a `curate` directory (its train split; the titles of its
    /// validation and test splits are kept out of every source), product
    /// files of any format `curate` reads, or `{"title", "full"}` lines
    /// without prices (`unpriced-22k.jsonl.gz`). Gzip is read as it is.
    #[arg(long, num_args = 1.., required = true)]
    pub texts: Vec<PathBuf>,
    /// The model folder to write: the adapted encoder, for `pricer train --base`.
    #[arg(long)]
    pub out: PathBuf,
    /// At most this many texts, taken at an even stride over all the
    /// sources' texts (each source keeps its share): a shorter run.
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Token budget of a text (special tokens not counted), as in fine-tuning.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Share of each text's tokens masked (80% [MASK], 10% a random word, 10% kept).
    #[arg(long, default_value_t = 0.15)]
    pub mask: f64,
    /// Share of steps warming the learning rate up.
    #[arg(long, default_value_t = 0.06)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Share of the texts held out to measure the masked-word loss.
    #[arg(long, default_value_t = 0.02)]
    pub holdout: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// cpu or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Write a checkpoint every N steps (0: only at epoch ends).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Continue the interrupted run in --out (the other arguments are the saved ones).
    #[arg(long)]
    pub resume: bool,
}

/// `mlm.json` in the output folder: the arguments and where the run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MlmRun {
    args: MlmConfig,
    state: RunState,
    /// Held-out masked-word loss and accuracy before training and after each epoch.
    held_out: Vec<HeldOut>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct HeldOut {
    epoch: usize,
    loss: f64,
    accuracy: f64,
}

const RUN: &str = "mlm.json";
/// Special tokens and unused slots sit below this id in BERT's vocabulary;
/// random replacements are drawn from the words above it.
const FIRST_WORD: u32 = 999;

/// BERT's masking of one text (`[CLS] ... [SEP]`): `share` of the tokens
/// between the special ones (at least one) are chosen; 80% of those become
/// `[MASK]`, 10% a random word, 10% stay. Returns the input ids, and the
/// chosen positions with their original ids (what the loss predicts).
pub fn mask_tokens(
    ids: &[u32],
    share: f64,
    mask_id: u32,
    vocab: u32,
    rng: &mut impl Rng,
) -> (Vec<u32>, Vec<(usize, u32)>) {
    let mut input = ids.to_vec();
    if ids.len() < 3 {
        return (input, Vec::new());
    }
    let mut inner: Vec<usize> = (1..ids.len() - 1).collect();
    let n = ((share * inner.len() as f64).round() as usize).clamp(1, inner.len());
    // A partial Fisher-Yates shuffle: the first n are the chosen positions.
    for i in 0..n {
        let j = rng.random_range(i..inner.len());
        inner.swap(i, j);
    }
    let mut chosen: Vec<(usize, u32)> = inner[..n].iter().map(|&p| (p, ids[p])).collect();
    chosen.sort_unstable();
    for &(p, _) in &chosen {
        let r: f64 = rng.random();
        if r < 0.8 {
            input[p] = mask_id;
        } else if r < 0.9 && vocab > FIRST_WORD {
            input[p] = rng.random_range(FIRST_WORD..vocab);
        }
    }
    (input, chosen)
}

/// The MLM head over the encoder's hidden states, HF `BertForMaskedLM`
/// names: `cls.predictions.transform.{dense,LayerNorm}`, `cls.predictions.bias`;
/// the decoder is the word embedding matrix.
pub struct MlmHead {
    dense_w: Tensor,
    dense_b: Tensor,
    norm: LayerNorm,
    decoder: Tensor,
    bias: Tensor,
}

impl MlmHead {
    pub fn load(w: &dyn Weights, cfg: &Config) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            dense_w: w.get("cls.predictions.transform.dense.weight", &[h, h])?,
            dense_b: w.get("cls.predictions.transform.dense.bias", &[h])?,
            norm: LayerNorm::load(w, "cls.predictions.transform.LayerNorm", h, cfg.layer_norm_eps)?,
            decoder: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            bias: w.get("cls.predictions.bias", &[cfg.vocab_size])?,
        })
    }

    /// The head's starting values: the transform is the identity, the bias zero.
    pub fn initial(cfg: &Config, dev: &Device) -> candle_core::Result<HashMap<String, Tensor>> {
        let h = cfg.hidden_size;
        let p = "cls.predictions";
        Ok(HashMap::from([
            (format!("{p}.transform.dense.weight"), Tensor::eye(h, DType::F32, dev)?),
            (format!("{p}.transform.dense.bias"), Tensor::zeros(h, DType::F32, dev)?),
            (format!("{p}.transform.LayerNorm.weight"), Tensor::ones(h, DType::F32, dev)?),
            (format!("{p}.transform.LayerNorm.bias"), Tensor::zeros(h, DType::F32, dev)?),
            (format!("{p}.bias"), Tensor::zeros(cfg.vocab_size, DType::F32, dev)?),
        ]))
    }

    /// Vocabulary logits `[m, vocab]` of hidden states `[m, hidden]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.matmul(&self.dense_w.t()?)?.broadcast_add(&self.dense_b)?.gelu_erf()?;
        let x = self.norm.forward(&x)?;
        x.matmul(&self.decoder.t()?)?.broadcast_add(&self.bias)
    }
}

/// One batch's masked-word loss (mean cross-entropy over the masked
/// positions) and how many of them the top logit gets right.
fn batch_loss(
    encoder: &Encoder,
    head: &MlmHead,
    masked: &[(Tokens, Vec<(usize, u32)>)],
    pad: u32,
    dropout: Option<&mut Dropout>,
    dev: &Device,
) -> Result<(Tensor, usize, usize)> {
    let rows: Vec<Tokens> = masked.iter().map(|(t, _)| t.clone()).collect();
    let (ids, mask) = batch_tensors(&rows, pad, dev)?;
    let (b, t) = ids.dims2()?;
    let hidden = encoder.hidden(&ids, &mask, dropout)?.reshape((b * t, ()))?;
    let (mut at, mut labels) = (Vec::new(), Vec::new());
    for (r, (_, chosen)) in masked.iter().enumerate() {
        for &(p, id) in chosen {
            at.push((r * t + p) as u32);
            labels.push(id);
        }
    }
    let n = labels.len();
    let picked = hidden.index_select(&Tensor::from_vec(at, n, dev)?, 0)?;
    let logits = head.forward(&picked)?;
    let labels = Tensor::from_vec(labels, n, dev)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let right = logits.argmax(1)?.eq(&labels)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
    Ok((loss, right, n))
}

fn masked_rows(rows: &[&Tokens], share: f64, mask_id: u32, vocab: u32, seed: u64) -> Vec<(Tokens, Vec<(usize, u32)>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rows.iter()
        .map(|t| {
            let (ids, chosen) = mask_tokens(&t.ids, share, mask_id, vocab, &mut rng);
            (Tokens { ids, mask: t.mask.clone() }, chosen)
        })
        .collect()
}

/// Held-out loss and accuracy, each text masked the same way every time.
fn held_out(
    encoder: &Encoder,
    head: &MlmHead,
    texts: &[Tokens],
    args: &MlmConfig,
    (mask_id, vocab, pad): (u32, u32, u32),
    dev: &Device,
) -> Result<(f64, f64)> {
    let (mut sum, mut right, mut n) = (0.0, 0usize, 0usize);
    for (i, chunk) in texts.chunks(args.batch.max(1)).enumerate() {
        let rows: Vec<&Tokens> = chunk.iter().collect();
        let masked = masked_rows(&rows, args.mask, mask_id, vocab, splitmix64(args.seed ^ 0x5eed, i as u64));
        let (loss, r, m) = batch_loss(encoder, head, &masked, pad, None, dev)?;
        sum += loss.to_scalar::<f32>()? as f64 * m as f64;
        right += r;
        n += m;
    }
    Ok((sum / n.max(1) as f64, right as f64 / n.max(1) as f64))
}

pub fn run(args: &MlmConfig) -> Result<()> {
    let run_path = args.out.join(RUN);
    let Some((args, saved)) = start_or_resume(args, &run_path)? else {
        println!("{} already finished; nothing to resume", args.out.display());
        return Ok(());
    };
    if !(args.mask > 0.0 && args.mask < 1.0) {
        bail!("--mask {}: a share between 0 and 1", args.mask);
    }
    if args.batch == 0 || args.epochs == 0 || args.limit == Some(0) {
        bail!("--batch, --epochs and --limit must be at least 1");
    }
    let dev = device(&args.device)?;
    let (cfg, mut pretrained, tok) = load_base(&args.base)?;
    let mask_id = tok.token_id("[MASK]").context("the tokenizer has no [MASK] token")?;
    let max_len = (args.max_tokens + 2).min(cfg.max_position_embeddings);
    let (train, val) = held_out_split(&args, &tok, max_len)?;

    for (k, v) in MlmHead::initial(&cfg, &Device::Cpu)? {
        pretrained.entry(k).or_insert(v);
    }
    let varmap = candle_nn::VarMap::new();
    let (encoder, head) = {
        let w = TrainableWeights::new(&varmap, pretrained, args.seed, &dev);
        (Encoder::load(&w, &cfg)?, MlmHead::load(&w, &cfg)?)
    };
    let named: Vec<(String, candle_core::Var)> = {
        let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut opt = AdamW::new(named, args.weight_decay)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let ckpt = args.out.join(CHECKPOINT);
    let ids = (mask_id, cfg.vocab_size as u32, tok.pad_id());
    let (mut state, held) = match saved {
        Some(r) => {
            let s = load_checkpoint(&ckpt, &varmap, &mut opt, &dev)?;
            println!(
                "resuming {} at epoch {}, batch {} (step {})",
                args.out.display(),
                s.epoch + 1,
                s.batch_in_epoch,
                s.step
            );
            (s, r.held_out)
        }
        None => {
            let (loss, acc) = held_out(&encoder, &head, &val, &args, ids, &dev)?;
            println!("held-out masked words before training: loss {loss:.4}, {:.1}% right", 100.0 * acc);
            (RunState::default(), vec![HeldOut { epoch: 0, loss, accuracy: acc }])
        }
    };
    let schedule = Schedule {
        epochs: args.epochs,
        batch: args.batch,
        seed: args.seed,
        lr: args.lr,
        warmup: args.warmup,
        clip: args.clip,
        checkpoint_every: args.checkpoint_every,
        unit: "texts",
    };
    let lengths: Vec<usize> = train.iter().map(|t| t.ids.len()).collect();
    println!(
        "masked-word training on {} ({} texts, {} held out), {} epochs of {} batches of {}, lr {}, {} tokens max",
        args.device,
        train.len(),
        val.len(),
        args.epochs,
        batches_per_epoch(&lengths, &schedule),
        args.batch,
        args.lr,
        max_len
    );
    let mut task = Reading {
        run: MlmRun { args: args.clone(), state: state.clone(), held_out: held },
        run_path,
        encoder,
        head,
        train,
        val,
        ids,
        p_drop: cfg.hidden_dropout_prob as f32,
        dev,
        varmap: &varmap,
    };
    task.save_record(&state)?;
    run_epochs(&mut task, &lengths, &schedule, &mut state, &mut opt, &varmap, &ckpt)?;
    println!("done: the adapted encoder is in {} (use it as pricer train --base)", args.out.display());
    Ok(())
}

/// The settings to train with (the saved ones when resuming) and the saved
/// record; `None` when the run already finished.
fn start_or_resume(args: &MlmConfig, run_path: &Path) -> Result<Option<(MlmConfig, Option<MlmRun>)>> {
    if args.resume {
        let saved: MlmRun = serde_json::from_slice(
            &std::fs::read(run_path)
                .with_context(|| format!("cannot read {} (nothing to resume)", run_path.display()))?,
        )
        .with_context(|| format!("{} is damaged", run_path.display()))?;
        return Ok((!saved.state.done).then(|| (saved.args.clone(), Some(saved))));
    }
    if run_path.exists() {
        bail!("{} already holds an MLM run: continue it with --resume, or choose another --out", args.out.display());
    }
    Ok(Some((args.clone(), None)))
}

/// The texts as tokens, split into training rows and held-out rows by a
/// seeded hash of each text: the same split whatever the order of the sources.
fn held_out_split(args: &MlmConfig, tok: &pricer::TextTokenizer, max_len: usize) -> Result<(Vec<Tokens>, Vec<Tokens>)> {
    let mut texts = read_texts(&args.texts, tok, args.max_tokens)?;
    if let Some(n) = args.limit {
        texts = crate::data::spread(&texts, n);
        println!("{} texts kept (--limit {n})", texts.len());
    }
    let tokens: Vec<Tokens> = texts.iter().map(|t| tok.encode(t, max_len)).collect::<Result<_, _>>()?;
    let hold = |t: &String| {
        let h = t.bytes().fold(args.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        (splitmix64(h, 0) % 10_000) as f64 / 10_000.0 < args.holdout
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (t, text) in tokens.into_iter().zip(&texts) {
        if hold(text) { val.push(t) } else { train.push(t) }
    }
    if train.is_empty() {
        bail!("no text to train on in {:?}", args.texts);
    }
    if val.is_empty() {
        bail!(
            "none of the {} texts was held out (--holdout {}): the masked-word loss is measured on them; \
             raise --holdout or give more texts",
            train.len(),
            args.holdout
        );
    }
    Ok((train, val))
}

/// Masked-word reading as the epoch loop sees it.
struct Reading<'a> {
    run: MlmRun,
    run_path: PathBuf,
    encoder: Encoder,
    head: MlmHead,
    train: Vec<Tokens>,
    val: Vec<Tokens>,
    /// `[MASK]`'s id, the vocabulary's size, the padding id.
    ids: (u32, u32, u32),
    p_drop: f32,
    dev: Device,
    varmap: &'a candle_nn::VarMap,
}

impl Task for Reading<'_> {
    fn loss(&mut self, idx: &[usize], step: usize) -> Result<Tensor> {
        let (args, (mask_id, vocab, pad)) = (&self.run.args, self.ids);
        let rows: Vec<&Tokens> = idx.iter().map(|&i| &self.train[i]).collect();
        let masked = masked_rows(&rows, args.mask, mask_id, vocab, splitmix64(args.seed, step as u64));
        let mut dropout = Dropout::new(self.p_drop, splitmix64(args.seed ^ 1, step as u64));
        Ok(batch_loss(&self.encoder, &self.head, &masked, pad, Some(&mut dropout), &self.dev)?.0)
    }

    fn end_epoch(&mut self, state: &mut RunState, _rate: f64) -> Result<Option<String>> {
        let args = &self.run.args;
        let (loss, acc) = held_out(&self.encoder, &self.head, &self.val, args, self.ids, &self.dev)?;
        println!(
            "epoch {}/{}: held-out masked words: loss {loss:.4}, {:.1}% right",
            state.epoch + 1,
            args.epochs,
            100.0 * acc
        );
        self.run.held_out.push(HeldOut { epoch: state.epoch + 1, loss, accuracy: acc });
        save_encoder(args, self.varmap)?;
        Ok(None)
    }

    fn save_record(&mut self, state: &RunState) -> Result<()> {
        self.run.state = state.clone();
        write_atomic(&self.run_path, &serde_json::to_vec_pretty(&self.run)?)
    }
}

/// The encoder's weights (the MLM head left out) as a base model folder:
/// `model.safetensors`, and the base's `config.json` and `tokenizer.json`.
fn save_encoder(args: &MlmConfig, varmap: &candle_nn::VarMap) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock"))?;
    let tensors: HashMap<String, Tensor> = data
        .iter()
        .filter(|(k, _)| !k.starts_with("cls."))
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    save_tensors(&args.out.join("model.safetensors"), &tensors)?;
    for f in ["config.json", "tokenizer.json"] {
        let bytes =
            std::fs::read(args.base.join(f)).with_context(|| format!("cannot read {}", args.base.join(f).display()))?;
        write_atomic(&args.out.join(f), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_follows_bert_and_never_touches_special_tokens() {
        let ids: Vec<u32> =
            std::iter::once(101).chain((0..200).map(|i| 2000 + i)).chain(std::iter::once(102)).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut masked, mut random, mut kept, mut total) = (0, 0, 0, 0);
        for _ in 0..50 {
            let (input, chosen) = mask_tokens(&ids, 0.15, 103, 30522, &mut rng);
            assert_eq!(chosen.len(), 30, "15% of 200");
            assert_eq!((input[0], input[201]), (101, 102));
            for (p, orig) in chosen {
                assert!((1..=200).contains(&p) && orig == ids[p]);
                match input[p] {
                    103 => masked += 1,
                    v if v == orig => kept += 1,
                    v => {
                        assert!(v >= FIRST_WORD);
                        random += 1
                    }
                }
                total += 1;
            }
            // Unchosen positions are untouched.
            let changed = input.iter().zip(&ids).filter(|(a, b)| a != b).count();
            assert!(changed <= 30);
        }
        let share = |n: i32| n as f64 / total as f64;
        assert!((share(masked) - 0.8).abs() < 0.04 && (share(random) - 0.1).abs() < 0.03, "{masked} {random} {kept}");
        // A text of one word still gets one masked; no room at all, none.
        let (_, chosen) = mask_tokens(&[101, 2000, 102], 0.15, 103, 30522, &mut rng);
        assert_eq!(chosen, vec![(1, 2000)]);
        assert!(mask_tokens(&[101, 102], 0.15, 103, 30522, &mut rng).1.is_empty());
    }

    #[test]
    fn an_identity_head_ranks_a_word_s_own_embedding_first() {
        // With the transform at the identity and a zero bias, a hidden state
        // equal to a word's embedding scores that word highest (words 0..32
        // along the axes, the rest small).
        let cfg = Config::tiny(50);
        let h = cfg.hidden_size;
        let varmap = candle_nn::VarMap::new();
        let mut init = MlmHead::initial(&cfg, &Device::Cpu).unwrap();
        let axes = (Tensor::eye(h, DType::F32, &Device::Cpu).unwrap() * 3.0).unwrap();
        let small = (Tensor::randn(0f32, 1.0, (50 - h, h), &Device::Cpu).unwrap() * 0.1).unwrap();
        let emb = Tensor::cat(&[axes, small], 0).unwrap();
        init.insert("embeddings.word_embeddings.weight".into(), emb.clone());
        let w = TrainableWeights::new(&varmap, init, 1, &Device::Cpu);
        let head = MlmHead::load(&w, &cfg).unwrap();
        let rows = emb.narrow(0, 10, 5).unwrap();
        let best = head.forward(&rows).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(best, vec![10, 11, 12, 13, 14]);
    }
}
