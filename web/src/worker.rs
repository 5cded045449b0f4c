//! The Web Worker: fetches the model (through Cache Storage), loads it with
//! the shared crate, and answers estimate and batch requests. The page sends
//! JSON [`Request`]s and gets JSON [`Reply`]s.

use crate::own::{self, Applied, Job, Kept};
use crate::{
    BATCH_ROWS, BatchRow, EstimateView, MAX_INPUT_CHARS, ModelCard, OwnSummary, Reply, Request, TestSplit, Why,
    page_file_refusal,
};
use js_sys::{Reflect, Uint8Array};
use pricer::estimator::keys;
use pricer::explain::{ExplainOptions, Explaining};
use pricer::readers::{Format, NumberedRecord, Prices, read_numbered_products_as};
use pricer::{Estimator, Product};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Response};

/// Cache Storage bucket of model files; bump the suffix to drop old ones.
const MODEL_CACHE: &str = "pricer-models-v1";

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Posts a reply the page can read ([`Reply::readable`]).
fn send(reply: &Reply) {
    if let Some(text) = reply.clone().readable() {
        let _ = scope().post_message(&JsValue::from_str(&text));
    }
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn now_ms() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

/// A model's bytes with the validators the server sent (for the next
/// conditional request).
struct Fetched {
    bytes: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
}

async fn model_cache() -> Result<web_sys::Cache, String> {
    let caches = scope().caches().map_err(js_err)?;
    Ok(JsFuture::from(caches.open(MODEL_CACHE)).await.map_err(js_err)?.unchecked_into())
}

/// The copy in Cache Storage, if any.
async fn cached_model(url: &str) -> Option<Fetched> {
    let cache = model_cache().await.ok()?;
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    let resp = hit.dyn_into::<Response>().ok()?;
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let buf = JsFuture::from(resp.array_buffer().ok()?).await.ok()?;
    Some(Fetched { bytes: Uint8Array::new(&buf).to_vec(), etag, last_modified })
}

/// What the server said when asked for the model.
enum Answer {
    /// A new file (or the first one).
    Changed(Fetched),
    /// 304: the cached copy is current.
    Unchanged,
    /// An HTTP error status.
    Failed(String),
}

/// Asks the server for the model; with `cached`, conditionally (its ETag
/// and Last-Modified), so an unchanged model costs one small request. The
/// browser's HTTP cache is bypassed: Cache Storage holds the copy.
async fn ask_server(url: &str, cached: Option<&Fetched>) -> Result<Answer, String> {
    let init = web_sys::RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoStore);
    let headers = web_sys::Headers::new().map_err(js_err)?;
    if let Some(c) = cached {
        if let Some(etag) = &c.etag {
            headers.set("if-none-match", etag).map_err(js_err)?;
        }
        if let Some(lm) = &c.last_modified {
            headers.set("if-modified-since", lm).map_err(js_err)?;
        }
    }
    init.set_headers(&headers);
    let resp: Response =
        JsFuture::from(scope().fetch_with_str_and_init(url, &init)).await.map_err(js_err)?.unchecked_into();
    if resp.status() == 304 && cached.is_some() {
        return Ok(Answer::Unchanged);
    }
    if !resp.ok() {
        return Ok(Answer::Failed(format!(
            "the model file could not be fetched: HTTP {} {}",
            resp.status(),
            resp.status_text()
        )));
    }
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let total: u64 = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = resp.body().ok_or("the model response has no body")?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total as usize);
    let mut last_report = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(js_err)?;
        if Reflect::get(&chunk, &"done".into()).map_err(js_err)?.as_bool().unwrap_or(true) {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(js_err)?.unchecked_into();
        bytes.extend(value.to_vec());
        if bytes.len() as u64 - last_report > 256 * 1024 {
            last_report = bytes.len() as u64;
            send(&Reply::Progress { loaded: last_report, total });
        }
    }
    send(&Reply::Progress { loaded: bytes.len() as u64, total: total.max(bytes.len() as u64) });
    Ok(Answer::Changed(Fetched { bytes, etag, last_modified }))
}

