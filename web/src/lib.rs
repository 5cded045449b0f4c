//! The messages between the page (`app`) and the Web Worker (`worker`) that
//! runs the model, as JSON text. The page never runs the model itself, so it
//! never freezes.

pub mod own;
pub mod worker;

pub use pricer::explain::Comparable;
use pricer::explain::{Explanation, TOP_WORDS};
use serde::{Deserialize, Serialize};

/// Page to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Load the model at this absolute URL: from the server when it changed
    /// (a conditional request), else from Cache Storage (offline too). A
    /// model file the visitor opens is posted as a `File` object instead.
    /// `check_server` false (the second worker, after the first loaded the
    /// same URL): the cached copy as it is, the server only when none.
    Load { url: String, check_server: bool },
    /// Estimate one product typed as text: title on the first line.
    Estimate { id: u64, text: String },
    /// Measure the encoder's share of the most influential words of an
    /// estimate's text (one encoder pass per word, yielding between passes;
    /// a newer request drops this one). Sent to the second worker, so
    /// estimates never wait for reasons.
    Explain { id: u64, text: String },
    /// Estimate every product of a CSV or JSONL file's text.
    Batch { name: String, content: String },
    /// Adapt the model to the shop's own priced products of a CSV or JSONL
    /// file's text (`pricer::adapt`, as `pricer adapt` does), a batch of
    /// products per turn of the event loop, and keep the adaptation in
    /// IndexedDB. Estimates keep coming meanwhile, from the model as it is.
    Adapt { name: String, content: String },
    /// Stop the adaptation under way; the one before (if any) stays.
    CancelAdapt,
    /// Lay the adaptation kept in IndexedDB over the model (the second
    /// worker, after the first adapted).
    ReloadOwn,
    /// Drop the adaptation, here and from IndexedDB.
    ForgetOwn,
}

/// Worker to page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The worker's code is running and listens.
    Started,
    /// Model bytes received so far (total 0 when unknown).
    Progress {
        loaded: u64,
        total: u64,
    },
    /// The model is loaded; `cached` when it came from Cache Storage.
    /// `notice` says what the user may want to know: that a newer published
    /// model replaced the cached one, or why the cached copy was kept.
    Ready {
        card: ModelCard,
        cached: bool,
        notice: Option<String>,
    },
    /// Loading failed; `kept_previous` when a model loaded before still
    /// answers (the page keeps it), else the page offers a retry.
    LoadFailed {
        message: String,
        kept_previous: bool,
    },
    /// What the words and details alone say, sent before the encoder runs
    /// (models that are a stack of an encoder and linear members).
    First {
        id: u64,
        price: f64,
    },
    Estimate {
        id: u64,
        result: Result<EstimateView, String>,
    },
    /// The estimate's reasons with the encoder's share of each word measured
    /// (sent after the estimate, unless a newer request came first).
    Why {
        id: u64,
        result: Result<Why, String>,
    },
    BatchProgress {
        done: usize,
    },
    BatchDone {
        rows: Vec<BatchRow>,
    },
    /// Products of the shop's file embedded so far.
    AdaptProgress {
        done: usize,
        total: usize,
    },
    /// The model now speaks the shop's catalogue (`restored`: the adaptation
    /// kept from an earlier visit).
    Adapted {
        own: OwnSummary,
        restored: bool,
    },
    /// The adaptation failed or was cancelled; the one before (if any) stays.
    AdaptFailed {
        message: String,
        cancelled: bool,
    },
    /// The adaptation is gone: estimates come from the model as published.
    Forgotten,
}

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

/// One line of a batch: an estimate or the reason there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRow {
    /// 1-based record number (JSONL: the line; CSV: the row after the header).
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

/// The longest text the page sends for one estimate; beyond this only the
/// first part can matter (the model reads a few hundred words).
pub const MAX_INPUT_CHARS: usize = 200_000;
