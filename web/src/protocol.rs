//! The messages between the page (`app`) and the Web Worker (`worker`) that
//! runs the model, as JSON text, and the limits both keep to.

pub use pricer::explain::Comparable;
use pricer::explain::{Explanation, TOP_WORDS};
use serde::{Deserialize, Serialize};

/// A model to load: a URL (the site's own or `?model=`), or a file the
/// visitor opened, posted to the worker as the `File` object itself (no
/// copy into JSON).
#[derive(Clone)]
pub enum ModelSource {
    Url(String),
    File(web_sys::File),
}

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
    /// A new estimate is on its way: the reasons under way belong to the
    /// estimate it replaces, so they stop and leave the cores to it.
    DropReasons,
    /// Price the products of a CSV or JSONL file's text, [`BATCH_ROWS`]
    /// records at a time, a few products per turn of the event loop: an
    /// estimate asked meanwhile is answered before the next few rows.
    /// With several workers, each prices its [`Shard`] of the records.
    Batch { name: String, content: String, shard: Shard },
    /// Price the next [`BATCH_ROWS`] records of the file last sent.
    BatchNext,
    /// Stop pricing the file; the rows priced so far are shown.
    CancelBatch,
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

/// Which records of a file a worker prices when several share it: record
/// `r` (0-based, in file order) goes to the worker whose `index` is `r % of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub of: usize,
}

impl Shard {
    /// Every record, for one worker.
    pub const ALL: Shard = Shard { index: 0, of: 1 };

    /// Whether record `r` is this shard's.
    pub fn has(&self, r: usize) -> bool {
        r % self.of.max(1) == self.index
    }

