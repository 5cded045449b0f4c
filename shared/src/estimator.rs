//! The estimate: what the trainer, the CLI and the browser all call.
//!
//! An [`Estimator`] is loaded from one model file of any kind; it prepares a
//! product's text with [`crate::text::prepare`] and returns an [`Estimate`].

use crate::baselines::LinearModel;
use crate::bert::{Config, HEAD_OUTPUTS, PriceModel, batch_tensors};
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
    pub const RANGE_LOW: &str = "pricer.range.log_low";
    pub const RANGE_HIGH: &str = "pricer.range.log_high";
    pub const BERT_CONFIG: &str = "pricer.bert.config";
    pub const TARGET_MEAN: &str = "pricer.target.mean";
    pub const TARGET_STD: &str = "pricer.target.std";
    pub const QUANTILES: &str = "pricer.quantiles";
    pub const ENSEMBLE_WEIGHTS: &str = "pricer.ensemble.weights";
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

impl NeuralPricer {
    pub fn read(f: &ModelFile) -> Result<Self, Error> {
        let cfg: Config = serde_json::from_str(f.str(keys::BERT_CONFIG)?)
            .map_err(|e| Error::ModelFile(format!("bad encoder config: {e}")))?;
        let model = PriceModel::load(f, &cfg).map_err(|e| Error::ModelFile(e.to_string()))?;
        Ok(Self { model, target_mean: f.f64(keys::TARGET_MEAN)?, target_std: f.f64(keys::TARGET_STD)? })
    }

    /// Log-space outputs for token rows, run as one padded batch.
    pub fn outputs(&self, rows: &[Tokens], pad_id: u32) -> Result<Vec<LogOutputs>, Error> {
        let (ids, mask) = batch_tensors(rows, pad_id, &Device::Cpu)?;
        let out = self.model.forward(&ids, &mask, None)?.to_vec2::<f32>()?;
        Ok(out
            .into_iter()
            .map(|r| {
                let mut o = [0.0; HEAD_OUTPUTS];
                for (i, v) in r.into_iter().enumerate().take(HEAD_OUTPUTS) {
                    o[i] = v as f64 * self.target_std + self.target_mean;
                }
                o
            })
            .collect())
    }
}

/// Price from neural log outputs: the point estimate, with the 10th and
/// 90th percentile outputs as the range (widened to contain the point).
fn neural_estimate(point_log: f64, o: &LogOutputs) -> Estimate {
    let (lo, hi) = (o[1].min(o[3]), o[1].max(o[3]));
    let price = point_log.exp_m1().max(0.0);
    Estimate { price, low: lo.exp_m1().max(0.0).min(price), high: hi.exp_m1().max(price) }
}

