//! The Web Worker: fetches the model (through Cache Storage), loads it with
//! the shared crate, and answers estimate and batch requests. The page sends
//! JSON [`Request`]s and gets JSON [`Reply`]s.

use crate::protocol::{ModelSource, Reply, Request, Shard};
use batch::BatchJob;
use fetch::{Origin, card, damaged, fetch_and_load, read_file};
use kept::{Applied, Job};
use pricer::Estimator;
use pricer::explain::Explaining;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

mod adapt;
mod answers;
mod batch;
mod fetch;
mod kept;

/// The worker's global scope (its `self`).
fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Posts a reply the page can read ([`Reply::readable`]).
fn send(reply: &Reply) {
    if let Some(text) = reply.readable() {
        let _ = scope().post_message(&JsValue::from_str(&text));
    }
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
    /// The adaptation kept in IndexedDB is being laid over the model: a
    /// file's rows wait for it, so that every row sees the same model.
    restoring: Rc<Cell<bool>>,
    /// The warm-up ([`Request::WarmUp`]) began; it runs once.
    warmed: Rc<Cell<bool>>,
}

impl State {
    /// Lays the kept adaptation over the model ([`State::restore_own`]),
    /// marked as under way meanwhile.
    fn spawn_restore(&self) {
        self.restoring.set(true);
        let state = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            state.clone().restore_own().await;
            state.restoring.set(false);
        });
    }

    /// Loads the model at a URL (asking the server whether it changed when
    /// `check_server`) or from the visitor's file; on failure the model
    /// loaded before (if any) stays.
    async fn load(self, source: ModelSource, check_server: bool) {
        let result = match &source {
            ModelSource::Url(url) => fetch_and_load(url, check_server).await,
            ModelSource::File(file) => read_file(file).await.and_then(|bytes| {
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
                send(&Reply::Ready {
                    card: c,
                    memory: wasm_memory_bytes(),
                    threads: pricer::encoder::compute_threads(),
                    cached,
                    notice,
                });
                if self.explain_pending.borrow().is_some() {
                    let state = self.clone();
                    later(move || state.start_explaining());
                }
                match job {
                    // Begun on the model before: again, on this one.
                    Some(job) => self.start_adapting(job.name, job.content, 0, Shard::ALL),
                    None => self.spawn_restore(),
                }
            }
            Err(message) => send(&Reply::LoadFailed { message, kept_previous: self.model.borrow().is_some() }),
        }
    }

    fn handle(&self, request: Request) {
        match request {
            Request::Load { url, check_server } => {
                if check_server {
                    self.first.set(true);
                }
                wasm_bindgen_futures::spawn_local(self.clone().load(ModelSource::Url(url), check_server))
            }
            Request::Adapt { name, content, job, shard } => self.start_adapting(name, content, job, shard),
            Request::AdaptValues { job, index, values } => self.receive_share(job, index, values),
            Request::CancelAdapt => self.cancel_adapting(),
            Request::ReloadOwn => {
                self.unapply();
                self.spawn_restore()
            }
            Request::ForgetOwn => {
                self.adapt_latest.set(self.adapt_latest.get() + 1);
                self.adapting.borrow_mut().take();
                self.unapply();
                let first = self.first.get();
                wasm_bindgen_futures::spawn_local(async move {
                    let result = if first { kept::forget().await } else { Ok(()) };
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
            Request::DropReasons => {
                self.explain_latest.set(0);
                self.explaining.borrow_mut().take();
                self.explain_pending.borrow_mut().take();
            }
            Request::Batch { name, content, shard } => self.start_batch(name, content, shard),
            Request::BatchNext => self.next_batch(),
            Request::CancelBatch => self.cancel_batch(),
            Request::WarmUp => self.clone().warm_up(),
        }
    }
}

/// The size of this worker's wasm memory (it only grows).
fn wasm_memory_bytes() -> u64 {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64
}

/// The worker's entry point: listens for the page's requests.
pub fn run() {
    console_error_panic_hook::set_once();
    let state = State::default();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        // A model file the visitor opened comes as a File, everything else as JSON text.
        if let Ok(file) = msg.data().dyn_into::<web_sys::File>() {
            return wasm_bindgen_futures::spawn_local(state.clone().load(ModelSource::File(file), false));
        }
        if let Some(cell) = msg.data().dyn_ref::<js_sys::SharedArrayBuffer>() {
            return answers::watch_newest_estimate(cell);
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
