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
    let lower = text.to_lowercase();
    word_regex().find_iter(&lower).map(|m| m.as_str().to_string()).collect()
}

fn word_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b\w\w+\b").expect("valid regex"))
}

/// `text` with every occurrence of `word` (as [`words`] finds it,
/// lowercased) taken out; the rest of the text unchanged.
pub fn without_word(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in word_regex().find_iter(text) {
        if m.as_str().to_lowercase() == word {
            out.push_str(&text[last..m.start()]);
            last = m.end();
        }
    }
    out.push_str(&text[last..]);
    out
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

/// The item's volume from `Product Dimensions` (or the package's or item's
/// LxWxH): the product of the first three numbers, whatever their unit.
pub fn volume(p: &Product) -> Option<f64> {
    let raw = ["Product Dimensions", "Package Dimensions", "Item Dimensions LxWxH", "Item Dimensions  LxWxH"]
        .iter()
        .find_map(|k| p.detail(k))?;
    let dims = raw.split(';').next().unwrap_or("");
    let nums: Vec<f64> =
        dims.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|s| s.parse::<f64>().ok()).take(3).collect();
    (nums.len() == 3).then(|| nums.iter().product::<f64>()).filter(|v| v.is_finite())
}

/// The best (lowest) best-sellers rank listed in details.
pub fn best_rank(p: &Product) -> Option<f64> {
    let ranks = p.details.as_ref()?.get("Best Sellers Rank")?.as_object()?;
    ranks.values().filter_map(|v| v.as_f64()).reduce(f64::min)
}

/// The year of `Date First Available`.
pub fn year_first_available(p: &Product) -> Option<f64> {
    let raw = p.detail("Date First Available")?;
    raw.split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 4)
        .filter_map(|w| w.parse::<f64>().ok())
        .find(|y| (1950.0..2100.0).contains(y))
}

/// Number of leading dense features of [`Featurizer::Details`].
pub const DETAILS_DENSE: usize = 9;

/// What one feature of a linear model stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureLabel {
    /// A word, or two neighbouring words joined by a space.
    Term(String),
    /// A field of the product's details (weight, brand...).
    Field(String),
}