/// What turns prepared text into a price.
pub enum Predictor {
    /// The same price for everything (the training median).
    Constant(f64),
    /// A linear model over hand features, words or TF-IDF.
    Linear(LinearModel),
    /// The fine-tuned encoder and price head.
    Neural(NeuralPricer),
    /// Encoder and linear model blended in log space:
    /// `w0 * neural + w1 * linear + w2`, weights fitted on validation.
    Ensemble { neural: NeuralPricer, linear: LinearModel, weights: [f64; 3] },
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
            "constant" => Predictor::Constant(file.f64("pricer.constant.price")?),
            "features" | "bow" | "tfidf-ridge" => Predictor::Linear(LinearModel::read(&file)?),
            "minilm" => Predictor::Neural(NeuralPricer::read(&file)?),
            "ensemble" => {
                let w = file.f32s(keys::ENSEMBLE_WEIGHTS)?;
                if w.len() != 3 {
                    return Err(Error::ModelFile(format!(
                        "{} holds {} weights, not 3",
                        keys::ENSEMBLE_WEIGHTS,
                        w.len()
                    )));
                }
                Predictor::Ensemble {
                    neural: NeuralPricer::read(&file)?,
                    linear: LinearModel::read(&file)?,
                    weights: [w[0] as f64, w[1] as f64, w[2] as f64],
                }
            }
            other => return Err(Error::ModelFile(format!("unknown model kind {other:?}"))),
        };
        let prep = Prep::read(&file)?;
        if matches!(predictor, Predictor::Neural(_) | Predictor::Ensemble { .. }) && prep.tokenizer.is_none() {
            return Err(Error::ModelFile("an encoder model needs its tokenizer (pricer.prep.tokenizer_json)".into()));
        }
        let range = |k| {
            file.f64(k).or_else(|_| {
                if matches!(predictor, Predictor::Constant(_) | Predictor::Linear(_)) { file.f64(k) } else { Ok(0.0) }
            })
        };
        let log_range = (range(keys::RANGE_LOW)?, range(keys::RANGE_HIGH)?);
        Ok(Estimator { kind, prep, predictor, log_range, file })
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
        let mut out = Vec::with_capacity(products.len());
        for chunk in products.chunks(BATCH) {
            let inputs: Vec<Result<String, Error>> =
                chunk.iter().map(|p| text::model_input(p, self.prep.budget())).collect();
            match self.estimate_prepared(chunk, inputs) {
                Ok(r) => out.extend(r),
                Err(e) => out.extend(chunk.iter().map(|_| Err(Error::Model(e.to_string())))),
            }
        }
        out
    }

    fn estimate_prepared(
        &self,
        ps: &[Product],
        inputs: Vec<Result<String, Error>>,
    ) -> Result<Vec<Result<Estimate, Error>>, Error> {
        let neural = match &self.predictor {
            Predictor::Neural(n) | Predictor::Ensemble { neural: n, .. } => Some(n),
            _ => None,
        };
        // Encoder outputs for the products that prepared cleanly.
        let mut logs: Vec<Option<LogOutputs>> = vec![None; ps.len()];
        if let Some(n) = neural {
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
                for (i, o) in which.into_iter().zip(n.outputs(&rows, tok.pad_id())?) {
                    logs[i] = Some(o);
                }
            }
        }
        Ok(ps
            .iter()
            .zip(inputs)
            .zip(logs)
            .map(|((p, input), log)| {
                let input = input?;
                Ok(match (&self.predictor, log) {
                    (Predictor::Constant(c), _) => with_range(*c, self.log_range),
                    (Predictor::Linear(m), _) => with_range(m.price(p, &input), self.log_range),
                    (Predictor::Neural(_), Some(o)) => neural_estimate(o[0], &o),
                    (Predictor::Ensemble { linear, weights, .. }, Some(o)) => {
                        let lin = linear.price(p, &input).ln_1p();
                        let blended = weights[0] * o[0] + weights[1] * lin + weights[2];
                        let shift = blended - o[0];
                        let shifted = [blended, o[1] + shift, o[2] + shift, o[3] + shift];
                        neural_estimate(blended, &shifted)
                    }
                    (_, None) => return Err(Error::Model("no encoder output".into())),
                })
            })
            .collect())
    }
}

/// An estimate whose range is the price shifted by residual quantiles in log space.
pub fn with_range(price: f64, (lo, hi): (f64, f64)) -> Estimate {
    let l = price.max(0.0).ln_1p();
    Estimate { price, low: (l + lo).exp_m1().max(0.0), high: (l + hi).exp_m1() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant_file(price: f64) -> Vec<u8> {
        let mut w = ModelWriter::new("constant");
        w.set_f64("pricer.constant.price", price).set_f64(keys::RANGE_LOW, -0.5).set_f64(keys::RANGE_HIGH, 0.5);
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

    #[test]
    fn unknown_kind_is_refused() {
        let mut w = ModelWriter::new("oracle");
        let err = Estimator::from_bytes(&w.to_bytes().unwrap()).err().unwrap().to_string();
        assert!(err.contains("unknown model kind"), "{err}");
    }
}
