//! The linear members and baselines: featurizers fitted on the training
//! texts, then ridge regression (`ridge`). Settings come as a plain struct,
//! so fine-tuning (`--focus`) and the CLI share one fit.

pub mod ridge;

use anyhow::{Result, bail};
use pricer::Product;
use pricer::baselines::{Featurizer, LinearModel, brand, details_text, mean_rank, terms, weight_lb};
use pricer::estimator::Prep;
use pricer::text::model_input;
use ridge::ridge;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The kinds of linear model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearKind {
    /// Least squares on hand features: length, weight, rank, brand, category.
    Features,
    /// Ridge on counts of the 1000 most common words.
    Bow,
    /// Ridge on word 1-2-gram TF-IDF, log price target.
    TfidfRidge,
    /// Ridge on the `details` fields kept apart, log price target.
    DetailsRidge,
}

/// How a linear kind is fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSettings {
    /// Ridge strength (tfidf-ridge, details-ridge).
    pub alpha: f64,
    /// tfidf-ridge: every `details` entry joins the text.
    pub with_details: bool,
    /// tfidf-ridge: 1 + ln(count) instead of the count.
    pub sublinear: bool,
    /// tfidf-ridge: terms in fewer training texts are dropped.
    pub min_df: usize,
}

impl LinearSettings {
    /// The stack's word member recipe (`tfidf-ridge --with-details --sublinear --min-df 2`, alpha 0.3).
    pub fn word_member() -> Self {
        Self { alpha: 0.3, with_details: true, sublinear: true, min_df: 2 }
    }
}

/// Products with their model input, computed once.
pub struct Prepared<'a> {
    pub products: &'a [Product],
    pub texts: Vec<String>,
}

pub fn prepared<'a>(products: &'a [Product], prep: &Prep) -> Result<Prepared<'a>> {
    let texts = products.iter().map(|p| model_input(p, prep.budget())).collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { products, texts })
}

/// How far the word member misses each product, in log(1 + price), each
/// estimated by a fit on the other `folds - 1` folds (every `folds`-th
/// product is one fold): what `train --focus` weighs the loss toward.
pub fn word_member_misses(products: &[Product], prep: &Prep, folds: usize) -> Result<Vec<f64>> {
    if products.len() < 2 * folds {
        bail!("{} products: too few for {folds} folds", products.len());
    }
    let all = prepared(products, prep)?;
    let settings = LinearSettings::word_member();
    let mut misses = vec![0.0; products.len()];
    for k in 0..folds {
        let (fit, held): (Vec<usize>, Vec<usize>) = (0..products.len()).partition(|i| i % folds != k);
        let fit_products: Vec<Product> = fit.iter().map(|&i| products[i].clone()).collect();
        let texts = fit.iter().map(|&i| all.texts[i].clone()).collect();
        let model = fit_linear(LinearKind::TfidfRidge, &Prepared { products: &fit_products, texts }, &settings)?;
        for i in held {
            let p = &products[i];
            misses[i] = (model.log_price(p, &all.texts[i]) - p.price.unwrap_or(0.0).ln_1p()).abs();
        }
    }
    Ok(misses)
}

/// Loss weights from misses: `1 + focus * min(miss / mean, 4)`, scaled to a mean of 1.
pub fn focus_weights(misses: &[f64], focus: f64) -> Vec<f32> {
    let mean = misses.iter().sum::<f64>() / misses.len().max(1) as f64;
    let raw: Vec<f64> = misses.iter().map(|m| 1.0 + focus * (m / mean.max(1e-12)).min(4.0)).collect();
    let scale = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
    raw.iter().map(|w| (w / scale) as f32).collect()
}

/// Fits a linear kind on prepared products: its featurizer from them, then
/// ridge (or least squares) on the price or log price.
pub fn fit_linear(kind: LinearKind, train: &Prepared, settings: &LinearSettings) -> Result<LinearModel> {
    let args = settings;
    let (featurizer, alpha, log_target) = match kind {
        LinearKind::Features => (hand_featurizer(train.products), 1e-3, false),
        LinearKind::Bow => (Featurizer::Bow { vocab: top_words(&train.texts, 1000) }, 1.0, false),
        LinearKind::TfidfRidge => {
            let texts: Vec<String> = if args.with_details {
                train.products.iter().zip(&train.texts).map(|(p, t)| format!("{t}\n{}", details_text(p))).collect()
            } else {
                train.texts.clone()
            };
            let mut f = tfidf_featurizer(&texts, args.min_df);
            if let Featurizer::Tfidf { details, sublinear, .. } = &mut f {
                *details = args.with_details;
                *sublinear = args.sublinear;
            }
            (f, args.alpha, true)
        }
        LinearKind::DetailsRidge => (details_featurizer(train.products), args.alpha, true),
    };
    let index = featurizer.index();
    let rows: Vec<_> =
        train.products.iter().zip(&train.texts).map(|(p, t)| featurizer.features(p, t, &index)).collect();
    let y: Vec<f64> = train
        .products
        .iter()
        .map(|p| {
            let price = p.price.unwrap_or(0.0);
            if log_target { price.ln_1p() } else { price }
        })
        .collect();
    let (weights, bias) = ridge(&rows, featurizer.dim(), &y, alpha);
    Ok(LinearModel::new(featurizer, weights.iter().map(|&x| x as f32).collect(), bias as f32, log_target)?)
}