/// Keeps `f` for offline use and for the next conditional request.
async fn store_in_cache(url: &str, f: &Fetched) -> Result<(), String> {
    let cache = model_cache().await?;
    let headers = web_sys::Headers::new().map_err(js_err)?;
    for (name, value) in [("etag", &f.etag), ("last-modified", &f.last_modified)] {
        if let Some(v) = value {
            headers.set(name, v).map_err(js_err)?;
        }
    }
    let init = web_sys::ResponseInit::new();
    init.set_headers(&headers);
    let mut copy = f.bytes.clone();
    let resp = Response::new_with_opt_u8_array_and_init(Some(&mut copy), &init).map_err(js_err)?;
    JsFuture::from(cache.put_with_str(url, &resp)).await.map_err(js_err)?;
    Ok(())
}

async fn drop_from_cache(url: &str) {
    if let Ok(cache) = model_cache().await {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
}

fn damaged(e: pricer::Error) -> String {
    format!("the model file is damaged or not a Pricer model ({e})")
}

/// The model at `url`: the server's copy when it changed (or there is no
/// cached one), else the cached copy, which also serves offline. A new file
/// that fails to load never replaces a good cached one.
async fn fetch_and_load(url: &str, check_server: bool) -> Result<(Estimator, u64, Origin), String> {
    let cached = cached_model(url).await;
    if !check_server
        && let Some(c) = &cached
        && let Ok(est) = Estimator::from_bytes(&c.bytes)
    {
        return Ok((est, c.bytes.len() as u64, Origin::Cached));
    }
    let answer = ask_server(url, cached.as_ref()).await;
    let use_cached = |c: Fetched, origin: Origin| async move {
        match Estimator::from_bytes(&c.bytes) {
            Ok(est) => Ok((est, c.bytes.len() as u64, origin)),
            Err(e) => {
                // A damaged copy in the cache must not stick: drop it, so a retry fetches afresh.
                drop_from_cache(url).await;
                Err(damaged(e))
            }
        }
    };
    match (answer, cached) {
        (Ok(Answer::Changed(new)), cached) => match Estimator::from_bytes(&new.bytes) {
            Ok(est) => {
                // A full quota is not fatal: the app still works, only not offline.
                let _ = store_in_cache(url, &new).await;
                let origin = if cached.is_some() { Origin::Updated } else { Origin::Network };
                Ok((est, new.bytes.len() as u64, origin))
            }
            Err(e) => match cached {
                Some(c) => use_cached(c, Origin::KeptCached(damaged(e))).await,
                None => Err(damaged(e)),
            },
        },
        (Ok(Answer::Unchanged), Some(c)) => use_cached(c, Origin::Cached).await,
        (Ok(Answer::Failed(msg)), Some(c)) | (Err(msg), Some(c)) => use_cached(c, Origin::KeptCached(msg)).await,
        (Ok(Answer::Failed(msg)), None) | (Err(msg), None) => Err(msg),
        (Ok(Answer::Unchanged), None) => Err("the server answered 304 to a request that was not conditional".into()),
    }
}

/// Where a loaded model's bytes came from.
enum Origin {
    Network,
    /// The server had a newer file than the cached one.
    Updated,
    /// The server said the cached copy is current.
    Cached,
    /// The server could not be asked or gave a file that failed: the cached copy, and why.
    KeptCached(String),
    /// A file the visitor opened.
    File,
}

fn card(est: &Estimator, bytes: u64) -> ModelCard {
    let splits = keys::test_splits(&est.file)
        .into_iter()
        .map(|name| TestSplit {
            truth: est.file.f32s(&keys::test_key(&name, "truth")).unwrap_or_default(),
            estimate: est.file.f32s(&keys::test_key(&name, "estimate")).unwrap_or_default(),
            name,
        })
        .collect();
    ModelCard { kind: est.kind.clone(), bytes, metadata: est.file.scalar_metadata(), splits }
}

/// A model the page asked for.
enum Source {
    /// A URL, and whether to ask the server if it changed.
    Url(String, bool),
    File(web_sys::File),
}

/// A model file the visitor opened; one larger than any Pricer model is
/// refused before its bytes are read.
async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let max = pricer::model_file::MAX_FILE_BYTES;
    if file.size() > max as f64 {
        return Err(format!(
            "{} is {:.0} MB: larger than any Pricer model ({} MB at most)",
            file.name(),
            file.size() / 1e6,
            max >> 20
        ));
    }
    let buf = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("{} could not be read: {}", file.name(), js_err(e)))?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// The text the worker reads: at most [`MAX_INPUT_CHARS`] characters, and whether it was cut.
