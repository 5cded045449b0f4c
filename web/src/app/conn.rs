//! The page's lines to its two workers: starting them (the build this
//! browser runs), posting requests, and which model each holds.

use super::base_url;
use crate::protocol::*;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::Worker;

/// The smallest module that uses relaxed SIMD's 8-bit dot product
/// (`i32x4.relaxed_dot_i8x16_i7x16_add_s` on three splats): engines without
/// relaxed SIMD refuse it.
pub(crate) const RELAXED_SIMD_PROBE: [u8; 40] = [
    0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 19, 1, 17, 0, 65, 1, 253, 15, 65, 1, 253, 15,
    65, 1, 253, 15, 253, 147, 2, 11,
];

/// The worker build this browser can run: `worker_relaxed` (int8 products
/// with relaxed SIMD, about twice as fast) where the probe validates, else
/// `worker` (plain SIMD). Both compute the same integers, so the same estimates.
pub(crate) fn worker_build() -> &'static str {
    let probe = js_sys::Uint8Array::from(&RELAXED_SIMD_PROBE[..]);
    if js_sys::WebAssembly::validate(&probe).unwrap_or(false) { "worker_relaxed" } else { "worker" }
}

/// At most this many threads for one estimate, whatever the machine.
const MAX_THREADS: usize = 8;

/// Threads for one estimate in the first worker: `?threads=N` (0: the
/// single-thread build), else one per core, at most [`MAX_THREADS`], and
/// the single-thread build on one core (the threaded build on a pool of
/// one was 11-17% slower than it, and 4-9% once its parts ran on the
/// calling thread; docs/benchmarks.md). Only
/// where the page is cross-origin isolated (memory shared between workers:
/// the service worker's headers, from the page's second load) and the
/// browser has relaxed SIMD (the threaded build uses it); else 0.
pub(crate) fn estimate_threads() -> usize {
    let Some(window) = web_sys::window() else { return 0 };
    let isolated = js_sys::Reflect::get(&window, &"crossOriginIsolated".into()).ok().and_then(|v| v.as_bool());
    if isolated != Some(true) || worker_build() != "worker_relaxed" {
        return 0;
    }
    let query = window.location().search().ok().and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok());
    let asked = query.and_then(|q| q.get("threads")).and_then(|v| v.parse::<usize>().ok());
    match asked {
        Some(n) => n.min(MAX_THREADS),
        None => match window.navigator().hardware_concurrency() as usize {
            cores if cores < 2 => 0,
            cores => cores.min(MAX_THREADS),
        },
    }
}

/// Starts a worker from a blob that loads its script and wasm by absolute
/// URL, so the app works from any sub-path: with `threads` > 0 the threaded
/// build (`threads/`, a module worker that starts rayon's pool before it
/// listens), else the single-thread build this browser runs. `<html
/// data-worker data-threads>` name what the first worker runs.
pub(crate) fn start_worker(threads: usize) -> Result<Worker, JsValue> {
    if threads > 0 {
        mark_worker("worker_threads", threads);
        // A failure becomes `Reply::ThreadsFailed`: the page then starts
        // the single-thread build instead.
        let script = format!(
            "try {{ const m = await import({js:?}); await m.default({{ module_or_path: {wasm:?} }}); \
             await m.initThreadPool({threads}); m.runWorker(); }} catch (e) {{ \
             postMessage(JSON.stringify({{ type: 'threads_failed', message: String(e) }})); }}",
            js = base_url("threads/worker_threads.js"),
            wasm = base_url("threads/worker_threads_bg.wasm"),
        );
        let opts = web_sys::WorkerOptions::new();
        opts.set_type(web_sys::WorkerType::Module);
        return Worker::new_with_options(&blob_url(&script)?, &opts);
    }
    let build = worker_build();
    let script = format!(
        "importScripts({js:?}); wasm_bindgen({wasm:?});",
        js = base_url(&format!("{build}.js")),
        wasm = base_url(&format!("{build}_bg.wasm"))
    );
    Worker::new(&blob_url(&script)?)
}

