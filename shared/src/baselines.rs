//! The linear baselines' inputs: hand features, bag of words, TF-IDF.
//!
//! Every baseline is a linear model over sparse features; only the
//! featurizer differs. Fitting lives in the trainer; this is what a fitted
//! model needs to estimate, natively and in the browser.

use crate::model_file::{ModelFile, ModelWriter};
use crate::{Error, Product};
use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Sparse feature vector: (index, value) pairs, indices unique.
pub type Sparse = Vec<(u32, f32)>;

/// Words as scikit-learn's default token pattern sees them: 2+ word
/// characters, lowercased.
pub fn words(text: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\b\w\w+\b").expect("valid regex"));
    let lower = text.to_lowercase();
    re.find_iter(&lower).map(|m| m.as_str().to_string()).collect()
}

/// Words, then (when `bigrams`) every pair of neighbouring words.
pub fn terms(text: &str, bigrams: bool) -> Vec<String> {
    let w = words(text);
    let mut out = w.clone();
    if bigrams {
        out.extend(w.windows(2).map(|p| format!("{} {}", p[0], p[1])));
    }
    out
}

/// The item's weight in pounds, from `Item Weight` (or `Weight`) in details.
pub fn weight_lb(p: &Product) -> Option<f64> {
    let raw = p.detail("Item Weight").or_else(|| p.detail("Weight"))?;
    let lower = raw.to_lowercase();
    let mut parts = lower.split_whitespace();
    let amount: f64 = parts.next()?.replace(',', "").parse().ok()?;
    let unit = parts.next().unwrap_or("pounds");
    let factor = if unit.starts_with("pound") || unit.starts_with("lb") {
        1.0
    } else if unit.starts_with("ounce") || unit.starts_with("oz") {
        1.0 / 16.0
    } else if unit.starts_with("kilo") || unit == "kg" {
        2.20462
    } else if unit.starts_with("gram") || unit == "g" {
        0.00220462
    } else if unit.starts_with("milligram") || unit == "mg" {
        2.20462e-6
    } else {
        return None;
    };
    Some(amount * factor).filter(|w| w.is_finite() && *w >= 0.0)
}

