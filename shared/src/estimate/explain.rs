//! Why an estimate is what it is: the training items most like the product
//! (comparables, with their prices) and the words and details that moved
//! its price, computed by the same code in the CLI and the browser.
//!
//! The estimate in log(1 + price) space is split exactly:
//! `ln(1 + typical) + sum(words) + sum(details) + rest`, where
//! - `typical` is the model's estimate with every member at its neutral
//!   value (linear members on an empty product, the encoder and the
//!   neighbours at the training mean log price);
//! - a word's weight is its linear terms' exact share (tf-idf value x
//!   coefficient x the member's blend weight; a word pair's share split
//!   between its two words) plus, for the words occluded, how much the
//!   encoder and neighbour members drop when the word is taken out of the text;
//! - `rest` is what the encoder and neighbours read from the text as a whole.

use crate::baselines::{FeatureLabel, LinearModel, without_word, words};
use crate::estimator::{Member, MemberValues, Predictor};
use crate::knn::{Knn, Neighbour};
use crate::text;
use crate::{Error, Estimate, Estimator, Product};
use serde::{Deserialize, Serialize};

/// A training item near the product in the encoder's embedding space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparable {
    pub title: String,
    pub category: Option<String>,
    pub price: f64,
    /// Cosine similarity of the two products' embeddings.
    pub similarity: f32,
    /// One of the shop's own items (an adapted model's), not a training item.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub yours: bool,
}

/// How much one word or detail moved the estimate, in log(1 + price):
/// `exp(weight)` is the factor it applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub label: String,
    pub weight: f64,
    /// The part of `weight` the encoder and neighbours gave (by occlusion).
    pub encoder: f64,
}

/// An estimate with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub estimate: Estimate,
    /// The price of a product the model knows nothing particular about.
    pub typical: f64,
    /// Words of the product, most influential first.
    pub words: Vec<Attribution>,
    /// Fields of the product's details (brand, weight...), most influential first.
    pub details: Vec<Attribution>,
    /// What the encoder and neighbours read from the text as a whole, beyond
    /// the occluded words.
    pub rest: f64,
    /// The nearest training items, most similar first.
    pub comparables: Vec<Comparable>,
    /// What the words and details alone say ([`Estimator::first_estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<f64>,
}

/// Words shown each way (raising, lowering) by the page and the CLI.
pub const TOP_WORDS: usize = 5;

/// How much to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainOptions {
    /// Comparable products to list.
    pub comparables: usize,
    /// Words to take out of the text one at a time for the encoder's share
    /// (each costs one more encoder pass).
    pub occlude: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions { comparables: 5, occlude: 6 }
    }
}

impl Explanation {
    /// Up to `n` words that raised the estimate most (largest first), then up
    /// to `n` that lowered it most (most negative last).
    pub fn top_words(&self, n: usize) -> Vec<&Attribution> {
        let mut up: Vec<&Attribution> = self.words.iter().filter(|a| a.weight > 0.0).collect();
        let mut down: Vec<&Attribution> = self.words.iter().filter(|a| a.weight < 0.0).collect();
        up.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        down.sort_by(|a, b| a.weight.total_cmp(&b.weight));
        up.truncate(n);
        down.truncate(n);
        down.reverse();
        up.into_iter().chain(down).collect()
    }

    /// The sum the parts must add up to: the blended estimate in log(1 + price).
    pub fn total(&self) -> f64 {
        self.typical.ln_1p()
            + self.words.iter().map(|a| a.weight).sum::<f64>()
            + self.details.iter().map(|a| a.weight).sum::<f64>()
            + self.rest
    }
}

/// An explanation under way ([`Estimator::start_explaining`]): everything
/// but the encoder's share of the words still to occlude. It holds no borrow
/// of the model, so it can wait between passes; pass the same model to each
/// step.
#[derive(Debug, Clone)]
pub struct Explaining {
    product: Product,
    /// The model input the estimate read.
    input: String,
    /// The encoder and neighbour members' share of the whole text's estimate.
    whole: f64,
    /// The blended estimate in log(1 + price).
    log_point: f64,
    /// ln(1 + typical price).
    typical: f64,
    words: Vec<Attribution>,
    details: Vec<Attribution>,
    /// Words to take out of the text one at a time, and how many are done.
    chosen: Vec<String>,
    done: usize,
    estimate: Estimate,
    comparables: Vec<Comparable>,
    first: Option<f64>,
}

impl Explaining {
    /// Words still to occlude (one encoder pass each).
    pub fn pending(&self) -> usize {
        self.chosen.len() - self.done
    }