/// `<html data-worker data-threads>`: the first worker's build and threads.
fn mark_worker(build: &str, threads: usize) {
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = root.set_attribute("data-worker", build);
        let _ = root.set_attribute("data-threads", &threads.to_string());
    }
}

/// One i32 in shared memory, where the page is cross-origin isolated.
fn shared_cell() -> Option<js_sys::Int32Array> {
    let window = web_sys::window()?;
    let isolated = js_sys::Reflect::get(&window, &"crossOriginIsolated".into()).ok()?.as_bool()?;
    isolated.then(|| js_sys::Int32Array::new(&js_sys::SharedArrayBuffer::new(4)))
}

/// Counts the explainer's passes stopped for a newer estimate
/// (`<html data-reasons-stopped>`; tests and benchmarks read it).
pub(crate) fn count_stopped_reasons() {
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let n = root.get_attribute("data-reasons-stopped").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let _ = root.set_attribute("data-reasons-stopped", &(n + 1).to_string());
    }
}

/// `<html data-warm-up-runs data-warm-up-ms data-warm-up-last-ms>`: the
/// first worker's warm-up ([`Reply::WarmedUp`]; benchmarks read it).
pub(crate) fn mark_warm_up(runs: u32, millis: f64, last_millis: f64) {
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = root.set_attribute("data-warm-up-runs", &runs.to_string());
        let _ = root.set_attribute("data-warm-up-ms", &format!("{millis:.0}"));
        let _ = root.set_attribute("data-warm-up-last-ms", &format!("{last_millis:.0}"));
    }
}

fn blob_url(script: &str) -> Result<String, JsValue> {
    let parts = js_sys::Array::of1(&JsValue::from_str(script));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)?;
    web_sys::Url::create_object_url_with_blob(&blob)
}

pub(crate) fn post(worker: &Worker, req: &Request) {
    if let Ok(text) = serde_json::to_string(req) {
        let _ = worker.post_message(&JsValue::from_str(&text));
    }
}

/// The page's lines to its two workers (the same code): `worker` answers
/// estimates and batches, `explainer` measures each estimate's reasons, so
/// a new estimate never waits behind the previous product's reasons. Without
/// a second worker, the first does both.
#[derive(Clone, Copy)]
pub(crate) struct Conn {
    pub(crate) worker: StoredValue<Option<Worker>, LocalStorage>,
    pub(crate) explainer: StoredValue<Option<Worker>, LocalStorage>,
    /// The explainer listens (its `Started` came) and holds the same model
    /// as the worker (its load did not fail).
    pub(crate) explainer_started: StoredValue<bool>,
    pub(crate) explainer_failed: StoredValue<bool>,
    /// The model the worker holds, counted per load, and the count the
    /// explainer was last sent.
    pub(crate) loaded: StoredValue<Option<ModelSource>, LocalStorage>,
    pub(crate) loads: StoredValue<u64>,
    pub(crate) explainer_loads: StoredValue<u64>,
    /// The newest estimate's id, in memory the explainer shares (only in a
    /// cross-origin isolated page): it stops a pass for older reasons
    /// between two layers, rather than finishing it beside the new estimate.
    pub(crate) newest_estimate: StoredValue<Option<js_sys::Int32Array>, LocalStorage>,
}

impl Conn {
    pub(crate) fn new() -> Result<Conn, JsValue> {
        let threads = estimate_threads();
        if threads == 0 {
            mark_worker(worker_build(), 0);
        }
        let worker = start_worker(threads)?;
        let explainer = start_worker(0).ok();
        Ok(Conn {
            worker: StoredValue::new_local(Some(worker)),
            explainer: StoredValue::new_local(explainer),
            explainer_started: StoredValue::new(false),
            explainer_failed: StoredValue::new(false),
            loaded: StoredValue::new_local(None),
            loads: StoredValue::new(0),
            explainer_loads: StoredValue::new(0),
            newest_estimate: StoredValue::new_local(shared_cell()),
        })
    }

    pub(crate) fn none() -> Conn {
        Conn {
            worker: StoredValue::new_local(None),
            explainer: StoredValue::new_local(None),
            explainer_started: StoredValue::new(false),
            explainer_failed: StoredValue::new(true),
            loaded: StoredValue::new_local(None),
            loads: StoredValue::new(0),
            explainer_loads: StoredValue::new(0),
            newest_estimate: StoredValue::new_local(None),
        }
    }