fn cut_input(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_INPUT_CHARS) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// The estimate with its comparables and the linear members' reasons, from
/// one encoder pass. The encoder's share of each word is measured apart
/// ([`Request::Explain`]), so the next estimate never waits for it.
fn estimate(est: &Estimator, text: &str) -> Result<EstimateView, String> {
    let start = now_ms();
    let (text, cut) = cut_input(text);
    let product = Product::from_free_text(text);
    let prepared = est.prepare(&product).map_err(|e| e.to_string())?;
    let x = est.explain(&product, ExplainOptions { occlude: 0, ..Default::default() }).map_err(|e| e.to_string())?;
    let e = x.estimate;
    Ok(EstimateView {
        price: e.price,
        low: e.low,
        high: e.high,
        millis: now_ms() - start,
        truncated: cut || prepared.truncated,
        prepared_chars: prepared.text.chars().count(),
        comparables: x.comparables.clone(),
        why: Why::from_explanation(&x, false),
    })
}

/// A file being priced: its records as they are read, in file order, and
/// where the part under way stands.
struct BatchJob {
    id: u64,
    records: Box<dyn Iterator<Item = NumberedRecord>>,
    /// Records in the file, in the parts before this one, in this part, and
    /// read of this part so far.
    count: usize,
    before: usize,
    part: usize,
    read: usize,
    rows: Vec<BatchRow>,
}

impl BatchJob {
    /// Reads the file's records (counted first, for the progress and the
    /// time left); the first part starts at once.
    fn new(id: u64, name: &str, content: String) -> Result<BatchJob, String> {
        let bytes: std::rc::Rc<[u8]> = content.into_bytes().into();
        let format = Format::from_name(name);
        let open = |bytes: std::rc::Rc<[u8]>| {
            read_numbered_products_as(std::io::Cursor::new(bytes), format, Prices::DecimalPoint)
                .map_err(|e| format!("{name} could not be read: {e}"))
        };
        let count = open(bytes.clone())?.count();
        if count == 0 {
            return Err(format!("{name} holds no products"));
        }
        let records = open(bytes)?;
        Ok(BatchJob { id, records, count, before: 0, part: count.min(BATCH_ROWS), read: 0, rows: vec![] })
    }

    /// Prices the next few records of the part; true when the part is done.
    fn step(&mut self, est: &Estimator) -> bool {
        let mut pending: Vec<(u64, Product)> = Vec::new();
        while pending.len() < pricer::estimator::BATCH && self.read < self.part {
            let Some((line, record)) = self.records.next() else {
                // Fewer records than counted: the part ends here.
                self.part = self.read;
                break;
            };
            self.read += 1;
            match record {
                Ok(p) => pending.push((line, p)),
                Err(e) => self.rows.push(BatchRow { line, title: String::new(), result: Err(e.reason) }),
            }
        }
        let products: Vec<Product> = pending.iter().map(|(_, p)| p.clone()).collect();
        for ((line, p), r) in pending.into_iter().zip(est.estimate_batch(&products)) {
            let result = r.map(|e| (e.price, e.low, e.high)).map_err(|e| e.to_string());
            self.rows.push(BatchRow { line, title: p.title, result });
        }
        self.read >= self.part
    }

    /// The part's rows, in file order, as the page gets them.
    fn done(&mut self, cancelled: bool) -> Reply {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|r| r.line);
        let before = self.before;
        self.before += self.read;
        self.read = 0;
        self.part = 0;
        Reply::BatchDone { rows, before, left: self.count - self.before, cancelled }
    }
}

fn summary(a: &Applied) -> OwnSummary {
    OwnSummary::new(&a.adaptation, &a.name, &a.skipped)
}

/// Runs `f` after the messages already queued (a zero-delay timeout).
fn later(f: impl FnOnce() + 'static) {
    let f = Closure::once_into_js(f);
    let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(f.unchecked_ref(), 0);
}