fn hand_featurizer(products: &[Product]) -> Featurizer {
    let mean = |xs: Vec<f64>| if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let weight_mean = mean(products.iter().filter_map(weight_lb).map(f64::ln_1p).collect()) as f32;
    let log_rank_mean = mean(products.iter().filter_map(mean_rank).map(f64::ln_1p).collect()) as f32;
    let mut brands: Vec<(String, usize)> = brand_counts(products).into_iter().filter(|(_, c)| *c >= 3).collect();
    brands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    brands.truncate(40);
    let brands = brands.into_iter().map(|b| b.0).collect();
    Featurizer::Hand { brands, categories: categories(products), weight_mean, log_rank_mean }
}

/// How many training products name each brand (lowercased).
fn brand_counts(products: &[Product]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for b in products.iter().filter_map(brand) {
        *counts.entry(b.to_lowercase()).or_default() += 1;
    }
    counts
}

/// Every category of the training products, sorted.
fn categories(products: &[Product]) -> Vec<String> {
    products.iter().filter_map(|p| p.category.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// Brands seen at least twice in training (sorted) and every category.
fn details_featurizer(products: &[Product]) -> Featurizer {
    let mut brands: Vec<String> = brand_counts(products).into_iter().filter(|(_, c)| *c >= 2).map(|(b, _)| b).collect();
    brands.sort();
    Featurizer::Details { brands, categories: categories(products) }
}

/// Document frequency of each term.
fn doc_freq(texts: &[String], bigrams: bool) -> BTreeMap<String, usize> {
    let mut df = BTreeMap::new();
    for t in texts {
        for term in terms(t, bigrams).into_iter().collect::<HashSet<_>>() {
            *df.entry(term).or_insert(0) += 1;
        }
    }
    df
}

fn top_words(texts: &[String], n: usize) -> Vec<String> {
    let mut df: Vec<(String, usize)> = doc_freq(texts, false).into_iter().collect();
    df.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    df.into_iter().take(n).map(|(t, _)| t).collect()
}

/// scikit-learn's TfidfVectorizer(ngram_range=(1, 2)) vocabulary and smooth idf.
fn tfidf_featurizer(texts: &[String], min_df: usize) -> Featurizer {
    let n = texts.len() as f64;
    let (vocab, idf): (Vec<String>, Vec<f32>) = doc_freq(texts, true)
        .into_iter()
        .filter(|(_, df)| *df >= min_df)
        .map(|(t, df)| (t, (((1.0 + n) / (1.0 + df as f64)).ln() + 1.0) as f32))
        .unzip();
    Featurizer::Tfidf { vocab, idf, bigrams: true, details: false, sublinear: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_vocabulary_and_idf_follow_sklearn() {
        let texts = vec!["red car".to_string(), "red bike".to_string()];
        let Featurizer::Tfidf { vocab, idf, .. } = tfidf_featurizer(&texts, 1) else { panic!() };
        assert_eq!(vocab, vec!["bike", "car", "red", "red bike", "red car"]);
        // idf = ln((1 + n) / (1 + df)) + 1
        assert!((idf[2] - 1.0).abs() < 1e-6);
        assert!((idf[0] - ((3.0f32 / 2.0).ln() + 1.0)).abs() < 1e-6);
        let Featurizer::Tfidf { vocab, .. } = tfidf_featurizer(&texts, 2) else { panic!() };
        assert_eq!(vocab, vec!["red"]);
    }

    #[test]
    fn focus_weights_lean_toward_misses_and_keep_a_mean_of_one() {
        let mut misses = vec![0.1; 8];
        misses.extend([0.4, 40.0]);
        let w = focus_weights(&misses, 1.0);
        assert!((w.iter().sum::<f32>() / 10.0 - 1.0).abs() < 1e-6, "{w:?}");
        assert!(w[0] == w[1] && w[8] > w[0] && w[9] > w[8], "{w:?}");
        // The outlier is capped at 4 mean misses (mean 4.12): weight 1 + 4 against 1 + 0.1 / 4.12.
        assert!((w[9] / w[0] - 5.0 / (1.0 + 0.1 / 4.12)).abs() < 1e-4, "{w:?}");
        assert!(focus_weights(&[0.1, 0.3, 2.0], 0.0).iter().all(|&x| x == 1.0));
    }

    #[test]
    fn the_word_member_misses_the_odd_price_out_of_fold() {
        // Kettles cost about $20, drills about $80; one kettle is priced $2,000.
        let mut items: Vec<Product> = (0..40)
            .map(|i| {
                let (name, price) = if i % 2 == 0 { ("kettle steel", 20.0) } else { ("cordless drill", 80.0) };
                Product { title: format!("{name} {i}"), price: Some(price + (i % 5) as f64), ..Default::default() }
            })
            .collect();
        items[12].price = Some(2000.0);
        let prep = Prep { max_tokens: 64, tokenizer: None };
        let m = word_member_misses(&items, &prep, 5).unwrap();
        assert_eq!(m.len(), 40);
        let worst = (0..40).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
        assert_eq!(worst, 12, "{m:?}");
        assert!(m[12] > 3.0 && m.iter().enumerate().all(|(i, &x)| i == 12 || x < 1.0), "{m:?}");
        assert!(word_member_misses(&items[..9], &prep, 5).unwrap_err().to_string().contains("too few"));
    }
}
