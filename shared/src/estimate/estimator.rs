//! The estimate: what the trainer, the CLI and the browser all call.
//!
//! An [`Estimator`] is loaded from one model file of any kind; it prepares a
//! product's text with [`crate::text::prepare`] and returns an [`Estimate`].

use crate::baselines::LinearModel;
use crate::bert::{Config, HEAD_OUTPUTS, PriceModel, batch_tensors};
use crate::knn::{Knn, Neighbour};
use crate::model_file::{ModelFile, ModelWriter};
use crate::text::{self, Budget, PreparedText};
use crate::tokenizer::Tokens;
use crate::{Error, Product, TextTokenizer};
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// A price estimate in dollars, with a likely range (10th to 90th percentile).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub price: f64,
    pub low: f64,
    pub high: f64,
}

/// Metadata keys every model file carries, whatever its kind.
pub mod keys {
    pub const MAX_TOKENS: &str = "pricer.prep.max_tokens";
    pub const TOKENIZER: &str = "pricer.prep.tokenizer_json";
    /// The one price a `constant` model gives.
    pub const CONSTANT_PRICE: &str = "pricer.constant.price";
    pub const RANGE_LOW: &str = "pricer.range.log_low";
    pub const RANGE_HIGH: &str = "pricer.range.log_high";
    pub const BERT_CONFIG: &str = "pricer.bert.config";
    pub const TARGET_MEAN: &str = "pricer.target.mean";
    pub const TARGET_STD: &str = "pricer.target.std";
    pub const QUANTILES: &str = "pricer.quantiles";
    pub const ENSEMBLE_WEIGHTS: &str = "pricer.ensemble.weights";
    /// Names of the test splits whose metrics the file carries.
    pub const TEST_SPLITS: &str = "pricer.test.splits";

    /// The metadata key of a test metric: `pricer.test.KEY` for the unnamed
    /// split, `pricer.test.NAME.KEY` for a named one (`catalog`, `course`).
    pub fn test_key(split: &str, key: &str) -> String {
        if split.is_empty() { format!("pricer.test.{key}") } else { format!("pricer.test.{split}.{key}") }
    }

    pub const DATA_SET: &str = "pricer.provenance.data_set";
    pub const TRAIN_ITEMS: &str = "pricer.provenance.train_items";
    pub const DATA_FILES: &str = "pricer.provenance.data_files";
    /// How many validation items the neighbour index holds besides the
    /// training items (`export --index-validation`, after the blend was fitted).
    pub const VALIDATION_INDEXED: &str = "pricer.knn.validation_items";
    /// The linear members put in place after the blend was fitted, trained
    /// on the validation items too (`export --refit`): names, comma-separated.
    pub const REFITTED: &str = "pricer.stack.refitted";
    /// How many validation items a linear model learnt from after its range
    /// was measured on them (`train --with-validation`).
    pub const VALIDATION_LEARNT: &str = "pricer.train.validation_items";

    /// Provenance: what made the file (the card's "how it was made").
    pub const DATA_SHA256: &str = "pricer.provenance.data_sha256";
    pub const SEED: &str = "pricer.provenance.seed";
    pub const COMMAND: &str = "pricer.provenance.command";
    pub const DATE: &str = "pricer.provenance.date";
    pub const VERSION: &str = "pricer.provenance.version";
    pub const BASE: &str = "pricer.provenance.base";
    pub const TRAIN_COMMAND: &str = "pricer.provenance.train_command";
    pub const SOUP_OF: &str = "pricer.provenance.soup_of";
    /// The recipe a file was built from (`pricer build`): its name, its
    /// TOML text and the SHA-256 of that text.
    pub const RECIPE: &str = "pricer.recipe.name";
    pub const RECIPE_TEXT: &str = "pricer.recipe.toml";
    pub const RECIPE_SHA256: &str = "pricer.recipe.sha256";

    /// The encoder run's best validation epoch and its MAE.
    pub const BEST_VAL_MAE: &str = "pricer.train.best_val_mae";
    pub const BEST_EPOCH: &str = "pricer.train.best_epoch";
    /// The model's own figures on the validation items (before it saw them).
    pub const VALIDATION_MAE: &str = "pricer.validation.mae";
    pub const VALIDATION_RMSLE: &str = "pricer.validation.rmsle";

    /// The encoder's storage type and its 8-bit vs f32 difference on validation.
    pub const QUANT: &str = "pricer.quant";
    pub const QUANT_MEAN_REL_DIFF: &str = "pricer.quant.mean_rel_diff_vs_f32";
    pub const QUANT_MAX_REL_DIFF: &str = "pricer.quant.max_rel_diff_vs_f32";
    /// The int8 input smoothing's migration strength and calibration texts.
    pub const SMOOTH_ALPHA: &str = "pricer.quant.smooth_alpha";
    pub const SMOOTH_TEXTS: &str = "pricer.quant.smooth_texts";