/// The worker's state. The page runs two workers of this code: one answers
/// estimates and batches, the other measures reasons ([`Request::Explain`]),
/// so an estimate never waits behind the previous product's reasons.
#[derive(Clone, Default)]
struct State {
    model: Rc<RefCell<Option<Estimator>>>,
    /// The newest estimate request, waiting for its turn (requests that
    /// arrive meanwhile replace it).
    estimate_pending: Rc<RefCell<Option<(u64, String)>>>,
    /// The newest reasons request: older ones are dropped between passes.
    explain_latest: Rc<Cell<u64>>,
    explain_pending: Rc<RefCell<Option<(u64, String)>>>,
    explaining: Rc<RefCell<Option<(u64, Explaining)>>>,
    /// The adaptation to the shop's products under way, and the newest
    /// adaptation request (older ones stop at their next batch).
    adapting: Rc<RefCell<Option<Job>>>,
    adapt_latest: Rc<Cell<u64>>,
    /// The adaptation laid over the model.
    own: Rc<RefCell<Option<Applied>>>,
    /// The file being priced, and the newest batch request (a part stops
    /// at its next step when a newer request came).
    batching: Rc<RefCell<Option<BatchJob>>>,
    batch_latest: Rc<Cell<u64>>,
    /// This is the page's first worker (it asks the server for the model):
    /// it keeps adaptations in IndexedDB and adapts again when the model changed.
    first: Rc<Cell<bool>>,
}

impl State {
    /// Loads the model at a URL or from the visitor's file; on failure the
    /// model loaded before (if any) stays.
    async fn load(self, source: Source) {
        let result = match &source {
            Source::Url(url, check_server) => fetch_and_load(url, *check_server).await,
            Source::File(file) => read_file(file).await.and_then(|bytes| {
                let n = bytes.len() as u64;
                Estimator::from_bytes(&bytes).map(|est| (est, n, Origin::File)).map_err(damaged)
            }),
        };
        match result {
            Ok((est, bytes, origin)) => {
                let c = card(&est, bytes);
                *self.model.borrow_mut() = Some(est);
                // Reasons and an adaptation under way belong to the model that was replaced.
                self.explaining.borrow_mut().take();
                self.own.borrow_mut().take();
                let job = self.adapting.borrow_mut().take();
                let (cached, notice) = match origin {
                    Origin::Cached => (true, None),
                    Origin::KeptCached(why) => (
                        true,
                        Some(format!(
                            "the site's model could not be checked for an update ({why}): this browser's copy"
                        )),
                    ),
                    Origin::Updated => {
                        (false, Some("a newer model was published: this browser's copy was replaced".into()))
                    }
                    Origin::Network | Origin::File => (false, None),
                };
                send(&Reply::Ready { card: c, cached, notice });
                if self.explain_pending.borrow().is_some() {
                    let state = self.clone();
                    later(move || state.start_explaining());
                }
                match job {
                    // Begun on the model before: again, on this one.
                    Some(job) => self.start_adapting(job.name, job.content),
                    None => wasm_bindgen_futures::spawn_local(self.restore_own()),
                }
            }
            Err(message) => send(&Reply::LoadFailed { message, kept_previous: self.model.borrow().is_some() }),
        }
    }

    /// Answers the newest estimate request: the linear members' first
    /// answer, then the estimate from one encoder pass.
    fn answer_estimate(&self) {
        let Some((id, text)) = self.estimate_pending.borrow_mut().take() else { return };
        let model = self.model.borrow();
        let Some(est) = model.as_ref() else {
            return send(&Reply::Estimate { id, result: Err("the model is not loaded yet".into()) });
        };
        // The page shows the linear members' answer while the encoder runs.
        if let Ok(Some(price)) = est.first_estimate(&Product::from_free_text(cut_input(&text).0)) {
            send(&Reply::First { id, price });
        }
        send(&Reply::Estimate { id, result: estimate(est, &text) });
    }