    /// The estimate itself (known from the start).
    pub fn estimate(&self) -> &Estimate {
        &self.estimate
    }

    /// Measures the encoder's share of up to `n` more words, in one batched
    /// encoder pass; `est` must be the model that started the explanation.
    pub fn occlude_next(&mut self, est: &Estimator, n: usize) -> Result<(), Error> {
        let end = (self.done + n.max(1)).min(self.chosen.len());
        let batch: Vec<String> = self.chosen[self.done..end].to_vec();
        if batch.is_empty() {
            return Ok(());
        }
        let blend = est.blend_of(&self.product);
        let inputs: Vec<Result<String, Error>> = batch.iter().map(|w| Ok(without_word(&self.input, w))).collect();
        let repeated = vec![self.product.clone(); batch.len()];
        for (w, v) in batch.iter().zip(est.chunk_values(&repeated, inputs)?) {
            // A text the encoder cannot read without the word gets no share for it.
            let Ok(v) = v else { continue };
            let delta = self.whole - blend.encoder_part(est, &v);
            match self.words.iter_mut().find(|a| &a.label == w) {
                Some(a) => {
                    a.weight += delta;
                    a.encoder += delta;
                }
                None => self.words.push(Attribution { label: w.clone(), weight: delta, encoder: delta }),
            }
        }
        self.done = end;
        Ok(())
    }

    /// The explanation as far as it got: words not yet occluded keep their
    /// linear share, and the encoder's share of them stays in `rest`.
    pub fn explanation(&self) -> Explanation {
        let mut words: Vec<Attribution> = self.words.iter().filter(|a| a.weight != 0.0).cloned().collect();
        words.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
        let explained = words.iter().chain(&self.details).map(|a| a.weight).sum::<f64>();
        Explanation {
            estimate: self.estimate,
            typical: self.typical.exp_m1().max(0.0),
            words,
            details: self.details.clone(),
            rest: self.log_point - self.typical - explained,
            comparables: self.comparables.clone(),
            first: self.first,
        }
    }
}

/// A model seen as `constant + encoder x e + knn x k + sum(w x linear)` for
/// one product (the has-details gates applied).
struct Blend<'a> {
    constant: f64,
    encoder: f64,
    knn: f64,
    /// The shop's own items' neighbour member's weight, and their mean log price.
    own: f64,
    own_mean: f64,
    linear: Vec<(&'a LinearModel, f64)>,
}

impl Blend<'_> {
    /// The encoder and neighbour members' share of the estimate.
    fn encoder_part(&self, est: &Estimator, v: &MemberValues) -> f64 {
        let Predictor::Stack(s) = &est.predictor else {
            return self.encoder * v.head.map_or(0.0, |h| h[0]);
        };
        // Gated members' values already carry their has-details factor.
        s.members
            .iter()
            .zip(&v.values)
            .zip(&s.weights)
            .filter(|((m, _), _)| matches!(m.base(), Member::Encoder | Member::Neighbours | Member::OwnNeighbours))
            .map(|((_, v), w)| v * w)
            .sum::<f64>()
    }
}