    /// What a model was trained and measured on, as its card says it: the
    /// training split's size and the data set's files by role, by name only
    /// (never the training machine's paths).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct TrainingData {
        pub train_items: Option<u64>,
        /// The data set's name (a `curate` directory's or a file's name).
        pub data_set: Option<String>,
        pub train: Vec<String>,
        pub validation: Vec<String>,
        pub test: Vec<String>,
        /// Validation items in the neighbour index ([`VALIDATION_INDEXED`]).
        pub validation_indexed: Option<u64>,
        /// Members refitted with the validation items ([`REFITTED`]).
        pub refitted: Option<String>,
        /// Validation items a linear model learnt from ([`VALIDATION_LEARNT`]).
        pub validation_learnt: Option<u64>,
    }

    impl TrainingData {
        /// Read from a file's scalar metadata. Files written before the data
        /// set was named list full paths in `data_files`: their names are
        /// sorted by role (`train*`, `validation*`, `test*`).
        pub fn from_metadata(meta: &[(String, String)]) -> TrainingData {
            let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let count = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok()).map(|v| v as u64);
            let mut t = TrainingData {
                train_items: count(TRAIN_ITEMS),
                data_set: get(DATA_SET).map(str::to_string),
                validation_indexed: count(VALIDATION_INDEXED),
                refitted: get(REFITTED).map(str::to_string),
                validation_learnt: count(VALIDATION_LEARNT),
                ..Default::default()
            };
            let files = get(DATA_FILES).unwrap_or("");
            let mut dirs = Vec::new();
            for path in files.split(", ").filter(|f| !f.trim().is_empty()) {
                let path = path.trim().replace('\\', "/");
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                dirs.push(dir.rsplit('/').next().unwrap_or("").to_string());
                let list = if name.starts_with("validation") {
                    &mut t.validation
                } else if name.starts_with("test") {
                    &mut t.test
                } else {
                    &mut t.train
                };
                list.push(name.to_string());
            }
            if t.data_set.is_none() {
                // The directory the files shared, else the one file's name.
                t.data_set = match (dirs.first(), t.train.as_slice()) {
                    (_, [one]) if t.validation.is_empty() && t.test.is_empty() => Some(one.clone()),
                    (Some(d), _) if !d.is_empty() && dirs.iter().all(|x| x == d) => Some(d.clone()),
                    _ => None,
                };
            }
            t
        }

        /// One line: `11662 items of the data set "all" (train.jsonl)`, and
        /// what learnt from the validation items once they had been used to
        /// measure or fit the blend.
        pub fn trained_on(&self) -> String {
            let n = self.train_items.map_or("an unknown number of".to_string(), |n| n.to_string());
            let set = self.data_set.as_ref().map(|d| format!(" of the data set \"{d}\"")).unwrap_or_default();
            let mut files = self.train.clone();
            if let Some(v) = self.validation_learnt {
                files.push(format!("the {v} validation items"));
            }
            let files = if files.is_empty() { String::new() } else { format!(" ({})", files.join(" and ")) };
            let after = match (self.validation_indexed, &self.refitted) {
                (Some(v), Some(m)) => {
                    format!("; then the {v} validation items joined the neighbour index and the members {m}")
                }
                (Some(v), None) => format!("; then the {v} validation items joined the neighbour index"),
                (None, Some(m)) => format!("; then the members {m} learnt the validation items too"),
                (None, None) => String::new(),
            };
            format!("{n} items{set}{files}{after}")
        }
    }

    /// The card's line for the recipe a file was built from
    /// (`default (sha256 8f47ba1b48e5)`), or `None` for a file made by
    /// single commands.
    pub fn built_with(meta: &[(String, String)]) -> Option<String> {
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let (name, sha) = (get(RECIPE)?, get(RECIPE_SHA256)?);
        Some(format!("{name} (sha256 {})", sha.get(..12).unwrap_or(sha)))
    }

    /// The test splits a model file has metrics for (files of one unnamed
    /// split, written before splits had names, give `[""]`).
    pub fn test_splits(f: &crate::model_file::ModelFile) -> Vec<String> {
        match f.strs(TEST_SPLITS) {
            Ok(names) => names,
            Err(_) if f.f64("pricer.test.mae").is_ok() => vec![String::new()],
            Err(_) => vec![],
        }
    }
}

/// Products run through the encoder together in `estimate_batch`.
pub const BATCH: usize = 16;

/// How a model prepares its input: the token budget and, if it has one, the tokenizer.
#[derive(Debug, Clone)]
pub struct Prep {
    pub max_tokens: usize,
    pub tokenizer: Option<TextTokenizer>,
}

