//! The messages between the page (`app`) and the Web Worker (`worker`) that
//! runs the model, as JSON text, and the limits both keep to.

pub use pricer::explain::Comparable;
use serde::{Deserialize, Serialize};

mod shares;
mod views;
pub use shares::*;
pub use views::*;

/// A model to load: a URL (the site's own or `?model=`), or a file the
/// visitor opened, posted to the worker as the `File` object itself (no
/// copy into JSON).
#[derive(Clone)]
pub enum ModelSource {
    Url(String),
    File(web_sys::File),
}

/// Page to worker. Besides these JSON requests, a worker takes two objects
/// as they are: a `File` (a model the visitor opened) and, in a
/// cross-origin isolated page, a `SharedArrayBuffer` of one i32 where the
/// page keeps its newest estimate's id (the reasons worker then stops a
/// pass for an older estimate between two layers, rather than at its end).
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
    /// With several workers (the page's adaptation `job`), each embeds its
    /// [`Shard`] of the products: shard 0 (the first worker) fits the
    /// adaptation once the others' [`Request::AdaptValues`] are in; the
    /// others answer [`Reply::AdaptShare`] and keep the model as it was.
    Adapt { name: String, content: String, job: u64, shard: Shard },
    /// Another worker's share of the products of adaptation `job`: the
    /// member values of shard `index`'s products, in file order.
    AdaptValues { job: u64, index: usize, values: Vec<SentResult> },
    /// Stop the adaptation under way; the one before (if any) stays.
    CancelAdapt,
    /// Lay the adaptation kept in IndexedDB over the model (the second
    /// worker, after the first adapted).
    ReloadOwn,
    /// Drop the adaptation, here and from IndexedDB.
    ForgetOwn,
    /// Estimate a built-in product a few times on the model just loaded,
    /// once per worker: the browser compiles the wasm lazily and optimises
    /// a function only after it has run a while, so the visitor's first
    /// estimates would run on slow code, beside the optimising compiler.
    /// Sent to the two workers that answer the visitor (not to a file's
    /// pool); any request that comes meanwhile goes first and ends it.
    WarmUp,
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
    /// The threaded worker could not start (sent by its starting script,
    /// not by Rust code): the page starts the single-thread build instead.
    ThreadsFailed {
        message: String,
    },
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
        /// Threads one estimate runs on (more than one in the threaded build).
        threads: usize,
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
    /// The reasons of estimate `id` stopped between two layers of a pass:
    /// a newer estimate was asked for (the page's shared cell said so).
    ReasonsStopped {
        id: u64,
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
    /// A share of adaptation `job`'s products embedded (not the first
    /// worker's): the page passes it on to the first worker.
    AdaptShare {
        job: u64,
        index: usize,
        values: Vec<SentResult>,
    },
    /// The adaptation failed or was cancelled; the one before (if any) stays.
    AdaptFailed {
        message: String,
        cancelled: bool,
    },
    /// The adaptation is gone: estimates come from the model as published.
    Forgotten,
    /// The warm-up ([`Request::WarmUp`]) ran `runs` estimates in `millis`
    /// (the worker's own time), the last one in `last_millis`; fewer runs
    /// than asked when a request came first.
    WarmedUp {
        runs: u32,
        millis: f64,
        last_millis: f64,
    },
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