/// Mean of the best-sellers ranks listed in details.
pub fn mean_rank(p: &Product) -> Option<f64> {
    let ranks = p.details.as_ref()?.get("Best Sellers Rank")?.as_object()?;
    let vals: Vec<f64> = ranks.values().filter_map(|v| v.as_f64()).collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// The brand from details (`Brand`, else `Manufacturer`), trimmed.
pub fn brand(p: &Product) -> Option<String> {
    p.detail("Brand").or_else(|| p.detail("Manufacturer")).map(|b| b.trim().to_string()).filter(|b| !b.is_empty())
}

/// Every `details` entry as `key value` text, nested objects flattened.
pub fn details_text(p: &Product) -> String {
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push_str(k);
                out.push(' ');
                walk(v, out);
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            other => {
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    if let Some(d) = &p.details {
        walk(&serde_json::Value::Object(d.clone()), &mut out);
    }
    out
}

/// Turns a product and its prepared text into features.
#[derive(Debug, Clone, PartialEq)]
pub enum Featurizer {
    /// The course's hand features: text length, weight, best-sellers rank,
    /// then one-hot brands and categories seen often in training.
    Hand { brands: Vec<String>, categories: Vec<String>, weight_mean: f32, log_rank_mean: f32 },
    /// Word counts over a fixed vocabulary.
    Bow { vocab: Vec<String> },
    /// TF-IDF of words and word pairs, L2-normalised (scikit-learn's defaults);
    /// with `details`, the text is followed by every `details` entry; with
    /// `sublinear`, a term's count c weighs 1 + ln(c) (scikit-learn's `sublinear_tf`).
    Tfidf { vocab: Vec<String>, idf: Vec<f32>, bigrams: bool, details: bool, sublinear: bool },
}

/// Number of leading dense features of [`Featurizer::Hand`].
pub const HAND_DENSE: usize = 5;

impl Featurizer {
    pub fn dim(&self) -> usize {
        match self {
            Featurizer::Hand { brands, categories, .. } => HAND_DENSE + brands.len() + categories.len(),
            Featurizer::Bow { vocab } | Featurizer::Tfidf { vocab, .. } => vocab.len(),
        }
    }

    /// Features of one product whose model input is `text`.
    pub fn features(&self, p: &Product, text: &str, index: &VocabIndex) -> Sparse {
        match self {
            Featurizer::Hand { brands, categories, weight_mean, log_rank_mean } => {
                let w = weight_lb(p).map(|w| w.ln_1p() as f32);
                let r = mean_rank(p).map(|r| r.ln_1p() as f32);
                let mut f: Sparse = vec![
                    (0, text.chars().count() as f32 / 1000.0),
                    (1, w.unwrap_or(*weight_mean)),
                    (2, w.is_none() as u8 as f32),
                    (3, r.unwrap_or(*log_rank_mean)),
                    (4, r.is_none() as u8 as f32),
                ];
                let b = brand(p).map(|b| b.to_lowercase());
                if let Some(i) = b.and_then(|b| brands.iter().position(|x| *x == b)) {
                    f.push(((HAND_DENSE + i) as u32, 1.0));
                }
                if let Some(i) = p.category.as_ref().and_then(|c| categories.iter().position(|x| x == c)) {
                    f.push(((HAND_DENSE + brands.len() + i) as u32, 1.0));
                }
                f
            }
            Featurizer::Bow { .. } => counts(&terms(text, false), index).into_iter().collect(),
            Featurizer::Tfidf { idf, bigrams, details, sublinear, .. } => {
                let text = if *details { format!("{text}\n{}", details_text(p)) } else { text.to_string() };
                let tf = |c: f32| if *sublinear { 1.0 + c.ln() } else { c };
                let mut f: Sparse = counts(&terms(&text, *bigrams), index)
                    .into_iter()
                    .map(|(i, c)| (i, tf(c) * idf[i as usize]))
                    .collect();
                let norm = f.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    f.iter_mut().for_each(|(_, v)| *v /= norm);
                }
                f.sort_by_key(|(i, _)| *i);
                f
            }
        }
    }

    /// A lookup from term to column, for the vocabulary kinds.
    pub fn index(&self) -> VocabIndex {
        match self {
            Featurizer::Bow { vocab } | Featurizer::Tfidf { vocab, .. } => {
                VocabIndex(vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect())
            }
            Featurizer::Hand { .. } => VocabIndex(HashMap::new()),
        }
    }

    /// Writes the featurizer under `member`'s keys (see [`member_key`]).
    pub fn write(&self, w: &mut ModelWriter, member: &str) -> Result<(), Error> {
        let k = |key: &str| member_key(member, key);
        match self {
            Featurizer::Hand { brands, categories, weight_mean, log_rank_mean } => {
                w.set_str(&k("features.kind"), "hand")
                    .set_strs(&k("features.brands"), brands)
                    .set_strs(&k("features.categories"), categories)
                    .set_f64(&k("features.weight_mean"), *weight_mean as f64)
                    .set_f64(&k("features.log_rank_mean"), *log_rank_mean as f64);
            }
            Featurizer::Bow { vocab } => {
                w.set_str(&k("features.kind"), "bow").set_strs(&k("features.vocab"), vocab);
            }
            Featurizer::Tfidf { vocab, idf, bigrams, details, sublinear } => {
                w.set_str(&k("features.kind"), "tfidf")
                    .set_strs(&k("features.vocab"), vocab)
                    .set_u32(&k("features.max_n"), if *bigrams { 2 } else { 1 })
                    .set_u32(&k("features.details"), *details as u32)
                    .set_u32(&k("features.sublinear"), *sublinear as u32);
                w.add_f32(&member_tensor(member, "features.idf"), idf)?;
            }
        }
        Ok(())
    }

    pub fn read(f: &ModelFile, member: &str) -> Result<Featurizer, Error> {
        let k = |key: &str| member_key(member, key);
        Ok(match f.str(&k("features.kind"))? {
            "hand" => Featurizer::Hand {
                brands: f.strs(&k("features.brands"))?,
                categories: f.strs(&k("features.categories"))?,
                weight_mean: f.f64(&k("features.weight_mean"))? as f32,
                log_rank_mean: f.f64(&k("features.log_rank_mean"))? as f32,
            },
            "bow" => Featurizer::Bow { vocab: f.strs(&k("features.vocab"))? },
            "tfidf" => {
                let vocab = f.strs(&k("features.vocab"))?;
                let idf = f.tensor_f32(&member_tensor(member, "features.idf"))?;
                if idf.len() != vocab.len() {
                    return Err(Error::ModelFile(format!("idf has {} values for {} terms", idf.len(), vocab.len())));
                }
                Featurizer::Tfidf {
                    vocab,
                    idf,
                    bigrams: f.u32(&k("features.max_n"))? >= 2,
                    details: f.u32(&k("features.details")).unwrap_or(0) == 1,
                    sublinear: f.u32(&k("features.sublinear")).unwrap_or(0) == 1,
                }
            }
            other => return Err(Error::ModelFile(format!("unknown features kind {other:?}"))),
        })
    }
}

/// The metadata key of a linear model's `key`: `pricer.KEY` for a model file
/// of one linear model (`member` empty), `pricer.MEMBER.KEY` for a member of a stack.
pub fn member_key(member: &str, key: &str) -> String {
    if member.is_empty() { format!("pricer.{key}") } else { format!("pricer.{member}.{key}") }
}

/// The tensor name of a linear model's `name`, prefixed like [`member_key`].
pub fn member_tensor(member: &str, name: &str) -> String {
    if member.is_empty() { name.to_string() } else { format!("{member}.{name}") }
}

/// Term to column index.
#[derive(Debug, Clone, Default)]
pub struct VocabIndex(pub HashMap<String, u32>);

fn counts(terms: &[String], index: &VocabIndex) -> HashMap<u32, f32> {
    let mut c = HashMap::new();
    for t in terms {
        if let Some(&i) = index.0.get(t) {
            *c.entry(i).or_insert(0.0) += 1.0;
        }
    }
    c
}

/// A fitted linear model over a featurizer's output.
#[derive(Debug, Clone)]
pub struct LinearModel {
    pub featurizer: Featurizer,
    index: VocabIndex,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// True when the model predicts log(1 + price) rather than the price.
    pub log_target: bool,
}

impl LinearModel {
    pub fn new(featurizer: Featurizer, weights: Vec<f32>, bias: f32, log_target: bool) -> Result<Self, Error> {
        if weights.len() != featurizer.dim() {
            return Err(Error::Model(format!("{} weights for {} features", weights.len(), featurizer.dim())));
        }
        let index = featurizer.index();
        Ok(Self { featurizer, index, weights, bias, log_target })
    }

    pub fn features(&self, p: &Product, text: &str) -> Sparse {
        self.featurizer.features(p, text, &self.index)
    }

    /// The model's raw output (log price or price).
    pub fn raw(&self, p: &Product, text: &str) -> f64 {
        let s: f64 = self.features(p, text).iter().map(|(i, v)| (self.weights[*i as usize] * v) as f64).sum();
        s + self.bias as f64
    }

    /// The estimated price in dollars, never negative.
    pub fn price(&self, p: &Product, text: &str) -> f64 {
        let r = self.raw(p, text);
        let price = if self.log_target { r.exp_m1() } else { r };
        price.max(0.0)
    }

    /// The model's estimate in log(1 + price) space, whatever its target.
    pub fn log_price(&self, p: &Product, text: &str) -> f64 {
        if self.log_target { self.raw(p, text) } else { self.price(p, text).ln_1p() }
    }

    /// Writes the model under `member`'s keys (empty: a file of this model alone).
    pub fn write(&self, w: &mut ModelWriter, member: &str) -> Result<(), Error> {
        self.featurizer.write(w, member)?;
        w.add_f32(&member_tensor(member, "linear.weight"), &self.weights)?;
        w.set_f64(&member_key(member, "linear.bias"), self.bias as f64);
        w.set_str(&member_key(member, "target"), if self.log_target { "log1p" } else { "price" });
        Ok(())
    }

    pub fn read(f: &ModelFile, member: &str) -> Result<Self, Error> {
        let log_target = match f.str(&member_key(member, "target"))? {
            "log1p" => true,
            "price" => false,
            other => return Err(Error::ModelFile(format!("unknown target {other:?}"))),
        };
        LinearModel::new(
            Featurizer::read(f, member)?,
            f.tensor_f32(&member_tensor(member, "linear.weight"))?,
            f.f64(&member_key(member, "linear.bias"))? as f32,
            log_target,
        )
        .map_err(|e| Error::ModelFile(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_sklearn_token_pattern() {
        assert_eq!(words("A USB-C cable, 2m; Ünïcode x"), vec!["usb", "cable", "2m", "ünïcode"]);
        assert_eq!(terms("red fast car", true), vec!["red", "fast", "car", "red fast", "fast car"]);
    }

    #[test]
    fn details_parsing() {
        let mut p = Product {
            details: serde_json::from_str(
                r#"{"Item Weight": "12 Ounces", "Best Sellers Rank": {"Tools": 100, "Drills": 300}, "Brand": " DeWalt "}"#,
            )
            .unwrap(),
            ..Default::default()
        };
        assert_eq!(weight_lb(&p), Some(0.75));
        assert_eq!(mean_rank(&p), Some(200.0));
        assert_eq!(brand(&p).as_deref(), Some("DeWalt"));
        p.details = serde_json::from_str(r#"{"Item Weight": "2 kilograms"}"#).unwrap();
        assert!((weight_lb(&p).unwrap() - 4.40924).abs() < 1e-6);
        p.details = serde_json::from_str(r#"{"Item Weight": "heavy"}"#).unwrap();
        assert_eq!(weight_lb(&p), None);
    }

    #[test]
    fn tfidf_is_l2_normalised_and_weighted_by_idf() {
        let f = Featurizer::Tfidf {
            vocab: vec!["red".into(), "car".into(), "red car".into()],
            idf: vec![1.0, 2.0, 3.0],
            bigrams: true,
            details: false,
            sublinear: false,
        };
        let feats = f.features(&Product::default(), "red car red", &f.index());
        // counts: red 2, car 1, "red car" 1 -> 2, 2, 3 -> norm sqrt(17)
        let n = 17f32.sqrt();
        assert_eq!(feats, vec![(0, 2.0 / n), (1, 2.0 / n), (2, 3.0 / n)]);
        // Sublinear: red's count 2 weighs 1 + ln 2.
        let Featurizer::Tfidf { vocab, idf, .. } = f else { unreachable!() };
        let f = Featurizer::Tfidf { vocab, idf, bigrams: true, details: false, sublinear: true };
        let feats = f.features(&Product::default(), "red car red", &f.index());
        let red = 1.0 + 2f32.ln();
        let n = (red * red + 4.0 + 9.0).sqrt();
        assert_eq!(feats, vec![(0, red / n), (1, 2.0 / n), (2, 3.0 / n)]);
    }

    #[test]
    fn details_join_the_text_when_asked() {
        let p = Product {
            details: serde_json::from_str(r#"{"Brand": "Acme", "Rank": {"Tools": 5}}"#).unwrap(),
            ..Default::default()
        };
        assert_eq!(details_text(&p), "Brand Acme\nRank Tools 5\n");
        let vocab = vec!["acme".to_string(), "red".to_string()];
        let f = Featurizer::Tfidf {
            vocab: vocab.clone(),
            idf: vec![1.0, 1.0],
            bigrams: false,
            details: true,
            sublinear: false,
        };
        assert_eq!(f.features(&p, "red", &f.index()).len(), 2);
        let f = Featurizer::Tfidf { vocab, idf: vec![1.0, 1.0], bigrams: false, details: false, sublinear: false };
        assert_eq!(f.features(&p, "red", &f.index()).len(), 1);
    }

    #[test]
    fn linear_model_predicts_and_checks_sizes() {
        let f = Featurizer::Bow { vocab: vec!["steel".into(), "gold".into()] };
        let m = LinearModel::new(f.clone(), vec![1.0, 10.0], 0.5, false).unwrap();
        assert_eq!(m.price(&Product::default(), "gold steel gold"), 21.5);
        let m = LinearModel::new(f.clone(), vec![0.0, 0.0], 1.0, true).unwrap();
        assert!((m.price(&Product::default(), "x") - (1f64.exp() - 1.0)).abs() < 1e-9);
        assert!(LinearModel::new(f, vec![1.0], 0.0, false).is_err());
    }
}