impl Prep {
    pub fn budget(&self) -> Budget<'_> {
        match &self.tokenizer {
            Some(t) => Budget::Tokens(t, self.max_tokens),
            None => Budget::Words(self.max_tokens),
        }
    }

    pub fn write(&self, w: &mut ModelWriter) {
        w.set_u32(keys::MAX_TOKENS, self.max_tokens as u32);
        if let Some(t) = &self.tokenizer {
            w.set_str(keys::TOKENIZER, t.json());
        }
    }

    pub fn read(f: &ModelFile) -> Result<Prep, Error> {
        let tokenizer = f.opt_str(keys::TOKENIZER).map(TextTokenizer::from_json).transpose()?;
        Ok(Prep { max_tokens: f.u32(keys::MAX_TOKENS)? as usize, tokenizer })
    }
}

/// The fine-tuned encoder with its price head and target scaling.
pub struct NeuralPricer {
    pub model: PriceModel,
    /// Mean and standard deviation of log(1 + price) in training: the head
    /// predicts standardized values.
    pub target_mean: f64,
    pub target_std: f64,
}

/// A neural estimate in log(1 + price) space: the point, then the quantiles.
pub type LogOutputs = [f64; HEAD_OUTPUTS];

/// One product's encoder outputs and pooled vector (none when its text
/// could not be prepared).
type Encoded = Option<(LogOutputs, Vec<f32>)>;

impl NeuralPricer {
    pub fn read(f: &ModelFile) -> Result<Self, Error> {
        let cfg: Config = serde_json::from_str(f.str(keys::BERT_CONFIG)?)
            .map_err(|e| Error::ModelFile(format!("bad encoder config: {e}")))?;
        let model = PriceModel::load(f, &cfg).map_err(|e| Error::ModelFile(e.to_string()))?;
        Ok(Self { model, target_mean: f.f64(keys::TARGET_MEAN)?, target_std: f.f64(keys::TARGET_STD)? })
    }

    /// Log-space outputs and pooled vectors for token rows, run as one padded batch.
    pub fn run(&self, rows: &[Tokens], pad_id: u32) -> Result<(Vec<LogOutputs>, Vec<Vec<f32>>), Error> {
        let (ids, mask) = batch_tensors(rows, pad_id, &Device::Cpu)?;
        let pooled = self.model.encoder.pooled(&ids, &mask, None)?;
        let out = self.model.head.forward(&pooled, None)?.to_vec2::<f32>()?;
        let outputs = out
            .into_iter()
            .map(|r| {
                let mut o = [0.0; HEAD_OUTPUTS];
                for (i, v) in r.into_iter().enumerate().take(HEAD_OUTPUTS) {
                    o[i] = v as f64 * self.target_std + self.target_mean;
                }
                o
            })
            .collect();
        Ok((outputs, pooled.to_vec2::<f32>()?))
    }
}

/// Price from neural log outputs: the point estimate, with the 10th and
/// 90th percentile outputs, moved with the point to `point_log` and their
/// distance from it scaled by `band_scale`, as the range (widened to contain the point).
fn neural_estimate(point_log: f64, o: &LogOutputs, band_scale: f64) -> Estimate {
    let (lo, hi) = (o[1].min(o[3]), o[1].max(o[3]));
    let lo = point_log + band_scale * (lo - o[0]);
    let hi = point_log + band_scale * (hi - o[0]);
    let price = point_log.exp_m1().max(0.0);
    Estimate { price, low: lo.exp_m1().max(0.0).min(price), high: hi.exp_m1().max(price).min(RANGE_CAP.max(price)) }
}

/// The likely range's upper end never goes above this ($1e9): a wide band
/// of an untrained or tiny model would otherwise reach infinity, which no
/// one can read (an estimate itself above it is still an estimate).
pub const RANGE_CAP: f64 = 1e9;

/// One input of a stack's blend: a log(1 + price) estimate, or an indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The fine-tuned encoder's price head (its point output).
    Encoder,
    /// The similarity-weighted price of the nearest training items in the
    /// encoder's embedding space.
    Neighbours,
    /// The similarity-weighted price of the nearest of a shop's own priced
    /// items (added by `pricer adapt`, [`crate::adapt`]).
    OwnNeighbours,
    /// The linear model stored under this name.
    Linear(String),
    /// 1 when the product comes with a `details` object (brand, weight...),
    /// else 0: sources that carry details have another price level.
    HasDetails,
    /// Another member's value where the product has details, else 0: lets
    /// the blend weigh members differently for the two kinds of source.
    WithDetails(Box<Member>),
}

impl Member {
    pub fn name(&self) -> String {
        match self {
            Member::Encoder => "encoder".into(),
            Member::Neighbours => "knn".into(),
            Member::OwnNeighbours => "own_knn".into(),
            Member::Linear(name) => name.clone(),
            Member::HasDetails => "has_details".into(),
            Member::WithDetails(m) => format!("{}*has_details", m.name()),
        }
    }

