//! The workers that price a file or read the shop's products: the first
//! worker and extra ones beside it, each taking its [`Shard`] of the records
//! (record `r` goes to worker `r % n`) with the same model. The extra
//! workers start when a file is priced or adapted to, stay for the next,
//! and stop when the model or the adaptation laid over it changes.

use super::batch::BatchState;
use super::conn::{Conn, post, send_load, start_worker};
use super::own::OwnState;
use crate::protocol::*;
use js_sys::Reflect;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

/// At most this many workers price a file, whatever the machine.
const MAX_WORKERS: usize = 16;

/// An extra worker: whether its model is loaded, and the requests waiting for it.
struct Extra {
    worker: Worker,
    ready: bool,
    waiting: Vec<Request>,
}

#[derive(Clone, Copy)]
pub(crate) struct Pool {
    extra: StoredValue<Vec<Extra>, LocalStorage>,
    /// One worker's wasm memory with the model loaded (from its `Ready`).
    memory: StoredValue<u64>,
    /// What the extra workers' answers go to.
    batch: BatchState,
    own: OwnState,
}

impl Pool {
    pub(crate) fn new(batch: BatchState, own: OwnState) -> Pool {
        Pool { extra: StoredValue::new_local(Vec::new()), memory: StoredValue::new(0), batch, own }
    }

    /// The first worker loaded a model of `memory` bytes, and computes one
    /// estimate on `threads` threads.
    pub(crate) fn model_loaded(&self, memory: u64, threads: usize) {
        self.memory.set_value(memory);
        // `<html data-worker-memory data-estimate-threads>`, for benchmarks and tests.
        if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
            let _ = root.set_attribute("data-worker-memory", &memory.to_string());
            let _ = root.set_attribute("data-estimate-threads", &threads.to_string());
        }
    }

    /// The model or the adaptation laid over it changed: the extra workers
    /// hold the one before, so they stop (new ones start with the next
    /// file), and a file they were pricing stops, saying `why`. The first
    /// worker adapts alone to products it was adapting to.
    pub(crate) fn reset(&self, conn: Conn, why: &str) {
        let running = self.extra.with_value(|e| !e.is_empty());
        let batch = self.batch;
        if running && batch.workers() > 1 && batch.progress.get_untracked().is_some() {
            conn.send(Request::CancelBatch);
            batch.fail(why.into());
        }
        self.own.alone();
        self.extra.update_value(|extra| {
            for e in extra.drain(..) {
                e.worker.terminate();
            }
        });
    }

    /// Workers for a file: `?workers=N`, else the cores less one for the
    /// page, and no more than a quarter of the device's memory holds.
    pub(crate) fn size(&self) -> usize {
        let Some(window) = web_sys::window() else { return 1 };
        let asked = window.location().search().ok().and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok());
        if let Some(n) = asked.and_then(|q| q.get("workers")).and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0) {
            return n.min(MAX_WORKERS);
        }
        let nav = window.navigator();
        let by_cores = (nav.hardware_concurrency() as usize).saturating_sub(1).max(1);
        // `navigator.deviceMemory` (GB, rounded; Chromium only): 4 where unknown.
        let gb = Reflect::get(&nav, &"deviceMemory".into()).ok().and_then(|v| v.as_f64()).unwrap_or(4.0);
        let by_memory = (gb * 1e9 / 4.0 / self.memory.get_value().max(1) as f64) as usize;
        by_cores.min(by_memory.max(1)).min(MAX_WORKERS)
    }

    /// Sends `req` to worker `i` of the file's workers (0: the first
    /// worker), starting it first if need be; it gets the request once its
    /// model is loaded.
    pub(crate) fn send(&self, conn: Conn, i: usize, req: Request) -> Result<(), String> {
        if i == 0 {
            conn.send(req);
            return Ok(());
        }
        while self.extra.with_value(|e| e.len()) < i {
            self.start(conn).map_err(|e| format!("the browser could not start another worker: {e:?}"))?;
        }
        self.extra.update_value(|extra| {
            let e = &mut extra[i - 1];
            if e.ready { post(&e.worker, &req) } else { e.waiting.push(req) }
        });
        Ok(())
    }

    /// Sends `req` to each of the first `n` workers.
    pub(crate) fn send_all(&self, conn: Conn, n: usize, req: &Request) -> Result<(), String> {
        (0..n).try_for_each(|i| self.send(conn, i, req.clone()))
    }

    /// Sends `req` to those of the first `n` workers that are running (a
    /// cancel: a worker started now would have nothing to stop).
    pub(crate) fn tell(&self, conn: Conn, n: usize, req: &Request) {
        let running = self.extra.with_value(|e| e.len());
        for i in 0..n.min(running + 1) {
            let _ = self.send(conn, i, req.clone());
        }
    }

    /// Starts one more extra worker; it loads the model the first worker holds.
    fn start(&self, conn: Conn) -> Result<(), JsValue> {
        let worker = start_worker(0)?;
        let i = self.extra.with_value(|e| e.len()) + 1;
        let pool = *self;
        let (batch, own) = (self.batch, self.own);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
            let Some(reply) = msg.data().as_string().and_then(|raw| serde_json::from_str::<Reply>(&raw).ok()) else {
                return pool.trouble(conn, "a worker sent an answer the page could not read".into());
            };
            match reply {
                Reply::Started => pool.extra.with_value(|extra| {
                    conn.loaded.with_value(|model| {
                        if let (Some(e), Some(model)) = (extra.get(i - 1), model) {
                            send_load(&e.worker, model, false)
                        }
                    })
                }),
                Reply::Ready { .. } => pool.extra.update_value(|extra| {
                    if let Some(e) = extra.get_mut(i - 1) {
                        e.ready = true;
                        for req in e.waiting.drain(..) {
                            post(&e.worker, &req);
                        }
                    }
                }),
                Reply::LoadFailed { message, .. } => {
                    pool.trouble(conn, format!("another worker could not load the model ({message})"))
                }
                Reply::BatchProgress { .. } | Reply::BatchDone { .. } | Reply::BatchFailed { .. } => {
                    let failed = batch.on_reply(i, reply);
                    if failed {
                        pool.tell(conn, batch.workers(), &Request::CancelBatch);
                    }
                }
                Reply::AdaptProgress { .. } | Reply::AdaptShare { .. } | Reply::AdaptFailed { .. } => {
                    own.on_reply(i, reply, conn, pool)
                }
                _ => {}
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        self.extra.update_value(|e| e.push(Extra { worker, ready: false, waiting: vec![] }));
        Ok(())
    }

    /// An extra worker failed: what it was doing, a file or the shop's
    /// products, stops on every worker, saying why.
    fn trouble(&self, conn: Conn, message: String) {
        if self.batch.progress.get_untracked().is_some() {
            self.batch.fail(message.clone());
            self.tell(conn, self.batch.workers(), &Request::CancelBatch);
        }
        if self.own.progress.get_untracked().is_some() {
            self.own.fail(message);
            self.tell(conn, self.own.workers(), &Request::CancelAdapt);
        }
    }
}