/// Turns a product and its prepared text into features.
#[derive(Debug, Clone, PartialEq)]
pub enum Featurizer {
    /// The course's hand features: text length, weight, best-sellers rank,
    /// then one-hot brands and categories seen often in training.
    Hand { brands: Vec<String>, categories: Vec<String>, weight_mean: f32, log_rank_mean: f32 },
    /// The `details` fields kept apart, for a model of their own: whether
    /// there are any, then log weight, log volume, log best-sellers rank and
    /// the year first available (each with a missing-value flag), then
    /// one-hot brands and categories seen in training.
    Details { brands: Vec<String>, categories: Vec<String> },
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
            Featurizer::Details { brands, categories } => DETAILS_DENSE + brands.len() + categories.len(),
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
            Featurizer::Details { brands, categories } => {
                let has = p.details.as_ref().is_some_and(|d| !d.is_empty());
                let mut f: Sparse = vec![(0, has as u8 as f32)];
                let fields = [
                    weight_lb(p).map(|w| (w * 453.592).ln_1p()),
                    volume(p).map(f64::ln_1p),
                    best_rank(p).map(f64::ln_1p),
                    year_first_available(p).map(|y| (y - 2015.0) / 5.0),
                ];
                for (i, v) in fields.into_iter().enumerate() {
                    match v {
                        Some(v) => f.push((1 + 2 * i as u32, v as f32)),
                        None => f.push((2 + 2 * i as u32, 1.0)),
                    }
                }
                let b = brand(p).map(|b| b.to_lowercase());
                if let Some(i) = b.and_then(|b| brands.binary_search(&b).ok()) {
                    f.push(((DETAILS_DENSE + i) as u32, 1.0));
                }
                if let Some(i) = p.category.as_ref().and_then(|c| categories.iter().position(|x| x == c)) {
                    f.push(((DETAILS_DENSE + brands.len() + i) as u32, 1.0));
                }
                f
            }
            Featurizer::Bow { .. } => counts(&terms(text, false), index),
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
                f
            }
        }
    }

    /// What feature `i` stands for: a term of the text, or a field of the
    /// product (a value and its missing-value flag share one field name).
    pub fn feature_label(&self, i: usize) -> FeatureLabel {
        let field = |s: &str| FeatureLabel::Field(s.to_string());
        let one_hot = |dense: usize, brands: &[String], categories: &[String]| match i - dense {
            b if b < brands.len() => FeatureLabel::Field(format!("brand: {}", brands[b])),
            c => FeatureLabel::Field(format!("category: {}", categories.get(c - brands.len()).map_or("?", |s| s))),
        };
        match self {
            Featurizer::Hand { brands, categories, .. } => match i {
                0 => field("text length"),
                1 | 2 => field("weight"),
                3 | 4 => field("best-sellers rank"),
                _ => one_hot(HAND_DENSE, brands, categories),
            },
            Featurizer::Details { brands, categories } => match i {
                0 => field("has details"),
                1 | 2 => field("weight"),
                3 | 4 => field("volume"),
                5 | 6 => field("best-sellers rank"),
                7 | 8 => field("year first available"),
                _ => one_hot(DETAILS_DENSE, brands, categories),
            },
            Featurizer::Bow { vocab } | Featurizer::Tfidf { vocab, .. } => {
                FeatureLabel::Term(vocab.get(i).cloned().unwrap_or_default())
            }
        }
    }

    /// A lookup from term to column, for the vocabulary kinds.
    pub fn index(&self) -> VocabIndex {
        match self {
            Featurizer::Bow { vocab } | Featurizer::Tfidf { vocab, .. } => {
                VocabIndex(vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect())
            }
            Featurizer::Hand { .. } | Featurizer::Details { .. } => VocabIndex(HashMap::new()),
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
            Featurizer::Details { brands, categories } => {
                w.set_str(&k("features.kind"), "details")
                    .set_strs(&k("features.brands"), brands)
                    .set_strs(&k("features.categories"), categories);
            }
            Featurizer::Bow { vocab } => {
                w.set_str(&k("features.kind"), "bow");
                write_vocab(w, member, vocab);
            }
            Featurizer::Tfidf { vocab, idf, bigrams, details, sublinear } => {
                write_vocab(w, member, vocab);
                w.set_str(&k("features.kind"), "tfidf")
                    .set_u32(&k("features.max_n"), if *bigrams { 2 } else { 1 })
                    .set_u32(&k("features.details"), *details as u32)
                    .set_u32(&k("features.sublinear"), *sublinear as u32);
                add_vector(w, member, "features.idf", idf)?;
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
            "details" => {
                let brands = f.strs(&k("features.brands"))?;
                if !brands.is_sorted() {
                    return Err(Error::ModelFile("details brands are not sorted".into()));
                }
                Featurizer::Details { brands, categories: f.strs(&k("features.categories"))? }
            }
            "bow" => Featurizer::Bow { vocab: read_vocab(f, member)? },
            "tfidf" => {
                let vocab = read_vocab(f, member)?;
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

/// Stores a vocabulary as one text of newline-separated terms (terms are
/// words and word pairs, never holding a newline): a GGUF string array
/// spends 8 bytes of length on each term, a fifth of a large vocabulary.
fn write_vocab(w: &mut ModelWriter, member: &str, vocab: &[String]) {
    w.set_str(&member_key(member, "features.vocab_text"), &vocab.join("\n"));
}

/// Reads a vocabulary written by [`write_vocab`], or as a string array (older files).
fn read_vocab(f: &ModelFile, member: &str) -> Result<Vec<String>, Error> {
    match f.opt_str(&member_key(member, "features.vocab_text")) {
        Some("") => Ok(vec![]),
        Some(text) => Ok(text.split('\n').map(str::to_string).collect()),
        None => f.strs(&member_key(member, "features.vocab")),
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

/// Writes one of a linear model's vectors: f32 in a file of its own, f16 as
/// a member of a stack, where the encoder dominates the file's size budget
/// (log estimates move by about 1e-4; a test bounds it).
fn add_vector(w: &mut ModelWriter, member: &str, name: &str, v: &[f32]) -> Result<(), Error> {
    let name = member_tensor(member, name);
    if member.is_empty() {
        w.add_f32(&name, v)?
    } else {
        w.add_f16(&name, v)?
    };
    Ok(())
}

/// Term to column index.
#[derive(Debug, Clone, Default)]
pub struct VocabIndex(pub HashMap<String, u32>);

/// Each known term's count, in column order: sums over the features then
/// run in one order on every run (a hash map's order changes from run to
/// run, and with it the last bits of a float sum).
fn counts(terms: &[String], index: &VocabIndex) -> Sparse {
    let mut c: Vec<(u32, f32)> = terms.iter().filter_map(|t| index.0.get(t).map(|&i| (i, 1.0))).collect();
    c.sort_unstable_by_key(|(i, _)| *i);
    c.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            kept.1 += 1.0;
        }
        same
    });
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
        add_vector(w, member, "linear.weight", &self.weights)?;
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
    fn vocabularies_round_trip_as_text_and_old_files_still_read() {
        let vocab: Vec<String> = ["red", "red car", "ünï"].iter().map(|s| s.to_string()).collect();
        let f = Featurizer::Tfidf {
            vocab: vocab.clone(),
            idf: vec![1.0, 2.0, 3.0],
            bigrams: true,
            details: false,
            sublinear: true,
        };
        let mut w = ModelWriter::new("test");
        f.write(&mut w, "word").unwrap();
        let file = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(Featurizer::read(&file, "word").unwrap(), f);
        let mut w = ModelWriter::new("test");
        w.set_str("pricer.features.kind", "bow").set_strs("pricer.features.vocab", &vocab);
        let file = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(Featurizer::read(&file, "").unwrap(), Featurizer::Bow { vocab });
    }

    #[test]
    fn details_features_parse_weight_volume_rank_year_brand() {
        let p = Product {
            category: Some("Appliances".into()),
            details: serde_json::from_str(
                r#"{"Item Weight": "2 pounds", "Product Dimensions": "10 x 2 x 3 inches; 2 Pounds",
                    "Best Sellers Rank": {"Home": 5000, "Fans": 30}, "Date First Available": "May 3, 2021",
                    "Brand": "Acme"}"#,
            )
            .unwrap(),
            ..Default::default()
        };
        assert_eq!((volume(&p), best_rank(&p), year_first_available(&p)), (Some(60.0), Some(30.0), Some(2021.0)));
        let f =
            Featurizer::Details { brands: vec!["acme".into(), "zeta".into()], categories: vec!["Appliances".into()] };
        let x = f.features(&p, "", &f.index());
        let ln = |v: f64| v.ln_1p() as f32;
        assert_eq!(
            x,
            vec![(0, 1.0), (1, ln(2.0 * 453.592)), (3, ln(60.0)), (5, ln(30.0)), (7, 1.2), (9, 1.0), (11, 1.0)]
        );
        assert_eq!(f.dim(), 12);
        // Nothing known: the flags say so.
        let x = f.features(&Product::default(), "", &f.index());
        assert_eq!(x, vec![(0, 0.0), (2, 1.0), (4, 1.0), (6, 1.0), (8, 1.0)]);
    }

    #[test]
    fn a_stacked_member_stores_f16_vectors_and_estimates_within_1e_3() {
        let vocab: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let idf: Vec<f32> = (0..200).map(|i| 1.0 + (i as f32 * 0.0371).sin().abs() * 7.0).collect();
        let f = Featurizer::Tfidf { vocab, idf, bigrams: false, details: false, sublinear: true };
        let weights: Vec<f32> = (0..200).map(|i| (i as f32 * 0.731).cos() * 0.8).collect();
        let model = LinearModel::new(f, weights, 3.1, true).unwrap();
        let text: String = (0..200).step_by(3).map(|i| format!("w{i} ")).collect();
        let p = Product::default();
        let mut sizes = vec![];
        for member in ["", "word"] {
            let mut w = ModelWriter::new("test");
            model.write(&mut w, member).unwrap();
            let bytes = w.to_bytes().unwrap();
            sizes.push(bytes.len());
            let back = LinearModel::read(&ModelFile::from_bytes(&bytes).unwrap(), member).unwrap();
            let diff = (back.log_price(&p, &text) - model.log_price(&p, &text)).abs();
            // f32 sums in hash order differ in the last bits.
            assert!(diff < if member.is_empty() { 1e-6 } else { 1e-3 }, "{member:?}: {diff}");
        }
        assert!(sizes[1] < sizes[0] - 700, "{sizes:?}");
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