    /// The member of a stored name: the reserved ones, else a linear model.
    pub fn from_name(name: &str) -> Member {
        if let Some(inner) = name.strip_suffix("*has_details") {
            return Member::WithDetails(Box::new(Member::from_name(inner)));
        }
        match name {
            "encoder" => Member::Encoder,
            "knn" => Member::Neighbours,
            "own_knn" => Member::OwnNeighbours,
            "has_details" => Member::HasDetails,
            other => Member::Linear(other.to_string()),
        }
    }

    /// The member whose value this one reads (itself, or the gated one).
    pub fn base(&self) -> &Member {
        match self {
            Member::WithDetails(m) => m.base(),
            m => m,
        }
    }
}

/// The name a shop's own items' index is stored under ([`Knn::write_as`]).
pub const OWN_INDEX: &str = "own";

/// Several members blended in log space: `sum(w_i * member_i) + bias`, the
/// weights fitted on validation items by `pricer export`.
pub struct Stack {
    pub neural: Option<NeuralPricer>,
    pub knn: Option<Knn>,
    /// A shop's own priced items, with their titles ([`crate::adapt`]): for
    /// comparables, and for [`Member::OwnNeighbours`] when the blend has it.
    pub own: Option<Box<Knn>>,
    pub linear: Vec<(String, LinearModel)>,
    pub members: Vec<Member>,
    /// One per member, then the bias.
    pub weights: Vec<f64>,
    /// Scale of the encoder's quantile band around the blended estimate,
    /// fitted so the range holds about 80% of validation prices.
    pub band_scale: f64,
}

/// The part of a stack an adaptation replaces: its members, their weights
/// (then the bias) and the band's scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Blend {
    pub members: Vec<Member>,
    pub weights: Vec<f64>,
    pub band_scale: f64,
}

impl Blend {
    /// The blend a file holds (a file without a band scale: 1).
    pub fn read(f: &ModelFile) -> Result<Blend, Error> {
        let members: Vec<Member> = f.strs(Stack::MEMBERS)?.iter().map(|n| Member::from_name(n)).collect();
        let weights: Vec<f64> = f.f32s(Stack::WEIGHTS)?.into_iter().map(f64::from).collect();
        if weights.len() != members.len() + 1 {
            return Err(Error::ModelFile(format!(
                "{} holds {} weights for {} members (one each, then the bias)",
                Stack::WEIGHTS,
                weights.len(),
                members.len()
            )));
        }
        Ok(Blend { members, weights, band_scale: f.f64(Stack::BAND_SCALE).unwrap_or(1.0) })
    }
}

impl Stack {
    pub const MEMBERS: &str = "pricer.stack.members";
    pub const WEIGHTS: &str = "pricer.stack.weights";
    pub const BAND_SCALE: &str = "pricer.stack.band_scale";

    pub fn read(f: &ModelFile) -> Result<Stack, Error> {
        let Blend { members, weights, band_scale } = Blend::read(f)?;
        let bases: Vec<&Member> = members.iter().map(Member::base).collect();
        let needs_encoder =
            bases.iter().any(|m| matches!(m, Member::Encoder | Member::Neighbours | Member::OwnNeighbours));
        let neural = if needs_encoder { Some(NeuralPricer::read(f)?) } else { None };
        let knn = if bases.contains(&&Member::Neighbours) { Some(Knn::read(f)?) } else { None };
        let own = if bases.contains(&&Member::OwnNeighbours) || Knn::in_file(f, OWN_INDEX) {
            let own = Knn::read_as(f, OWN_INDEX).map_err(|e| Error::ModelFile(format!("the shop's own items: {e}")))?;
            Some(Box::new(own))
        } else {
            None
        };
        let mut linear: Vec<(String, LinearModel)> = Vec::new();
        for m in &bases {
            if let Member::Linear(name) = m
                && !linear.iter().any(|(n, _)| n == name)
            {
                linear.push((name.clone(), LinearModel::read(f, name)?));
            }
        }
        Ok(Stack { neural, knn, own, linear, members, weights, band_scale })
    }

    /// The members, weights and band scale.
    pub fn blend_params(&self) -> Blend {
        Blend { members: self.members.clone(), weights: self.weights.clone(), band_scale: self.band_scale }
    }

    /// Writes the blend and the linear members and index (the encoder's
    /// weights are the caller's to write).
    pub fn write(&self, w: &mut ModelWriter) -> Result<(), Error> {
        let names: Vec<String> = self.members.iter().map(Member::name).collect();
        w.set_strs(Self::MEMBERS, &names)
            .set_f32s(Self::WEIGHTS, &self.weights.iter().map(|x| *x as f32).collect::<Vec<_>>())
            .set_f64(Self::BAND_SCALE, self.band_scale);
        for (name, lin) in &self.linear {
            lin.write(w, name)?;
        }
        if let Some(knn) = &self.knn {
            knn.write(w)?;
        }
        if let Some(own) = &self.own {
            own.write_as(w, OWN_INDEX)?;
        }
        Ok(())
    }