    /// Starts the newest reasons request (once a model is loaded).
    fn start_explaining(self) {
        let model = self.model.borrow();
        let Some(est) = model.as_ref() else { return };
        let Some((id, text)) = self.explain_pending.borrow_mut().take() else { return };
        let product = Product::from_free_text(cut_input(&text).0);
        match est.start_explaining(&product, ExplainOptions { comparables: 0, ..Default::default() }) {
            Ok(x) if x.pending() == 0 => {
                send(&Reply::Why { id, result: Ok(Why::from_explanation(&x.explanation(), true)) })
            }
            Ok(x) => {
                *self.explaining.borrow_mut() = Some((id, x));
                drop(model);
                later(move || self.explain_step(id));
            }
            Err(e) => send(&Reply::Why { id, result: Err(e.to_string()) }),
        }
    }

    /// Measures the encoder's share of one more word of request `id`'s
    /// reasons, then yields: a newer request goes first, and this one is
    /// dropped.
    fn explain_step(self, id: u64) {
        if self.explain_latest.get() != id {
            return;
        }
        let step = {
            let model = self.model.borrow();
            let mut slot = self.explaining.borrow_mut();
            match (model.as_ref(), slot.as_mut()) {
                (Some(est), Some((xid, x))) if *xid == id => x.occlude_next(est, 1).map(|()| x.pending()),
                _ => return,
            }
        };
        match step {
            Ok(0) | Err(_) => {
                let Some((_, x)) = self.explaining.borrow_mut().take() else { return };
                let result = step.map(|_| Why::from_explanation(&x.explanation(), true)).map_err(|e| e.to_string());
                send(&Reply::Why { id, result });
            }
            Ok(_) => later(move || self.explain_step(id)),
        }
    }

    /// Lays the adaptation kept from an earlier visit over the model; the
    /// first worker adapts the kept products again when the model changed.
    async fn restore_own(self) {
        let Some(kept) = own::kept().await else { return };
        let adaptation = {
            let model = self.model.borrow();
            let Some(est) = model.as_ref() else { return };
            if est.check_adaptable().is_err() {
                // A model of the visitor's that cannot be adapted: the kept products wait.
                return;
            }
            own::adaptation_for(&kept, est)
        };
        match adaptation {
            Some(a) => {
                let skipped = vec![];
                if let Err(message) = self.apply(Applied { adaptation: a, name: kept.name, skipped }) {
                    send(&Reply::AdaptFailed { message, cancelled: false });
                    return;
                }
                if let Some(applied) = self.own.borrow().as_ref() {
                    send(&Reply::Adapted { own: summary(applied), restored: true });
                }
            }
            None if self.first.get() => self.start_adapting(kept.name, kept.content),
            None => {}
        }
    }

    /// Lays `applied` over the model (taking off any adaptation before).
    fn apply(&self, applied: Applied) -> Result<(), String> {
        let mut model = self.model.borrow_mut();
        let est = model.as_mut().ok_or("the model is not loaded yet")?;
        est.remove_adaptation();
        est.apply_adaptation(&applied.adaptation).map_err(|e| e.to_string())?;
        *self.own.borrow_mut() = Some(applied);
        // Reasons under way were measured on the model before.
        self.explaining.borrow_mut().take();
        Ok(())
    }

    /// Takes the adaptation off the model (and the reasons measured with it).
    fn unapply(&self) {
        self.own.borrow_mut().take();
        if let Some(est) = self.model.borrow_mut().as_mut() {
            est.remove_adaptation();
        }
        self.explaining.borrow_mut().take();
    }

    /// Starts adapting the model to the products of a file's text.
    fn start_adapting(&self, name: String, content: String) {
        let id = self.adapt_latest.get() + 1;
        self.adapt_latest.set(id);
        // A job under way gives way; its "before" is still the one to put back.
        let earlier = self.adapting.borrow_mut().take();
        let mut model = self.model.borrow_mut();
        let Some(est) = model.as_mut() else {
            return send(&Reply::AdaptFailed { message: "the model is not loaded yet".into(), cancelled: false });
        };
        let previous = match earlier {
            Some(job) => job.previous,
            None => self.own.borrow_mut().take(),
        };
        est.remove_adaptation();
        let put_back = |est: &mut Estimator, previous: Option<Applied>| {
            if let Some(p) = previous
                && est.apply_adaptation(&p.adaptation).is_ok()
            {
                *self.own.borrow_mut() = Some(p);
            }
        };
        if let Err(e) = est.check_adaptable() {
            put_back(est, previous);
            return send(&Reply::AdaptFailed { message: e.to_string(), cancelled: false });
        }
        if let Some(message) = page_file_refusal(&name, content.len() as u64) {
            put_back(est, previous);
            return send(&Reply::AdaptFailed { message, cancelled: false });
        }
        let items = match pricer::adapt::read_shop_file(
            est,
            &name,
            std::io::Cursor::new(content.clone().into_bytes()),
            pricer::readers::Prices::DecimalPoint,
        ) {
            Ok(items) => items,
            Err(e) => {
                put_back(est, previous);
                return send(&Reply::AdaptFailed { message: e.to_string(), cancelled: false });
            }
        };
        send(&Reply::AdaptProgress { done: 0, total: items.len() });
        *self.adapting.borrow_mut() = Some(Job { id, name, content, items, values: vec![], previous });
        drop(model);
        let state = self.clone();
        later(move || state.adapt_step(id));
    }

