//! `pricer train`: a baseline or linear member (`linear`), or a fine-tuned
//! encoder (`training::finetune`).

use crate::data::{check_output, load_data_set, write_atomic};
use crate::linear::{LinearKind, LinearSettings, fit_linear, prepared};
use crate::model::card::{ValidationFit, finish, finish_with, report_written};
use crate::training::finetune;
use crate::training::run_folder::RunConfig;
use anyhow::{Result, bail};
use pricer::Product;
use pricer::estimator::{Prep, keys};
use pricer::metrics::median;
use pricer::model_file::ModelWriter;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The training median, whatever the product.
    Constant,
    /// Linear regression on hand features: length, weight, rank, brand, category.
    Features,
    /// Linear regression on counts of the 1000 most common words.
    Bow,
    /// Ridge regression (alpha 0.3) on word 1-2-gram TF-IDF, log price target.
    TfidfRidge,
    /// Ridge regression on the `details` fields kept apart (weight, volume,
    /// rank, year, brand, category), log price target.
    DetailsRidge,
    /// Fine-tune a pretrained BERT encoder (all-MiniLM-L6-v2) with a price head.
    Minilm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Constant => "constant",
            Kind::Features => "features",
            Kind::Bow => "bow",
            Kind::TfidfRidge => "tfidf-ridge",
            Kind::DetailsRidge => "details-ridge",
            Kind::Minilm => "minilm",
        }
    }

    /// The linear kind, for those that are one.
    pub fn linear(self) -> Option<LinearKind> {
        match self {
            Kind::Features => Some(LinearKind::Features),
            Kind::Bow => Some(LinearKind::Bow),
            Kind::TfidfRidge => Some(LinearKind::TfidfRidge),
            Kind::DetailsRidge => Some(LinearKind::DetailsRidge),
            Kind::Constant | Kind::Minilm => None,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[arg(long, value_enum, required_unless_present = "resume")]
    pub kind: Option<Kind>,
    /// A `curate` output directory, or one curated JSONL file (a holdout share validates).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// The model file to write (.gguf); for `minilm`, the run directory
    /// (checkpoints, best weights; `pricer export` makes the model file).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the interrupted `minilm` run in this directory.
    #[arg(long, conflicts_with_all = ["kind", "data", "out"])]
    pub resume: Option<PathBuf>,
    /// minilm: the base model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// minilm: passes over the training set.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// minilm: peak learning rate of the encoder (and head).
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// minilm --frozen: peak learning rate of the head.
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f64,
    /// minilm: examples per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// minilm: token budget of the text (special tokens not counted).
    #[arg(long, default_value_t = pricer::text::DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// minilm: cpu or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// minilm: embed each text once and train only the head (fast on CPU).
    #[arg(long)]
    pub frozen: bool,
    /// minilm: share of steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// minilm: layer-wise learning-rate decay: the head trains at --lr, the
    /// top encoder layer at lr x d, the one below at lr x d^2, ..., the
    /// embeddings at lr x d^(layers + 1) (1: one rate for all).
    #[arg(long, default_value_t = 1.0)]
    pub layer_decay: f64,
    /// minilm: self-training: also learn from these items priced by a model
    /// (`pricer pseudo-label`), each weighing --pseudo-weight of a real one.
    /// Their titles that are in validation or test are left out.
    #[arg(long)]
    pub pseudo: Option<PathBuf>,
    #[arg(long, default_value_t = 0.3)]
    pub pseudo_weight: f64,
    /// minilm: weigh each real item's loss toward what the linear word member
    /// misses: 1 + F x (its out-of-fold miss in log price / the mean miss, at
    /// most 4), the weights then scaled to a mean of 1 (0: all weigh the same).
    #[arg(long, default_value_t = 0.0)]
    pub focus: f64,
    /// minilm: gradients are clipped to this global norm.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// minilm: stop after this many epochs without a better validation MAE.
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// minilm: write a checkpoint every N steps (0: only at epoch ends).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Share of a single data file held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Ridge strength of the tfidf-ridge and details-ridge models.
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// tfidf-ridge: also read every `details` entry (brand, weight, rank...).
    #[arg(long)]
    pub with_details: bool,
    /// tfidf-ridge: a term's count c weighs 1 + ln(c) (scikit-learn's `sublinear_tf`).
    #[arg(long)]
    pub sublinear: bool,
    /// Terms in fewer training texts than this are left out of the TF-IDF vocabulary.
    #[arg(long, default_value_t = 1)]
    pub min_df: usize,
    /// Stop at the first malformed record.
    #[arg(long)]
    pub strict: bool,
    /// Linear kinds and `constant`: fit on the training items, measure the
    /// likely range and validation figures, then fit again on the training
    /// and validation items: a member for `export --refit`, which blends it
    /// where the training-only fit was.
    #[arg(long)]
    pub with_validation: bool,
}

impl TrainArgs {
    fn linear_settings(&self) -> LinearSettings {
        LinearSettings {
            alpha: self.alpha,
            with_details: self.with_details,
            sublinear: self.sublinear,
            min_df: self.min_df,
        }
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    if let Some(dir) = &args.resume {
        return finetune::run(None, dir, true);
    }
    let (Some(kind), Some(data), Some(out)) = (args.kind, args.data.as_ref(), args.out.as_ref()) else {
        bail!("--kind, --data and --out are required (or --resume RUN_DIR)");
    };
    if kind == Kind::Minilm {
        if args.with_validation {
            bail!(
                "--with-validation is for the linear kinds and constant (an encoder's validation items pick its epoch)"
            );
        }
        let Some(base) = &args.base else {
            bail!("--kind minilm needs --base DIR, a model folder (scripts/fetch-minilm.sh makes one)");
        };
        if args.batch == 0 || args.epochs == 0 {
            bail!("--batch and --epochs must be at least 1");
        }
        let config = RunConfig {
            base: base.clone(),
            data: data.clone(),
            epochs: args.epochs,
            lr: args.lr,
            head_lr: args.head_lr,
            batch: args.batch,
            max_tokens: args.max_tokens,
            seed: args.seed,
            device: args.device.clone(),
            frozen: args.frozen,
            warmup: args.warmup,
            weight_decay: args.weight_decay,
            layer_decay: args.layer_decay,
            pseudo: args.pseudo.clone(),
            pseudo_weight: args.pseudo_weight,
            focus: args.focus,
            clip: args.clip,
            patience: args.patience.max(1),
            checkpoint_every: args.checkpoint_every,
            holdout: args.holdout,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        };
        return finetune::run(Some(config), out, false);
    }
    check_output(out)?;
    let args = &TrainArgs { kind: Some(kind), ..args.clone() };
    let ds = load_data_set(data, args.holdout, args.seed, args.strict)?;
    let prep = Prep { max_tokens: ds.prep.max_tokens, tokenizer: ds.tokenizer.clone() };
    println!("training {} on {} items ({} validation)", kind.name(), ds.train.len(), ds.validation.len());
    let fitted = |products: &[Product]| -> Result<ModelWriter> {
        let mut w = ModelWriter::new(kind.name());
        match kind {
            Kind::Constant => {
                let mut prices: Vec<f64> = products.iter().filter_map(|p| p.price).collect();
                w.set_f64(pricer::estimator::keys::CONSTANT_PRICE, median(&mut prices));
            }
            kind => {
                let linear = kind.linear().expect("constant and minilm are handled apart");
                fit_linear(linear, &prepared(products, &prep)?, &args.linear_settings())?.write(&mut w, "")?
            }
        }
        prep.write(&mut w);
        Ok(w)
    };
    let mut w = fitted(&ds.train)?;
    if args.with_validation {
        let fit = ValidationFit::of(&mut w, &ds.validation)?;
        let all: Vec<Product> = ds.train.iter().chain(&ds.validation).cloned().collect();
        println!("fitting again on the {} training and validation items", all.len());
        w = fitted(&all)?;
        finish_with(&mut w, &ds, args.seed, &fit)?;
        w.set_f64(keys::TRAIN_ITEMS, all.len() as f64).set_u32(keys::VALIDATION_LEARNT, ds.validation.len() as u32);
    } else {
        finish(&mut w, &ds, args.seed)?;
    }
    let bytes = w.to_bytes()?;
    write_atomic(out, &bytes)?;
    report_written(out, &bytes)
}