    /// The blend of member values (as [`Estimator::member_values`] gives them).
    pub fn blend(&self, values: &[f64]) -> f64 {
        let bias = self.weights[self.members.len()];
        values.iter().zip(&self.weights).map(|(v, w)| v * w).sum::<f64>() + bias
    }
}

/// What turns prepared text into a price.
pub enum Predictor {
    /// The same price for everything (the training median).
    Constant(f64),
    /// A linear model over hand features, words or TF-IDF.
    Linear(LinearModel),
    /// The fine-tuned encoder and price head.
    Neural(NeuralPricer),
    /// Members blended in log space.
    Stack(Stack),
}

/// One product's member values (in the stack's member order) and, when the
/// model has an encoder, its head outputs.
#[derive(Debug, Clone)]
pub struct MemberValues {
    pub values: Vec<f64>,
    pub head: Option<LogOutputs>,
    /// The encoder's pooled vector (what the neighbour index holds).
    pub pooled: Option<Vec<f32>>,
    /// The training index's items nearest to `pooled`, most similar first,
    /// as the neighbours member read them (empty when it did not): the
    /// comparables are their first, without a second scan.
    pub nearest: Vec<Neighbour>,
}

/// A loaded model of any kind.
pub struct Estimator {
    pub kind: String,
    pub prep: Prep,
    pub predictor: Predictor,
    /// Residual quantiles in log(1 + price) space that make the range.
    pub log_range: (f64, f64),
    /// The whole file, for model cards (metrics, provenance, test scatter).
    pub file: ModelFile,
}