    /// Embeds one more batch of the shop's products, then yields; fits the
    /// adaptation after the last.
    fn adapt_step(self, id: u64) {
        if self.adapt_latest.get() != id {
            return;
        }
        let finished = {
            let model = self.model.borrow();
            let mut slot = self.adapting.borrow_mut();
            let (Some(est), Some(job)) = (model.as_ref(), slot.as_mut()) else { return };
            if job.id != id {
                return;
            }
            let at = job.values.len();
            let end = (at + pricer::estimator::BATCH).min(job.items.len());
            let values = est.member_values(&job.items.products[at..end]);
            job.values.extend(values);
            send(&Reply::AdaptProgress { done: end, total: job.items.len() });
            end == job.items.len()
        };
        if !finished {
            return later(move || self.adapt_step(id));
        }
        let Some(mut job) = self.adapting.borrow_mut().take() else { return };
        let fitted = {
            let model = self.model.borrow();
            let Some(est) = model.as_ref() else { return };
            let values = std::mem::take(&mut job.values);
            pricer::adapt::fit(est, &job.items, values, &job.name)
        };
        let applied = fitted.map_err(|e| e.to_string()).and_then(|a| {
            let bytes = a.to_bytes().map_err(|e| e.to_string())?;
            let skipped = job.items.skipped.clone();
            self.apply(Applied { adaptation: a, name: job.name.clone(), skipped })?;
            Ok(bytes)
        });
        match applied {
            Ok(bytes) => {
                let own = self.own.borrow().as_ref().map(summary);
                let kept = Kept { name: job.name, content: job.content, adaptation: bytes };
                wasm_bindgen_futures::spawn_local(async move {
                    // Kept before the page hears of it, so the second worker finds it.
                    let _ = own::keep(&kept).await;
                    if let Some(own) = own {
                        send(&Reply::Adapted { own, restored: false });
                    }
                });
            }
            Err(message) => {
                if let Some(p) = job.previous {
                    let _ = self.apply(p);
                }
                send(&Reply::AdaptFailed { message, cancelled: false });
            }
        }
    }

    /// Starts pricing a file's records (its first part).
    fn start_batch(&self, name: String, content: String) {
        let id = self.batch_latest.get() + 1;
        self.batch_latest.set(id);
        self.batching.borrow_mut().take();
        if self.model.borrow().is_none() {
            return send(&Reply::BatchFailed { message: "the model is not loaded yet".into() });
        }
        if let Some(message) = page_file_refusal(&name, content.len() as u64) {
            return send(&Reply::BatchFailed { message });
        }
        match BatchJob::new(id, &name, content) {
            Ok(job) => {
                send(&Reply::BatchProgress { done: 0, total: job.part });
                *self.batching.borrow_mut() = Some(job);
                let state = self.clone();
                later(move || state.batch_step(id));
            }
            Err(message) => send(&Reply::BatchFailed { message }),
        }
    }

    /// Prices the file's next part, if it has one.
    fn next_batch(&self) {
        let id = self.batch_latest.get() + 1;
        let mut slot = self.batching.borrow_mut();
        let Some(job) = slot.as_mut().filter(|j| j.part == 0 && j.before < j.count) else {
            return send(&Reply::BatchFailed { message: "no file is waiting to be priced further".into() });
        };
        self.batch_latest.set(id);
        job.id = id;
        job.part = (job.count - job.before).min(BATCH_ROWS);
        send(&Reply::BatchProgress { done: 0, total: job.part });
        let state = self.clone();
        later(move || state.batch_step(id));
    }