impl Estimator {
    fn blend_of(&self, p: &Product) -> Blend<'_> {
        let mut b = Blend { constant: 0.0, encoder: 0.0, knn: 0.0, own: 0.0, own_mean: 0.0, linear: vec![] };
        match &self.predictor {
            Predictor::Constant(c) => b.constant = c.max(0.0).ln_1p(),
            Predictor::Linear(m) if m.log_target => b.linear.push((m, 1.0)),
            Predictor::Linear(_) => {}
            Predictor::Neural(_) => b.encoder = 1.0,
            Predictor::Stack(s) => {
                let has = p.details.as_ref().is_some_and(|d| !d.is_empty()) as u8 as f64;
                b.constant = s.weights[s.members.len()];
                b.own_mean = s.own.as_ref().map_or(0.0, |k| k.mean_log_price());
                for (m, w) in s.members.iter().zip(&s.weights) {
                    let w = if matches!(m, Member::WithDetails(_)) { w * has } else { *w };
                    match m.base() {
                        Member::Encoder => b.encoder += w,
                        Member::Neighbours => b.knn += w,
                        Member::OwnNeighbours => b.own += w,
                        Member::HasDetails => b.constant += w * has,
                        Member::Linear(name) => {
                            let Some((_, lin)) = s.linear.iter().find(|(n, _)| n == name) else { continue };
                            match b.linear.iter_mut().find(|(l, _)| std::ptr::eq(*l, lin)) {
                                Some((_, total)) => *total += w,
                                None => b.linear.push((lin, w)),
                            }
                        }
                        Member::WithDetails(_) => unreachable!("a base member is never gated"),
                    }
                }
            }
        }
        b
    }

    /// The training items' index and the shop's own items' index.
    fn indexes(&self) -> (Option<&Knn>, Option<&Knn>) {
        match &self.predictor {
            Predictor::Stack(s) => (s.knn.as_ref(), s.own.as_deref()),
            _ => (None, None),
        }
    }

    /// Estimates one product and says why: comparables, the words and details
    /// that moved the price, and what the encoder read as a whole.
    pub fn explain(&self, p: &Product, opts: ExplainOptions) -> Result<Explanation, Error> {
        let mut x = self.start_explaining(p, opts)?;
        while x.pending() > 0 {
            x.occlude_next(self, crate::estimator::BATCH)?;
        }
        Ok(x.explanation())
    }

    /// The explanation a step at a time: the estimate, comparables and the
    /// linear members' exact shares from one encoder pass now, the encoder's
    /// share of each chosen word later ([`Explaining::occlude_next`]), so a
    /// caller can stop between passes (the page does when a newer request
    /// comes).
    pub fn start_explaining(&self, p: &Product, opts: ExplainOptions) -> Result<Explaining, Error> {
        let input = text::model_input(p, self.prep.budget())?;
        let values = self.chunk_values(std::slice::from_ref(p), vec![Ok(input.clone())])?.remove(0)?;
        let blend = self.blend_of(p);
        let target_mean = self.neural().map_or(0.0, |n| n.target_mean);
        let log_point = match &self.predictor {
            Predictor::Stack(s) => s.blend(&values.values),
            Predictor::Neural(_) => values.head.map_or(0.0, |h| h[0]),
            Predictor::Linear(m) => m.log_price(p, &input),
            Predictor::Constant(c) => c.max(0.0).ln_1p(),
        };
        let estimate = self.estimate_from(p, values.clone())?;

        // Linear members: each feature's exact share against the empty product.
        let empty = Product::default();
        let mut typical = blend.constant + (blend.encoder + blend.knn) * target_mean + blend.own * blend.own_mean;
        let mut by_word: Vec<(String, f64)> = Vec::new();
        let mut by_field: Vec<(String, f64)> = Vec::new();
        for (lin, w) in &blend.linear {
            typical += w * lin.log_price(&empty, "");
            let mut x: std::collections::BTreeMap<u32, (f32, f32)> = Default::default();
            for (i, v) in lin.features(p, &input) {
                x.entry(i).or_default().0 = v;
            }
            for (i, v) in lin.features(&empty, "") {
                x.entry(i).or_default().1 = v;
            }
            for (i, (v, v0)) in x {
                let share = w * (lin.weights[i as usize] * (v - v0)) as f64;
                if share == 0.0 {
                    continue;
                }
                match lin.featurizer.feature_label(i as usize) {
                    FeatureLabel::Term(t) => match t.split_once(' ') {
                        Some((a, b)) => {
                            add(&mut by_word, a, share / 2.0);
                            add(&mut by_word, b, share / 2.0);
                        }
                        None => add(&mut by_word, &t, share),
                    },
                    FeatureLabel::Field(f) => add(&mut by_field, &f, share),
                }
            }
        }
        let mut words_out: Vec<Attribution> =
            by_word.into_iter().map(|(label, weight)| Attribution { label, weight, encoder: 0.0 }).collect();

        // The words whose encoder share is measured by occlusion: the most
        // influential linear words first, then the title's, then the text's.
        let mut chosen: Vec<String> = Vec::new();
        if (blend.encoder != 0.0 || blend.knn != 0.0 || blend.own != 0.0) && opts.occlude > 0 {
            let in_text = words(&input);
            words_out.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
            let by_weight = words_out.iter().map(|a| a.label.clone());
            let title_words = words(&p.title);
            for w in by_weight.chain(title_words).chain(in_text.iter().cloned()) {
                if chosen.len() >= opts.occlude {
                    break;
                }
                if in_text.contains(&w) && !chosen.contains(&w) {
                    chosen.push(w);
                }
            }
        }
        let mut details: Vec<Attribution> =
            by_field.into_iter().map(|(label, weight)| Attribution { label, weight, encoder: 0.0 }).collect();
        details.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));

        if blend.linear.is_empty() && blend.encoder == 0.0 && blend.knn == 0.0 && blend.own == 0.0 {
            // Nothing to take apart (a constant, or a model of the price itself).
            typical = log_point;
        }
        let comparables = match (self.indexes(), &values.pooled) {
            ((knn, own), Some(pooled)) if opts.comparables > 0 => {
                let mut near: Vec<Comparable> = knn
                    .map(|k| comparables_among(k, known_nearest(k, pooled, &values.nearest, opts.comparables)))
                    .unwrap_or_default();
                // The shop's own items compete with the training items on similarity.
                if let Some(own) = own {
                    near.extend(
                        comparables(own, pooled, opts.comparables).into_iter().map(|c| Comparable { yours: true, ..c }),
                    );
                    near.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
                    near.truncate(opts.comparables);
                }
                near
            }
            _ => vec![],
        };
        let first = self.first_estimate(p)?;
        Ok(Explaining {
            product: p.clone(),
            input,
            whole: blend.encoder_part(self, &values),
            log_point,
            typical,
            words: words_out,
            details,
            chosen,
            done: 0,
            estimate,
            comparables,
            first,
        })
    }

    /// Whether [`Estimator::first_estimate`] answers: a stack with an encoder
    /// and at least one linear member.
    pub fn gives_first_estimate(&self) -> bool {
        match &self.predictor {
            Predictor::Stack(s) => s.neural.is_some() && !s.linear.is_empty(),
            _ => false,
        }
    }

    /// A first estimate from the linear members alone (words and details),
    /// the encoder's and neighbours' shares held at the training mean log
    /// price: well under a millisecond, so the page shows it while the
    /// encoder runs. `None` for a model that is not a stack of an encoder and
    /// linear members (its full estimate is as quick, or there is nothing to
    /// say before the encoder has read the text).
    pub fn first_estimate(&self, p: &Product) -> Result<Option<f64>, Error> {
        let Some(neural) = self.neural().filter(|_| self.gives_first_estimate()) else { return Ok(None) };
        let blend = self.blend_of(p);
        let input = text::model_input(p, self.prep.budget())?;
        let linear: f64 = blend.linear.iter().map(|(lin, w)| w * lin.log_price(p, &input)).sum();
        let log =
            blend.constant + (blend.encoder + blend.knn) * neural.target_mean + blend.own * blend.own_mean + linear;
        let price = log.exp_m1().max(0.0);
        if !price.is_finite() {
            return Err(Error::Model(format!("the first estimate is not finite ({price}): no price")));
        }
        Ok(Some(price))
    }
}