impl Estimator {
    /// Loads any model file Pricer writes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Estimator, Error> {
        let file = ModelFile::from_bytes(bytes)?;
        let kind = file.kind()?.to_string();
        let predictor = match kind.as_str() {
            "constant" => Predictor::Constant(file.f64(keys::CONSTANT_PRICE)?),
            "features" | "bow" | "tfidf-ridge" | "details-ridge" => Predictor::Linear(LinearModel::read(&file, "")?),
            "minilm" => Predictor::Neural(NeuralPricer::read(&file)?),
            "stack" => Predictor::Stack(Stack::read(&file)?),
            // Encoder + one linear model, as the first ensembles were written.
            "ensemble" => {
                let w = file.f32s(keys::ENSEMBLE_WEIGHTS)?;
                if w.len() != 3 {
                    return Err(Error::ModelFile(format!(
                        "{} holds {} weights, not 3",
                        keys::ENSEMBLE_WEIGHTS,
                        w.len()
                    )));
                }
                Predictor::Stack(Stack {
                    neural: Some(NeuralPricer::read(&file)?),
                    knn: None,
                    own: None,
                    linear: vec![(String::new(), LinearModel::read(&file, "")?)],
                    members: vec![Member::Encoder, Member::Linear(String::new())],
                    weights: w.iter().map(|x| *x as f64).collect(),
                    band_scale: 1.0,
                })
            }
            other => return Err(Error::ModelFile(format!("unknown model kind {other:?}"))),
        };
        let prep = Prep::read(&file)?;
        if self_needs_tokenizer(&predictor) && prep.tokenizer.is_none() {
            return Err(Error::ModelFile("an encoder model needs its tokenizer (pricer.prep.tokenizer_json)".into()));
        }
        let range = |k| {
            file.f64(k).or_else(|e| {
                if matches!(predictor, Predictor::Neural(_) | Predictor::Stack(_)) { Ok(0.0) } else { Err(e) }
            })
        };
        let log_range = (range(keys::RANGE_LOW)?, range(keys::RANGE_HIGH)?);
        Ok(Estimator { kind, prep, predictor, log_range, file })
    }

    /// The fine-tuned encoder and price head, when the model has one.
    pub fn neural(&self) -> Option<&NeuralPricer> {
        match &self.predictor {
            Predictor::Neural(n) => Some(n),
            Predictor::Stack(s) => s.neural.as_ref(),
            _ => None,
        }
    }

    /// The product's model input, as the model sees it.
    pub fn prepare(&self, p: &Product) -> Result<PreparedText, Error> {
        text::prepare(p, self.prep.budget())
    }

    /// Estimates one product's price.
    pub fn estimate(&self, p: &Product) -> Result<Estimate, Error> {
        self.estimate_batch(std::slice::from_ref(p)).remove(0)
    }

    /// Estimates many products, running the encoder on batches of [`BATCH`].
    /// One product's failure (e.g. an empty description) leaves the others' estimates.
    pub fn estimate_batch(&self, products: &[Product]) -> Vec<Result<Estimate, Error>> {
        products.iter().zip(self.member_values(products)).map(|(p, v)| self.estimate_from(p, v?)).collect()
    }

    /// The estimate of a product whose member values are computed (what
    /// [`Estimator::member_values`] gave for it).
    pub fn estimate_from(&self, p: &Product, v: MemberValues) -> Result<Estimate, Error> {
        if let Some(i) = v.values.iter().position(|x| !x.is_finite()) {
            return Err(Error::Model(format!("member {i} gave a non-finite value (NaN or infinity): no estimate")));
        }
        let e = self.unchecked_estimate(p, v)?;
        if !(e.price.is_finite() && e.low.is_finite() && e.high.is_finite()) {
            return Err(Error::Model(format!(
                "the model gave a non-finite estimate ({} in {}..{}): no price",
                e.price, e.low, e.high
            )));
        }
        Ok(e)
    }

    fn unchecked_estimate(&self, p: &Product, v: MemberValues) -> Result<Estimate, Error> {
        Ok(match &self.predictor {
            Predictor::Constant(c) => with_range(*c, self.log_range),
            Predictor::Linear(m) => with_range(m.price(p, &text::model_input(p, self.prep.budget())?), self.log_range),
            Predictor::Neural(_) => {
                let o = v.head.ok_or_else(|| Error::Model("no encoder output".into()))?;
                neural_estimate(o[0], &o, 1.0)
            }
            Predictor::Stack(s) => {
                let blended = s.blend(&v.values);
                match v.head {
                    Some(o) => neural_estimate(blended, &o, s.band_scale),
                    None => with_range(blended.exp_m1().max(0.0), self.log_range),
                }
            }
        })
    }

    /// Each product's stack member values and encoder outputs, the encoder run
    /// on batches of [`BATCH`]. For a model that is not a stack the values are empty.
    pub fn member_values(&self, products: &[Product]) -> Vec<Result<MemberValues, Error>> {
        let mut out = Vec::with_capacity(products.len());
        for chunk in products.chunks(BATCH) {
            let inputs: Vec<Result<String, Error>> =
                chunk.iter().map(|p| text::model_input(p, self.prep.budget())).collect();
            match self.chunk_values(chunk, inputs) {
                Ok(r) => out.extend(r),
                Err(e) => out.extend(chunk.iter().map(|_| Err(Error::Model(e.to_string())))),
            }
        }
        out
    }

    /// Member values of products whose model inputs are given (the encoder
    /// run on them as one batch).
    pub(crate) fn chunk_values(
        &self,
        ps: &[Product],
        inputs: Vec<Result<String, Error>>,
    ) -> Result<Vec<Result<MemberValues, Error>>, Error> {
        // Encoder outputs and pooled vectors for the products that prepared cleanly.
        let mut encoded: Vec<Encoded> = vec![None; ps.len()];
        if let Some(n) = self.neural() {
            let tok = self.prep.tokenizer.as_ref().expect("checked at load");
            let max_len = (self.prep.max_tokens + 2).min(n.model.encoder.config.max_position_embeddings);
            let mut rows = Vec::new();
            let mut which = Vec::new();
            for (i, input) in inputs.iter().enumerate() {
                if let Ok(t) = input {
                    rows.push(tok.encode(t, max_len)?);
                    which.push(i);
                }
            }
            if !rows.is_empty() {
                let (outputs, pooled) = n.run(&rows, tok.pad_id())?;
                for ((i, o), v) in which.into_iter().zip(outputs).zip(pooled) {
                    encoded[i] = Some((o, v));
                }
            }
        }
        let one = |((p, input), enc): ((&Product, Result<String, Error>), Encoded)| {
            let input = input?;
            let head = enc.as_ref().map(|(o, _)| *o);
            let Predictor::Stack(s) = &self.predictor else {
                return Ok(MemberValues { values: vec![], head, pooled: enc.map(|(_, v)| v), nearest: vec![] });
            };
            let nearest = match (&s.knn, &enc) {
                (Some(knn), Some((_, pooled))) if s.members.iter().any(|m| *m.base() == Member::Neighbours) => {
                    knn.nearest(pooled, knn.reads())
                }
                _ => vec![],
            };
            let has_details = p.details.as_ref().is_some_and(|d| !d.is_empty()) as u8 as f64;
            let value = |m: &Member| -> Result<f64, Error> {
                let need_encoder = || enc.as_ref().ok_or_else(|| Error::Model("no encoder output".into()));
                Ok(match m {
                    Member::Encoder => need_encoder()?.0[0],
                    Member::Neighbours => {
                        let knn = s.knn.as_ref().ok_or_else(|| Error::Model("no neighbour index".into()))?;
                        need_encoder()?;
                        // What `knn.log_estimate` gives, from the scan above.
                        knn.log_estimate_among(&nearest, |_| true).unwrap_or(0.0)
                    }
                    Member::OwnNeighbours => {
                        let own = s.own.as_ref().ok_or_else(|| Error::Model("no index of own items".into()))?;
                        own.log_estimate(&need_encoder()?.1)
                    }
                    Member::Linear(name) => {
                        let lin = s.linear.iter().find(|(n, _)| n == name).map(|(_, l)| l);
                        lin.ok_or_else(|| Error::Model(format!("no linear member {name:?}")))?.log_price(p, &input)
                    }
                    Member::HasDetails => has_details,
                    Member::WithDetails(_) => unreachable!("gated members are read through their base"),
                })
            };
            // Each base member is computed once, however many gated copies read it.
            let mut cache: Vec<(&Member, f64)> = Vec::new();
            let mut values = Vec::with_capacity(s.members.len());
            for m in &s.members {
                let base = m.base();
                let v = match cache.iter().find(|(b, _)| *b == base) {
                    Some((_, v)) => *v,
                    None => {
                        let v = value(base)?;
                        cache.push((base, v));
                        v
                    }
                };
                values.push(if matches!(m, Member::WithDetails(_)) { v * has_details } else { v });
            }
            Ok(MemberValues { values, head, pooled: enc.map(|(_, v)| v), nearest })
        };
        // The products' members (the neighbours' scans above all) go to
        // rayon's pool where there is one (natively one thread per core;
        // the browser's threaded worker); each product's values are
        // computed alike whichever thread computes them.
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        {
            use rayon::prelude::*;
            Ok(ps.par_iter().zip(inputs).zip(encoded).map(one).collect())
        }
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        Ok(ps.iter().zip(inputs).zip(encoded).map(one).collect())
    }
}