    /// Prices a few more records, then yields; an estimate asked meanwhile
    /// is answered first, so it never waits for the file.
    fn batch_step(self, id: u64) {
        if self.batch_latest.get() != id {
            return;
        }
        if self.estimate_pending.borrow().is_some() {
            self.answer_estimate();
        }
        let reply = {
            let model = self.model.borrow();
            let mut slot = self.batching.borrow_mut();
            let (Some(est), Some(job)) = (model.as_ref(), slot.as_mut()) else { return };
            if job.id != id {
                return;
            }
            if job.step(est) {
                Some(job.done(false))
            } else {
                send(&Reply::BatchProgress { done: job.read, total: job.part });
                None
            }
        };
        match reply {
            Some(reply) => {
                if let Reply::BatchDone { left: 0, .. } = reply {
                    self.batching.borrow_mut().take();
                }
                send(&reply);
            }
            None => later(move || self.batch_step(id)),
        }
    }

    /// Stops the part under way; its rows so far are shown, and the file is dropped.
    fn cancel_batch(&self) {
        self.batch_latest.set(self.batch_latest.get() + 1);
        if let Some(mut job) = self.batching.borrow_mut().take() {
            send(&job.done(true));
        }
    }

    fn cancel_adapting(&self) {
        self.adapt_latest.set(self.adapt_latest.get() + 1);
        let Some(job) = self.adapting.borrow_mut().take() else { return };
        if let Some(p) = job.previous {
            let _ = self.apply(p);
        }
        send(&Reply::AdaptFailed { message: "adapting was cancelled".into(), cancelled: true });
    }

    fn handle(&self, request: Request) {
        match request {
            Request::Load { url, check_server } => {
                if check_server {
                    self.first.set(true);
                }
                wasm_bindgen_futures::spawn_local(self.clone().load(Source::Url(url, check_server)))
            }
            Request::Adapt { name, content } => self.start_adapting(name, content),
            Request::CancelAdapt => self.cancel_adapting(),
            Request::ReloadOwn => {
                self.unapply();
                wasm_bindgen_futures::spawn_local(self.clone().restore_own())
            }
            Request::ForgetOwn => {
                self.adapt_latest.set(self.adapt_latest.get() + 1);
                self.adapting.borrow_mut().take();
                self.unapply();
                let first = self.first.get();
                wasm_bindgen_futures::spawn_local(async move {
                    let result = if first { own::forget().await } else { Ok(()) };
                    match result {
                        Ok(()) => send(&Reply::Forgotten),
                        Err(message) => send(&Reply::AdaptFailed { message, cancelled: false }),
                    }
                });
            }
            Request::Estimate { id, text } => {
                // Only the newest request is worth an answer (the user typing
                // on): it waits a turn of the event loop.
                *self.estimate_pending.borrow_mut() = Some((id, text));
                let state = self.clone();
                later(move || state.answer_estimate());
            }
            Request::Explain { id, text } => {
                self.explain_latest.set(id);
                self.explaining.borrow_mut().take();
                *self.explain_pending.borrow_mut() = Some((id, text));
                let state = self.clone();
                later(move || state.start_explaining());
            }
            Request::Batch { name, content } => self.start_batch(name, content),
            Request::BatchNext => self.next_batch(),
            Request::CancelBatch => self.cancel_batch(),
        }
    }
}

/// The worker's entry point: listens for the page's requests.
pub fn run() {
    console_error_panic_hook::set_once();
    let state = State::default();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        // A model file the visitor opened comes as a File, everything else as JSON text.
        if let Ok(file) = msg.data().dyn_into::<web_sys::File>() {
            return wasm_bindgen_futures::spawn_local(state.clone().load(Source::File(file)));
        }
        let Some(text) = msg.data().as_string() else { return };
        match serde_json::from_str::<Request>(&text) {
            Ok(request) => state.handle(request),
            Err(e) => send(&Reply::LoadFailed {
                message: format!("bad request: {e}"),
                kept_previous: state.model.borrow().is_some(),
            }),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    send(&Reply::Started);
}
