//! What the worker tells the page about an estimate, a file's rows, an
//! adaptation and the model: the data inside [`super::Reply`].

use pricer::explain::{Comparable, Explanation, TOP_WORDS};
use serde::{Deserialize, Serialize};

/// What the page shows of an adaptation to the shop's own products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnSummary {
    /// The file's name.
    pub name: String,
    /// Products used.
    pub items: usize,
    /// Records not used, with their line (the first [`SHOWN_SKIPS`]).
    pub skipped: Vec<pricer::adapt::Skipped>,
    pub skipped_count: usize,
    /// What was refitted, for people.
    pub method: String,
    /// Cross-validated on the products, before and after.
    pub before: pricer::metrics::Summary,
    pub after: pricer::metrics::Summary,
}

pub use pricer::adapt::SHOWN_SKIPS;

impl OwnSummary {
    pub fn new(a: &pricer::adapt::Adaptation, name: &str, skipped: &[pricer::adapt::Skipped]) -> OwnSummary {
        let r = &a.report;
        OwnSummary {
            name: name.to_string(),
            items: r.items,
            skipped: skipped.iter().take(SHOWN_SKIPS).cloned().collect(),
            skipped_count: r.skipped,
            method: r.method.describe().to_string(),
            before: r.before,
            after: r.after,
        }
    }
}

/// One estimate as the page shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EstimateView {
    pub price: f64,
    pub low: f64,
    pub high: f64,
    pub millis: f64,
    /// The input was cut to the model's budget (a very long paste).
    pub truncated: bool,
    /// Characters of the text the model actually read.
    pub prepared_chars: usize,
    /// The nearest training items, from the same encoder pass as the estimate.
    pub comparables: Vec<Comparable>,
    /// Why: at first from the linear members alone (`complete` false).
    pub why: Why,
}

/// The words and details that moved an estimate (see `pricer::explain`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Why {
    /// The price of a product the model knows nothing particular about.
    pub typical: f64,
    /// The words that raised the estimate most, then those that lowered it
    /// most: (word, log-space weight).
    pub words: Vec<(String, f64)>,
    /// Details fields (brand, weight...) with their weights.
    pub details: Vec<(String, f64)>,
    /// What the encoder and neighbours read from the text as a whole.
    pub rest: f64,
    /// The encoder's share of the most influential words is included.
    pub complete: bool,
}

impl Why {
    pub fn from_explanation(x: &Explanation, complete: bool) -> Why {
        Why {
            typical: x.typical,
            words: x.top_words(TOP_WORDS).into_iter().map(|a| (a.label.clone(), a.weight)).collect(),
            details: x.details.iter().map(|a| (a.label.clone(), a.weight)).collect(),
            rest: x.rest,
            complete,
        }
    }
}

/// One record of a batch: an estimate or the reason there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    /// The file's line the record starts on (1-based, physical lines, CRLF
    /// or LF; a CSV's header is line 1), as the CLI names it.
    pub line: u64,
    pub title: String,
    pub result: Result<(f64, f64, f64), String>,
}

/// What the page's model card shows, all read from the model file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelCard {
    pub kind: String,
    pub bytes: u64,
    /// `pricer.*` scalar metadata (metrics, provenance), as text.
    pub metadata: Vec<(String, String)>,
    /// The test splits the file has metrics for (`catalog`, `course`...).
    pub splits: Vec<TestSplit>,
}

/// One test split of the model card: its name (empty for the one unnamed
/// split), true prices and the model's estimates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestSplit {
    pub name: String,
    pub truth: Vec<f32>,
    pub estimate: Vec<f32>,
}

impl ModelCard {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}