    /// The threaded worker could not start (`why`): the single-thread
    /// build takes its place, with its handlers, and says `Started` in turn.
    /// Fails (the browser's reason) when that one cannot start either.
    pub(crate) fn threads_failed(&self, why: &str) -> Result<(), String> {
        web_sys::console::warn_1(&format!("threads for one estimate failed, running on one: {why}").into());
        mark_worker(worker_build(), 0);
        if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
            let _ = root.set_attribute("data-threads-failed", why);
        }
        // The single-thread worker starts before the threaded one stops.
        let plain = start_worker(0).map_err(|e| {
            web_sys::console::error_1(&e);
            format!("{e:?}")
        })?;
        self.worker.update_value(|slot| {
            if let Some(old) = slot.replace(plain.clone()) {
                plain.set_onmessage(old.onmessage().as_ref());
                plain.set_onerror(old.onerror().as_ref());
                old.terminate();
            }
        });
        Ok(())
    }

    pub(crate) fn send(&self, req: Request) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    }

    /// A request for the second worker only.
    pub(crate) fn explainer_send(&self, req: Request) {
        self.explainer.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    }

    /// Asks the worker for a model (a URL, or a file the visitor opened,
    /// posted as it is: no copy into JSON).
    pub(crate) fn load(&self, req: ModelSource) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                send_load(w, &req, true)
            }
        });
        self.loaded.set_value(Some(req));
    }

    /// The worker loaded the model last asked for: the explainer loads it too.
    pub(crate) fn worker_loaded(&self) {
        self.loads.update_value(|n| *n += 1);
        self.sync_explainer();
    }

    pub(crate) fn explainer_started(&self) {
        self.explainer_started.set_value(true);
        // It listens now: the shared cell of the newest estimate.
        self.newest_estimate.with_value(|cell| {
            self.explainer.with_value(|w| {
                if let (Some(w), Some(cell)) = (w, cell) {
                    let _ = w.post_message(&cell.buffer());
                }
            })
        });
        self.sync_explainer();
    }

    pub(crate) fn sync_explainer(&self) {
        let due = self.explainer_loads.get_value() != self.loads.get_value();
        if !self.explainer_started.get_value() || !due {
            return;
        }
        self.explainer_loads.set_value(self.loads.get_value());
        self.loaded.with_value(|req| {
            self.explainer.with_value(|w| {
                if let (Some(w), Some(req)) = (w, req) {
                    send_load(w, req, false)
                }
            })
        });
    }

    /// Estimate `newest` was asked for: both workers drop the reasons they
    /// are measuring (for the estimate it replaces), so it has the cores;
    /// in an isolated page the explainer sees it in the shared cell within
    /// one layer, else when its pass ends.
    pub(crate) fn drop_reasons(&self, newest: u64) {
        self.newest_estimate.with_value(|cell| {
            if let Some(cell) = cell {
                // Ids wrap at 32 bits here; the explainer compares the low 32 bits.
                let _ = js_sys::Atomics::store(cell, 0, newest as i32);
            }
        });
        for w in [self.worker, self.explainer] {
            w.with_value(|w| {
                if let Some(w) = w {
                    post(w, &Request::DropReasons)
                }
            })
        }
    }

    /// Reasons for an estimate: from the explainer when it has the model's
    /// load under way or done, else from the worker.
    pub(crate) fn explain(&self, req: Request) {
        let use_explainer = self.explainer_started.get_value()
            && !self.explainer_failed.get_value()
            && self.explainer_loads.get_value() == self.loads.get_value();
        let target = if use_explainer { self.explainer } else { self.worker };
        target.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    }
}

/// `check_server`: ask the server whether the model changed (the first
/// worker), or take the copy it just kept (the second).
pub(crate) fn send_load(w: &Worker, req: &ModelSource, check_server: bool) {
    match req {
        ModelSource::Url(url) => post(w, &Request::Load { url: url.clone(), check_server }),
        ModelSource::File(file) => {
            let _ = w.post_message(file);
        }
    }
}