fn add(list: &mut Vec<(String, f64)>, label: &str, v: f64) {
    match list.iter_mut().find(|(l, _)| l == label) {
        Some((_, total)) => *total += v,
        None => list.push((label.to_string(), v)),
    }
}

/// The `k` items of `knn` nearest to `pooled`: the first `k` of `known`
/// (the index's nearest to `pooled` already found, most similar first)
/// when it holds as many and no NaN similarity, which is then what a scan
/// for `k` would give; else a scan.
fn known_nearest(knn: &Knn, pooled: &[f32], known: &[Neighbour], k: usize) -> Vec<Neighbour> {
    if known.len() >= k && known.iter().all(|n| !n.similarity.is_nan()) {
        known[..k].to_vec()
    } else {
        knn.nearest(pooled, k)
    }
}

/// The `k` indexed items nearest to `pooled`, with titles when the index has them.
pub fn comparables(knn: &Knn, pooled: &[f32], k: usize) -> Vec<Comparable> {
    comparables_among(knn, knn.nearest(pooled, k))
}

/// Items of `knn` (nearest first) as comparables, with titles when the index has them.
fn comparables_among(knn: &Knn, near: Vec<Neighbour>) -> Vec<Comparable> {
    let Some(labels) = &knn.labels else { return vec![] };
    near.into_iter()
        .map(|n| Comparable {
            title: labels.titles[n.index].clone(),
            category: labels.category(n.index).map(str::to_string),
            price: knn.price(n.index),
            similarity: n.similarity,
            yours: false,
        })
        // A price beyond f64 (a log price of an absurd item) is no comparable.
        .filter(|c| c.price.is_finite() && c.similarity.is_finite())
        .collect()
}

