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

/// Starts the worker from a blob that loads its script and wasm by absolute
/// URL, so the app works from any sub-path. `<html data-worker>` names the
/// build started.
pub(crate) fn start_worker() -> Result<Worker, JsValue> {
    let build = worker_build();
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = root.set_attribute("data-worker", build);
    }
    let script = format!(
        "importScripts({js:?}); wasm_bindgen({wasm:?});",
        js = base_url(&format!("{build}.js")),
        wasm = base_url(&format!("{build}_bg.wasm"))
    );
    let parts = js_sys::Array::of1(&JsValue::from_str(&script));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    Worker::new(&url)
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
}

impl Conn {
    pub(crate) fn new() -> Result<Conn, JsValue> {
        let worker = start_worker()?;
        let explainer = start_worker().ok();
        Ok(Conn {
            worker: StoredValue::new_local(Some(worker)),
            explainer: StoredValue::new_local(explainer),
            explainer_started: StoredValue::new(false),
            explainer_failed: StoredValue::new(false),
            loaded: StoredValue::new_local(None),
            loads: StoredValue::new(0),
            explainer_loads: StoredValue::new(0),
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
        }
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

    /// Reasons for an estimate: from the explainer when it has the model's
    /// load under way or done, else from the worker.
    /// A new estimate was asked for: both workers drop the reasons they
    /// are measuring (for the estimate it replaces), so it has the cores.
    pub(crate) fn drop_reasons(&self) {
        for w in [self.worker, self.explainer] {
            w.with_value(|w| {
                if let Some(w) = w {
                    post(w, &Request::DropReasons)
                }
            })
        }
    }

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
