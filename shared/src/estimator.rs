//! The estimate: what the trainer, the CLI and the browser all call.
//!
//! An [`Estimator`] is loaded from one model file of any kind; it prepares a
//! product's text with [`crate::text::prepare`] and returns an [`Estimate`].

use crate::baselines::LinearModel;
use crate::model_file::{ModelFile, ModelWriter};
use crate::text::{self, Budget, PreparedText};
use crate::{Error, Product, TextTokenizer};
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
}

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

/// What turns prepared text into a price.
#[derive(Debug, Clone)]
pub enum Predictor {
    /// The same price for everything (the training median).
    Constant(f64),
    /// A linear model over hand features, words or TF-IDF.
    Linear(LinearModel),
}

impl Predictor {
    fn price(&self, p: &Product, text: &str) -> f64 {
        match self {
            Predictor::Constant(c) => *c,
            Predictor::Linear(m) => m.price(p, text),
        }
    }
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
            other => return Err(Error::ModelFile(format!("unknown model kind {other:?}"))),
        };
        let prep = Prep::read(&file)?;
        let log_range = (file.f64(keys::RANGE_LOW)?, file.f64(keys::RANGE_HIGH)?);
        Ok(Estimator { kind, prep, predictor, log_range, file })
    }

    /// The product's model input, as the model sees it.
    pub fn prepare(&self, p: &Product) -> Result<PreparedText, Error> {
        text::prepare(p, self.prep.budget())
    }

    /// Estimates one product's price.
    pub fn estimate(&self, p: &Product) -> Result<Estimate, Error> {
        let input = text::model_input(p, self.prep.budget())?;
        let price = self.predictor.price(p, &input);
        Ok(with_range(price, self.log_range))
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
        w.set_f64("pricer.constant.price", price)
            .set_f64(keys::RANGE_LOW, -0.5)
            .set_f64(keys::RANGE_HIGH, 0.5);
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