fn self_needs_tokenizer(p: &Predictor) -> bool {
    match p {
        Predictor::Neural(_) => true,
        Predictor::Stack(s) => s.neural.is_some(),
        _ => false,
    }
}

/// An estimate whose range is the price shifted by residual quantiles in log space.
pub fn with_range(price: f64, (lo, hi): (f64, f64)) -> Estimate {
    let l = price.max(0.0).ln_1p();
    Estimate { price, low: (l + lo).exp_m1().max(0.0), high: (l + hi).exp_m1().min(RANGE_CAP.max(price)) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_card_names_the_training_split_and_the_data_set_not_the_machines_paths() {
        let meta = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        // As the round-2 default model wrote it: every file of the curate
        // directory, as the training machine named them (here with Windows separators).
        let old = keys::TrainingData::from_metadata(&meta(&[
            (keys::TRAIN_ITEMS, "11662"),
            (
                keys::DATA_FILES,
                "C:\\work\\data\\all\\test-catalog.jsonl, C:\\work\\data\\all\\test-course.jsonl, \
                 C:\\work\\data\\all\\train.jsonl, C:\\work\\data\\all\\validation-catalog.jsonl, \
                 C:\\work\\data\\all\\validation.jsonl",
            ),
        ]));
        assert_eq!(old.train_items, Some(11662));
        assert_eq!(old.data_set.as_deref(), Some("all"));
        assert_eq!(old.train, ["train.jsonl"]);
        assert_eq!(old.validation, ["validation-catalog.jsonl", "validation.jsonl"]);
        assert_eq!(old.test, ["test-catalog.jsonl", "test-course.jsonl"]);
        let line = old.trained_on();
        assert_eq!(line, "11662 items of the data set \"all\" (train.jsonl)");
        assert!(!line.contains("work") && !line.contains("test"), "{line}");
        // A single file split with a holdout: the file is the data set.
        let one = keys::TrainingData::from_metadata(&meta(&[(keys::DATA_FILES, "exports/shop.csv")]));
        assert_eq!(one.data_set.as_deref(), Some("shop.csv"));
        assert_eq!(one.trained_on(), "an unknown number of items of the data set \"shop.csv\" (shop.csv)");
        // A named data set wins over the directory.
        let named = keys::TrainingData::from_metadata(&meta(&[
            (keys::DATA_SET, "amazon-2023"),
            (keys::DATA_FILES, "d/train.jsonl"),
        ]));
        assert_eq!(named.data_set.as_deref(), Some("amazon-2023"));
        // What learnt from the validation items after the blend was fitted, and a member that did.
        let stack = keys::TrainingData::from_metadata(&meta(&[
            (keys::TRAIN_ITEMS, "12080"),
            (keys::DATA_FILES, "train.jsonl, validation.jsonl"),
            (keys::VALIDATION_INDEXED, "1455"),
            (keys::REFITTED, "word, details"),
        ]));
        assert_eq!(
            stack.trained_on(),
            "12080 items (train.jsonl); then the 1455 validation items joined the neighbour index and the members \
             word, details"
        );
        let member = keys::TrainingData::from_metadata(&meta(&[
            (keys::TRAIN_ITEMS, "13535"),
            (keys::DATA_FILES, "d/train.jsonl, d/validation.jsonl"),
            (keys::VALIDATION_LEARNT, "1455"),
        ]));
        assert_eq!(
            member.trained_on(),
            "13535 items of the data set \"d\" (train.jsonl and the 1455 validation items)"
        );
    }

    #[test]
    fn the_card_names_the_recipe_of_a_built_file() {
        let meta = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let sha = "8f47ba1b48e5c0ffee00000000000000000000000000000000000000000000ab";
        let built = meta(&[(keys::RECIPE, "default"), (keys::RECIPE_SHA256, sha), (keys::RECIPE_TEXT, "base = 1")]);
        assert_eq!(keys::built_with(&built).as_deref(), Some("default (sha256 8f47ba1b48e5)"));
        assert_eq!(keys::built_with(&meta(&[(keys::TRAIN_ITEMS, "3")])), None);
    }

    use super::*;

    fn constant_file(price: f64) -> Vec<u8> {
        let mut w = ModelWriter::new("constant");
        w.set_f64(keys::CONSTANT_PRICE, price).set_f64(keys::RANGE_LOW, -0.5).set_f64(keys::RANGE_HIGH, 0.5);
        Prep { max_tokens: 10, tokenizer: None }.write(&mut w);
        w.to_bytes().unwrap()
    }

    #[test]
    fn constant_model_estimates_with_a_range() {
        let e = Estimator::from_bytes(&constant_file(40.0)).unwrap();
        let est = e.estimate(&Product::from_free_text("Anything\nat all")).unwrap();
        assert_eq!(est.price, 40.0);
        assert!(est.low < 40.0 && est.high > 40.0);
        assert!((est.low - ((41f64).ln() - 0.5).exp_m1()).abs() < 1e-9);
    }

    #[test]
    fn empty_product_is_an_error_not_an_estimate() {
        let e = Estimator::from_bytes(&constant_file(40.0)).unwrap();
        assert!(matches!(e.estimate(&Product::from_free_text("   ")), Err(Error::EmptyProduct)));
    }

    fn stack_file(weights: Vec<f64>) -> Vec<u8> {
        use crate::baselines::Featurizer;
        let bow = |words: &[&str], w: Vec<f32>| {
            let f = Featurizer::Bow { vocab: words.iter().map(|s| s.to_string()).collect() };
            LinearModel::new(f, w, 1.0, true).unwrap()
        };
        let stack = Stack {
            neural: None,
            knn: None,
            own: None,
            linear: vec![
                ("words".into(), bow(&["gold", "steel"], vec![2.0, 0.5])),
                ("size".into(), bow(&["big"], vec![1.0])),
            ],
            members: vec![Member::Linear("words".into()), Member::Linear("size".into()), Member::HasDetails],
            weights,
            band_scale: 1.0,
        };
        let mut w = ModelWriter::new("stack");
        stack.write(&mut w).unwrap();
        w.set_f64(keys::RANGE_LOW, -0.2).set_f64(keys::RANGE_HIGH, 0.3);
        Prep { max_tokens: 50, tokenizer: None }.write(&mut w);
        w.to_bytes().unwrap()
    }

    #[test]
    fn a_stack_blends_its_members_in_log_space() {
        let e = Estimator::from_bytes(&stack_file(vec![0.5, 0.25, 0.7, 0.1])).unwrap();
        let mut p = Product::from_free_text("big gold ring\ngold");
        // words: 1 + 2 * 2 = 5 (log space); size: 1 + 1 = 2; no details.
        let values = e.member_values(std::slice::from_ref(&p)).remove(0).unwrap().values;
        assert_eq!(values, vec![5.0, 2.0, 0.0]);
        let want = 0.5 * 5.0 + 0.25 * 2.0 + 0.1;
        let est = e.estimate(&p).unwrap();
        // Weights are stored as f32.
        assert!((est.price / f64::exp_m1(want) - 1.0).abs() < 1e-6, "{est:?}");
        assert!(est.low < est.price && est.price < est.high);
        // With details, the indicator member adds its weight.
        p.details = serde_json::from_str(r#"{"Brand": "Acme"}"#).unwrap();
        assert!((e.estimate(&p).unwrap().price / f64::exp_m1(want + 0.7) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_stack_with_the_wrong_number_of_weights_is_refused() {
        let err = Estimator::from_bytes(&stack_file(vec![0.5, 0.25])).err().unwrap().to_string();
        assert!(err.contains("2 weights for 3 members"), "{err}");
    }

    #[test]
    fn unknown_kind_is_refused() {
        let mut w = ModelWriter::new("oracle");
        let err = Estimator::from_bytes(&w.to_bytes().unwrap()).err().unwrap().to_string();
        assert!(err.contains("unknown model kind"), "{err}");
    }
}