/// The similarity-weighted median of the comparables' prices (negative
/// similarities weigh nothing; all zero: the plain median).
pub fn weighted_median_price(items: &[Comparable]) -> Option<f64> {
    if items.is_empty() {
        return None;
    }
    let mut by_price: Vec<(f64, f64)> = items.iter().map(|c| (c.price, c.similarity.max(0.0) as f64)).collect();
    by_price.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = by_price.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return Some(by_price[by_price.len() / 2].0);
    }
    let mut seen = 0.0;
    for (price, w) in &by_price {
        seen += w;
        if seen >= total / 2.0 {
            return Some(*price);
        }
    }
    by_price.last().map(|(p, _)| *p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::TextTokenizer;
    use crate::baselines::Featurizer;
    use crate::bert::{Config, PriceModel, TrainableWeights};
    use crate::estimator::{Prep, Stack, keys};
    use crate::knn::ItemLabels;
    use crate::model_file::ModelWriter;
    use crate::tokenizer::wordpiece_json;
    use candle_core::Device;
    use candle_core::quantized::{GgmlDType, QTensor};

    fn bow(words: &[&str], w: Vec<f32>, bias: f32) -> LinearModel {
        let f = Featurizer::Bow { vocab: words.iter().map(|s| s.to_string()).collect() };
        LinearModel::new(f, w, bias, true).unwrap()
    }

    /// A stack of two linear members, the details member and the flag:
    /// everything is linear, so every share is known by hand.
    fn linear_stack() -> Estimator {
        let details = LinearModel::new(
            Featurizer::Details { brands: vec!["acme".into()], categories: vec![] },
            vec![0.3, 0.1, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8],
            2.0,
            true,
        )
        .unwrap();
        let stack = Stack {
            neural: None,
            knn: None,
            own: None,
            linear: vec![
                ("words".into(), bow(&["gold", "steel", "gold ring"], vec![2.0, 0.5, 0.0], 1.0)),
                ("size".into(), bow(&["big"], vec![1.0], 1.0)),
                ("details".into(), details),
            ],
            members: vec![
                Member::Linear("words".into()),
                Member::Linear("size".into()),
                Member::Linear("details".into()),
                Member::WithDetails(Box::new(Member::Linear("words".into()))),
                Member::HasDetails,
            ],
            weights: vec![0.5, 0.25, 1.0, 0.1, 0.7, 0.1],
            band_scale: 1.0,
        };
        let mut w = ModelWriter::new("stack");
        stack.write(&mut w).unwrap();
        w.set_f64(keys::RANGE_LOW, -0.2).set_f64(keys::RANGE_HIGH, 0.3);
        Prep { max_tokens: 50, tokenizer: None }.write(&mut w);
        Estimator::from_bytes(&w.to_bytes().unwrap()).unwrap()
    }

    fn weight_of<'a>(list: &'a [Attribution], label: &str) -> Option<&'a Attribution> {
        list.iter().find(|a| a.label == label)
    }

    #[test]
    fn linear_shares_are_exact_and_add_up_to_the_estimate() {
        let est = linear_stack();
        let p = Product::from_free_text("big gold ring\ngold");
        let x = est.explain(&p, ExplainOptions::default()).unwrap();
        // words: gold twice x 2.0 x 0.5 = 2.0; size: big x 1.0 x 0.25.
        assert!((weight_of(&x.words, "gold").unwrap().weight - 2.0).abs() < 1e-6, "{x:?}");
        assert!((weight_of(&x.words, "big").unwrap().weight - 0.25).abs() < 1e-6);
        assert!(weight_of(&x.words, "ring").is_none(), "a zero coefficient moves nothing");
        // Typical: biases at their weights, the details member on an empty
        // product (bias 2.0 + missing weight -0.2 + missing others 0), then the stack's bias.
        let want_typical = 0.5 * 1.0 + 0.25 * 1.0 + 1.0 * (2.0 - 0.2) + 0.1;
        // Linear members are stored as f16 in a stack.
        assert!((x.typical.ln_1p() - want_typical).abs() < 1e-3, "{}", x.typical.ln_1p());
        assert!(x.details.is_empty() && x.rest.abs() < 1e-6, "{x:?}");
        assert!((x.total() - x.estimate.price.ln_1p()).abs() < 1e-6);
        assert_eq!(x.estimate, est.estimate(&p).unwrap());
        // Raising words first, largest first.
        let top: Vec<&str> = x.top_words(5).iter().map(|a| a.label.as_str()).collect();
        assert_eq!(top, vec!["gold", "big"]);
    }

    #[test]
    fn details_fields_and_the_details_gate_are_shared_out() {
        let est = linear_stack();
        let mut p = Product::from_free_text("steel gold ring");
        p.details = serde_json::from_str(r#"{"Brand": "Acme", "Item Weight": "2 pounds"}"#).unwrap();
        let x = est.explain(&p, ExplainOptions::default()).unwrap();
        // With details the words member weighs 0.5 + 0.1.
        assert!((weight_of(&x.words, "steel").unwrap().weight - 0.6 * 0.5).abs() < 1e-6);
        let gold = weight_of(&x.words, "gold").unwrap().weight;
        assert!((gold - 0.6 * 2.0).abs() < 1e-6, "{gold}");
        let brand = weight_of(&x.details, "brand: acme").unwrap().weight;
        assert!((brand - 0.8).abs() < 1e-3, "{brand}");
        let has = weight_of(&x.details, "has details").unwrap().weight;
        assert!((has - 0.3).abs() < 1e-3);
        // Weight: its value (0.1 x ln(1 + grams)) and its missing flag no longer set (+0.2).
        let grams = 2.0 * 453.592f64;
        let weight = weight_of(&x.details, "weight").unwrap().weight;
        assert!((weight - (0.1 * grams.ln_1p() + 0.2)).abs() < 1e-3, "{weight}");
        // The flag's own weight (0.7) and the gated words' bias count as typical.
        assert!((x.total() - x.estimate.price.ln_1p()).abs() < 1e-6, "{x:?}");
        assert!(x.rest.abs() < 1e-6);
    }

    /// A stack of a tiny random encoder, its head and a titled neighbour index.
    pub(crate) fn neural_stack(
        members: Vec<Member>,
        weights: Vec<f64>,
        linear: Vec<(String, LinearModel)>,
    ) -> Estimator {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "steel", "blender", "usb", "cable", "gold", "ring", "pack", "of", "12",
        ];
        let cfg = Config::tiny(vocab.len());
        let varmap = candle_nn::VarMap::new();
        let tw = TrainableWeights::new(&varmap, Default::default(), 3, &Device::Cpu);
        let model = PriceModel::load(&tw, &cfg).unwrap();
        let mut w = ModelWriter::new("stack");
        for (name, var) in varmap.data().lock().unwrap().iter() {
            w.add_tensor(name, QTensor::quantize(var.as_tensor(), GgmlDType::F32).unwrap());
        }
        let tok = TextTokenizer::from_json(&wordpiece_json(&vocab)).unwrap();
        // Index: three items, embedded by the model itself.
        let titles = ["<b>Steel</b> blender", "USB cable \u{202e}reversed", "Gold ring"];
        let mut vectors = Vec::new();
        for t in titles {
            let ids = tok.encode(&t.to_lowercase(), 20).unwrap();
            let (ids, mask) = crate::bert::batch_tensors(&[ids], 0, &Device::Cpu).unwrap();
            vectors.extend(
                model.encoder.pooled(&ids, &mask, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
        }
        let labels = ItemLabels::new(titles.iter().map(|t| (*t, Some("Appliances"))));
        let knn =
            Knn::new(&vectors, vec![3.0, 2.0, 5.0], cfg.hidden_size, 2, 0.1).unwrap().with_labels(labels).unwrap();
        let stack = Stack { neural: None, knn: Some(knn), own: None, linear, members, weights, band_scale: 1.0 };
        stack.write(&mut w).unwrap();
        w.set_str(keys::BERT_CONFIG, &serde_json::to_string(&cfg).unwrap())
            .set_f64(keys::TARGET_MEAN, 3.5)
            .set_f64(keys::TARGET_STD, 1.0);
        Prep { max_tokens: 20, tokenizer: Some(tok) }.write(&mut w);
        Estimator::from_bytes(&w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn comparables_taken_from_the_members_scan_are_what_a_scan_gives() {
        // Rows in three directions: many similarities tie.
        let dirs = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]];
        let v: Vec<f32> = (0..40).flat_map(|i| dirs[(i * 7) % 3]).collect();
        let knn = Knn::new(&v, (0..40).map(|i| i as f32).collect(), 2, 20, 0.1).unwrap();
        let bits = |near: Vec<Neighbour>| near.iter().map(|n| (n.index, n.similarity.to_bits())).collect::<Vec<_>>();
        for q in [[1.0, 0.2], [0.0, 0.0], [0.3, 0.4], [f32::NAN, 1.0]] {
            let known = knn.nearest(&q, knn.reads());
            for k in [1, 5, 21, 22, 40] {
                assert_eq!(bits(known_nearest(&knn, &q, &known, k)), bits(knn.nearest(&q, k)), "{q:?}, k {k}");
            }
        }
    }

    #[test]
    fn occlusion_measures_what_taking_a_word_out_changes() {
        let est = neural_stack(vec![Member::Encoder, Member::Neighbours], vec![0.6, 0.4, 0.2], vec![]);
        let p = Product::from_free_text("steel blender usb cable");
        let x = est.explain(&p, ExplainOptions { comparables: 2, occlude: 8 }).unwrap();
        assert!((x.total() - x.estimate.price.ln_1p()).abs() < 1e-6, "{x:?}");
        // Typical: both members at the training mean, plus the bias.
        assert!((x.typical.ln_1p() - (0.6 * 3.5 + 0.4 * 3.5 + 0.2)).abs() < 1e-6);
        for word in ["steel", "blender", "usb", "cable"] {
            let a = weight_of(&x.words, word).unwrap_or_else(|| panic!("{word} not occluded: {x:?}"));
            let without = Product::from_free_text(&without_word("steel blender usb cable", word));
            let want = x.estimate.price.ln_1p() - est.estimate(&without).unwrap().price.ln_1p();
            assert!((a.weight - want).abs() < 1e-5, "{word}: {} vs {want}", a.weight);
            assert_eq!(a.weight, a.encoder);
        }
        // The comparables: the two nearest, titles as stored, most similar first.
        assert_eq!(x.comparables.len(), 2);
        assert!(x.comparables[0].similarity >= x.comparables[1].similarity);
        let near = est.explain(&Product::from_free_text("gold ring"), ExplainOptions::default()).unwrap();
        assert_eq!(near.comparables[0].title, "Gold ring");
        // Stored as Q4_0: close to, not exactly, the same vector.
        assert!(near.comparables[0].similarity > 0.95, "{near:?}");
        assert!((near.comparables[0].price - 5f64.exp_m1()).abs() < 1e-3);
        assert_eq!(near.comparables[0].category.as_deref(), Some("Appliances"));
        assert_eq!(near.comparables.len(), 3, "at most the index's size");
        let titles: Vec<&str> = near.comparables.iter().map(|c| c.title.as_str()).collect();
        assert!(titles.contains(&"<b>Steel</b> blender") && titles.contains(&"USB cable \u{202e}reversed"));
        // No occlusion: the encoder's whole share is the rest.
        let plain = est.explain(&p, ExplainOptions { comparables: 0, occlude: 0 }).unwrap();
        assert!(plain.words.is_empty() && plain.comparables.is_empty());
        assert!((plain.rest - (x.estimate.price.ln_1p() - x.typical.ln_1p())).abs() < 1e-6);
    }

    thread_local! {
        /// Stops this thread's encoder passes (the check is process-wide; the flag is not).
        static STOP_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn a_pass_stopped_between_layers_fails_and_loses_nothing_done() {
        crate::encoder::stop_passes_when(|| STOP_HERE.with(|s| s.get()));
        let est = neural_stack(vec![Member::Encoder, Member::Neighbours], vec![0.6, 0.4, 0.2], vec![]);
        let p = Product::from_free_text("steel blender usb cable");
        let opts = ExplainOptions { comparables: 2, occlude: 3 };
        let whole = est.explain(&p, opts).unwrap();
        let mut x = est.start_explaining(&p, opts).unwrap();
        x.occlude_next(&est, 1).unwrap();
        let before = x.explanation();
        STOP_HERE.with(|s| s.set(true));
        let stopped = x.occlude_next(&est, 1);
        STOP_HERE.with(|s| s.set(false));
        let e = stopped.unwrap_err().to_string();
        assert!(e.contains("stopped between layers"), "{e}");
        assert_eq!(x.pending(), 2, "the stopped word is still to do");
        assert_eq!(x.explanation().words, before.words);
        while x.pending() > 0 {
            x.occlude_next(&est, 1).unwrap();
        }
        let done = x.explanation();
        assert_eq!(done.words.len(), whole.words.len());
        for (a, b) in done.words.iter().zip(&whole.words) {
            assert_eq!(a.label, b.label);
            assert!((a.weight - b.weight).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn an_explanation_a_word_at_a_time_adds_up_at_every_step_and_ends_as_the_whole() {
        let est = neural_stack(vec![Member::Encoder, Member::Neighbours], vec![0.6, 0.4, 0.2], vec![]);
        let p = Product::from_free_text("steel blender usb cable");
        let opts = ExplainOptions { comparables: 2, occlude: 3 };
        let whole = est.explain(&p, opts).unwrap();
        let mut x = est.start_explaining(&p, opts).unwrap();
        assert_eq!(x.pending(), 3);
        assert_eq!(*x.estimate(), whole.estimate);
        let mut steps = 0;
        while x.pending() > 0 {
            // Midway: the parts still add up to the estimate, the rest holding what is not yet measured.
            let partial = x.explanation();
            assert!((partial.total() - whole.estimate.price.ln_1p()).abs() < 1e-6, "{partial:?}");
            assert_eq!(partial.words.len(), steps);
            x.occlude_next(&est, 1).unwrap();
            steps += 1;
        }
        assert_eq!(steps, 3);
        let stepped = x.explanation();
        assert_eq!(stepped.comparables, whole.comparables);
        assert_eq!(stepped.words.len(), whole.words.len());
        for (a, b) in stepped.words.iter().zip(&whole.words) {
            assert_eq!(a.label, b.label);
            assert!((a.weight - b.weight).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        assert!((stepped.rest - whole.rest).abs() < 1e-6);
    }

    #[test]
    fn the_first_estimate_holds_the_encoder_at_its_mean_and_reads_the_words() {
        let words = bow(&["gold", "steel"], vec![2.0, 0.5], 1.0);
        let members = vec![
            Member::Encoder,
            Member::Neighbours,
            Member::Linear("words".into()),
            Member::WithDetails(Box::new(Member::Encoder)),
            Member::HasDetails,
        ];
        let est = neural_stack(members, vec![0.5, 0.3, 0.4, 0.2, 0.6, 0.1], vec![("words".into(), words)]);
        let p = Product::from_free_text("gold ring\nsteel");
        // The full blend with the encoder's and neighbours' values at the
        // training mean (3.5), the gated copy at 0 without details.
        let Predictor::Stack(s) = &est.predictor else { unreachable!() };
        let mut v = est.member_values(std::slice::from_ref(&p)).remove(0).unwrap().values;
        v[0] = 3.5;
        v[1] = 3.5;
        let want = s.blend(&v).exp_m1();
        let first = est.first_estimate(&p).unwrap().unwrap();
        assert!((first / want - 1.0).abs() < 1e-9, "{first} vs {want}");
        // words: 1.0 + 2.0 (gold) + 0.5 (steel), stored as f16, at weight 0.4.
        let by_hand = (0.5 * 3.5 + 0.3 * 3.5 + 0.4 * 3.5 + 0.1f64).exp_m1();
        assert!((first / by_hand - 1.0).abs() < 1e-3, "{first} vs {by_hand}");
        // With details the gated encoder copy and the flag count too.
        let mut with = p.clone();
        with.details = serde_json::from_str(r#"{"Brand": "Acme"}"#).unwrap();
        let by_hand = (0.5 * 3.5 + 0.3 * 3.5 + 0.4 * 3.5 + 0.2 * 3.5 + 0.6 + 0.1f64).exp_m1();
        let first = est.first_estimate(&with).unwrap().unwrap();
        assert!((first / by_hand - 1.0).abs() < 1e-3, "{first} vs {by_hand}");
        // The explanation carries it; models without linear members or an encoder have none.
        assert_eq!(est.explain(&p, ExplainOptions::default()).unwrap().first, est.first_estimate(&p).unwrap());
        let plain = neural_stack(vec![Member::Encoder], vec![1.0, 0.0], vec![]);
        assert_eq!(plain.first_estimate(&p).unwrap(), None);
        assert_eq!(linear_stack().first_estimate(&p).unwrap(), None);
        assert!(est.first_estimate(&Product::from_free_text("")).is_err(), "an empty product is an error");
    }

    #[test]
    fn weighted_median_and_short_titles() {
        let c = |price: f64, similarity: f32| Comparable {
            title: String::new(),
            category: None,
            price,
            similarity,
            yours: false,
        };
        assert_eq!(weighted_median_price(&[]), None);
        assert_eq!(weighted_median_price(&[c(10.0, 0.9), c(20.0, 0.1), c(30.0, 0.1)]), Some(10.0));
        assert_eq!(weighted_median_price(&[c(10.0, 0.2), c(20.0, 0.3), c(30.0, 0.6)]), Some(30.0));
        assert_eq!(weighted_median_price(&[c(10.0, -1.0), c(20.0, 0.0), c(30.0, -0.5)]), Some(20.0));
        let long = "word ".repeat(100);
        let t = crate::knn::short_title(&long);
        assert!(t.chars().count() <= crate::knn::MAX_TITLE_CHARS && t.ends_with('…'), "{t}");
        assert_eq!(crate::knn::short_title(" a\n\tb\u{0}c "), "a b c");
    }
}