    /// This shard's records among records `from..to`.
    pub fn count(&self, from: usize, to: usize) -> usize {
        (from..to).filter(|&r| self.has(r)).count()
    }
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
        /// The worker's wasm memory with the model loaded, in bytes: what
        /// each worker of a pool costs.
        memory: u64,
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
    /// Records of the file's part read so far, of how many.
    BatchProgress {
        done: usize,
        total: usize,
    },
    /// A part of the file priced, or stopped: its rows (this worker's shard)
    /// in file order, the records before the part, the records after it not
    /// yet priced, and the records in the file.
    BatchDone {
        rows: Vec<BatchRow>,
        before: usize,
        left: usize,
        cancelled: bool,
        records: usize,
    },
    /// The file could not be priced at all (too large, unreadable, no model).
    BatchFailed {
        message: String,
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

/// The longest text the page sends for one estimate; beyond this only the
/// first part can matter (the model reads a few hundred words).
pub const MAX_INPUT_CHARS: usize = 200_000;

/// Records priced per part of a file: a part of 2,000 takes about two
/// minutes with the default model on a laptop core, and its table stays
/// quick to show. "Price the next" goes on with the rest.
pub const BATCH_ROWS: usize = 2_000;

/// The largest file the page reads for pricing or adapting: 50 MB, about
/// 60,000 products with descriptions (the file is read whole into memory,
/// twice over as text). Larger files: split them, or `pricer predict`.
pub const MAX_PAGE_FILE_BYTES: u64 = 50_000_000;

/// Why the page will not read a file of `bytes` bytes, if it will not.
pub fn page_file_refusal(name: &str, bytes: u64) -> Option<String> {
    (bytes > MAX_PAGE_FILE_BYTES).then(|| {
        format!(
            "{name} is {:.1} MB: the page reads files of up to {:.0} MB. Split it, or price it with `pricer predict`.",
            bytes as f64 / 1e6,
            MAX_PAGE_FILE_BYTES as f64 / 1e6
        )
    })
}

impl Reply {
    /// The reply as JSON text the page can read back. JSON has no NaN or
    /// infinity (serde writes `null`, which the page cannot parse as a
    /// number): a reply carrying one becomes the error it stands for, so the
    /// page never waits for an answer it cannot read. `None`: nothing worth
    /// sending (a first estimate that is not a number).
    pub fn readable(&self) -> Option<String> {
        let text = serde_json::to_string(self).ok()?;
        // Only a text with a `null` can hold a lost number: the rest (every
        // progress message, most estimates) go without being read back.
        if !text.contains("null") || serde_json::from_str::<Reply>(&text).is_ok() {
            return Some(text);
        }
        const NOT_A_NUMBER: &str = "the model gave a number that is not finite";
        let fallback = match self.clone() {
            Reply::First { .. } => return None,
            Reply::Estimate { id, .. } => {
                Reply::Estimate { id, result: Err(format!("{NOT_A_NUMBER}: no estimate for this text")) }
            }
            Reply::Why { id, .. } => Reply::Why { id, result: Err(format!("{NOT_A_NUMBER}: no reasons")) },
            Reply::BatchDone { rows, before, left, cancelled, records } => {
                let rows = rows
                    .into_iter()
                    .map(|r| match r.result {
                        Ok((p, l, h)) if !(p.is_finite() && l.is_finite() && h.is_finite()) => {
                            BatchRow { result: Err(NOT_A_NUMBER.into()), ..r }
                        }
                        _ => r,
                    })
                    .collect();
                Reply::BatchDone { rows, before, left, cancelled, records }
            }
            Reply::Ready { .. } => Reply::LoadFailed {
                message: format!("{NOT_A_NUMBER} in its card: the file is damaged"),
                kept_previous: false,
            },
            Reply::Adapted { .. } => Reply::AdaptFailed {
                message: format!("{NOT_A_NUMBER} when measuring the adaptation: it was not used"),
                cancelled: false,
            },
            other => other,
        };
        serde_json::to_string(&fallback).ok().filter(|t| serde_json::from_str::<Reply>(t).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_with_a_number_json_cannot_hold_becomes_its_error() {
        let view = EstimateView {
            price: f64::NAN,
            low: 1.0,
            high: 2.0,
            millis: 1.0,
            truncated: false,
            prepared_chars: 3,
            comparables: vec![],
            why: Why::default(),
        };
        let text = Reply::Estimate { id: 7, result: Ok(view.clone()) }.readable().unwrap();
        match serde_json::from_str::<Reply>(&text).unwrap() {
            Reply::Estimate { id: 7, result: Err(e) } => assert!(e.contains("not finite"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(Reply::First { id: 7, price: f64::INFINITY }.readable(), None);
        let rows = vec![
            BatchRow { line: 2, title: "a".into(), result: Ok((f64::NAN, 1.0, 2.0)) },
            BatchRow { line: 3, title: "b".into(), result: Ok((1.5, 1.0, 2.0)) },
        ];
        let text = Reply::BatchDone { rows, before: 0, left: 0, cancelled: false, records: 2 }.readable().unwrap();
        let Reply::BatchDone { rows, .. } = serde_json::from_str::<Reply>(&text).unwrap() else { panic!() };
        assert!(rows[0].result.is_err() && rows[1].result == Ok((1.5, 1.0, 2.0)), "{rows:?}");
        // Finite replies go as they are.
        let ok = Reply::Estimate { id: 8, result: Ok(EstimateView { price: 3.0, ..view }) };
        assert_eq!(ok.readable().unwrap(), serde_json::to_string(&ok).unwrap());
    }

    #[test]
    fn shards_split_the_records_between_workers() {
        let shards = [Shard { index: 0, of: 3 }, Shard { index: 1, of: 3 }, Shard { index: 2, of: 3 }];
        for r in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.has(r)).count(), 1);
        }
        assert_eq!(shards.map(|s| s.count(2, 9)), [2, 2, 3]);
        assert_eq!(Shard::ALL.count(5, 9), 4);
    }

    #[test]
    fn files_over_the_stated_size_are_refused_by_name() {
        assert_eq!(page_file_refusal("a.csv", MAX_PAGE_FILE_BYTES), None);
        let m = page_file_refusal("big.csv", 200_000_000).unwrap();
        assert!(m.starts_with("big.csv is 200.0 MB") && m.contains("50 MB"), "{m}");
    }
}
