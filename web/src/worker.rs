//! The Web Worker: fetches the model (through Cache Storage), loads it with
//! the shared crate, and answers estimate and batch requests. The page sends
//! JSON [`Request`]s and gets JSON [`Reply`]s.

use crate::{BatchRow, EstimateView, MAX_INPUT_CHARS, ModelCard, Reply, Request, TestSplit, Why};
use js_sys::{Reflect, Uint8Array};
use pricer::estimator::keys;
use pricer::explain::ExplainOptions;
use pricer::readers::{Format, read_products};
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

fn send(reply: &Reply) {
    let text =
        serde_json::to_string(reply).unwrap_or_else(|e| format!("{{\"type\":\"load_failed\",\"message\":\"{e}\"}}"));
    let _ = scope().post_message(&JsValue::from_str(&text));
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn now_ms() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

/// The model's bytes: from Cache Storage when there, else from the network
/// (reporting progress) and then stored for next time.
async fn fetch_model(url: &str) -> Result<(Vec<u8>, bool), String> {
    let caches = scope().caches().map_err(js_err)?;
    let cache: web_sys::Cache = JsFuture::from(caches.open(MODEL_CACHE)).await.map_err(js_err)?.unchecked_into();
    let hit = JsFuture::from(cache.match_with_str(url)).await.map_err(js_err)?;
    if let Ok(resp) = hit.dyn_into::<Response>() {
        let buf = JsFuture::from(resp.array_buffer().map_err(js_err)?).await.map_err(js_err)?;
        let bytes = Uint8Array::new(&buf).to_vec();
        send(&Reply::Progress { loaded: bytes.len() as u64, total: bytes.len() as u64 });
        return Ok((bytes, true));
    }
    let resp: Response = JsFuture::from(scope().fetch_with_str(url)).await.map_err(js_err)?.unchecked_into();
    if !resp.ok() {
        return Err(format!("the model file could not be fetched: HTTP {} {}", resp.status(), resp.status_text()));
    }
    let total: u64 = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse().ok()).unwrap_or(0);
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
    Ok((bytes, false))
}

async fn store_in_cache(url: &str, bytes: &[u8]) -> Result<(), String> {
    let caches = scope().caches().map_err(js_err)?;
    let cache: web_sys::Cache = JsFuture::from(caches.open(MODEL_CACHE)).await.map_err(js_err)?.unchecked_into();
    let mut copy = bytes.to_vec();
    let resp = Response::new_with_opt_u8_array(Some(&mut copy)).map_err(js_err)?;
    JsFuture::from(cache.put_with_str(url, &resp)).await.map_err(js_err)?;
    Ok(())
}

async fn drop_from_cache(url: &str) {
    let Ok(caches) = scope().caches() else { return };
    if let Ok(c) = JsFuture::from(caches.open(MODEL_CACHE)).await {
        let cache: web_sys::Cache = c.unchecked_into();
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
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

async fn load(url: String, model: Rc<RefCell<Option<Estimator>>>) {
    let result = async {
        let (bytes, cached) = fetch_model(&url).await?;
        match Estimator::from_bytes(&bytes) {
            Ok(est) => {
                if !cached {
                    // A full page of quota is not fatal: the app still works, only not offline.
                    let _ = store_in_cache(&url, &bytes).await;
                }
                let c = card(&est, bytes.len() as u64);
                *model.borrow_mut() = Some(est);
                Ok((c, cached))
            }
            Err(e) => {
                // A damaged copy in the cache must not stick: drop it, so a retry fetches afresh.
                drop_from_cache(&url).await;
                Err(format!("the model file is damaged or not a Pricer model ({e})"))
            }
        }
    }
    .await;
    match result {
        Ok((card, cached)) => send(&Reply::Ready { card, cached }),
        Err(message) => send(&Reply::LoadFailed { message }),
    }
}

/// The text the worker reads: at most [`MAX_INPUT_CHARS`] characters, and whether it was cut.
fn cut_input(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_INPUT_CHARS) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// The estimate with its comparables and the linear members' reasons, from
/// one encoder pass.
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

/// The reasons with the encoder's share of the most influential words (one
/// encoder pass per word taken out).
fn why(est: &Estimator, text: &str) -> Result<Why, String> {
    let product = Product::from_free_text(cut_input(text).0);
    let x =
        est.explain(&product, ExplainOptions { comparables: 0, ..Default::default() }).map_err(|e| e.to_string())?;
    Ok(Why::from_explanation(&x, true))
}

fn batch(est: &Estimator, name: &str, content: String) -> Vec<BatchRow> {
    let format = Format::from_name(name);
    let records = match read_products(std::io::Cursor::new(content.into_bytes()), format) {
        Ok(r) => r,
        Err(e) => return vec![BatchRow { line: 0, title: String::new(), result: Err(e.to_string()) }],
    };
    let mut rows = Vec::new();
    let mut pending: Vec<(u64, Product)> = Vec::new();
    let flush = |pending: &mut Vec<(u64, Product)>, rows: &mut Vec<BatchRow>| {
        let products: Vec<Product> = pending.iter().map(|(_, p)| p.clone()).collect();
        for ((line, p), r) in pending.drain(..).zip(est.estimate_batch(&products)) {
            rows.push(BatchRow {
                line,
                title: p.title,
                result: r.map(|e| (e.price, e.low, e.high)).map_err(|e| e.to_string()),
            });
        }
        send(&Reply::BatchProgress { done: rows.len() });
    };
    for (i, record) in records.enumerate() {
        match record {
            Ok(p) => pending.push((i as u64 + 1, p)),
            Err(e) => rows.push(BatchRow { line: e.line, title: String::new(), result: Err(e.reason) }),
        }
        if pending.len() >= pricer::estimator::BATCH {
            flush(&mut pending, &mut rows);
        }
    }
    flush(&mut pending, &mut rows);
    rows.sort_by_key(|r| r.line);
    rows
}

/// Runs `f` after the messages already queued (a zero-delay timeout).
fn later(f: impl FnOnce() + 'static) {
    let f = Closure::once_into_js(f);
    let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(f.unchecked_ref(), 0);
}

/// The worker's entry point: listens for the page's requests.
pub fn run() {
    console_error_panic_hook::set_once();
    let model: Rc<RefCell<Option<Estimator>>> = Rc::new(RefCell::new(None));
    // The newest estimate request: reasons for older ones are not computed.
    let latest = Rc::new(Cell::new(0u64));
    // The estimate request waiting for its turn.
    let pending: Rc<RefCell<Option<(u64, String)>>> = Rc::new(RefCell::new(None));
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(text) = msg.data().as_string() else { return };
        let request: Request = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => return send(&Reply::LoadFailed { message: format!("bad request: {e}") }),
        };
        match request {
            Request::Load { url } => wasm_bindgen_futures::spawn_local(load(url, model.clone())),
            Request::Estimate { id, text } => {
                // Only the newest request is worth an answer (the user typing
                // on): it waits a turn of the event loop, and requests that
                // arrived meanwhile replace it.
                latest.set(id);
                *pending.borrow_mut() = Some((id, text));
                let (model, latest, pending) = (model.clone(), latest.clone(), pending.clone());
                later(move || {
                    let Some((id, text)) = pending.borrow_mut().take() else { return };
                    // The page shows the linear members' answer while the encoder runs.
                    if let Some(est) = model.borrow().as_ref()
                        && let Ok(Some(price)) = est.first_estimate(&Product::from_free_text(cut_input(&text).0))
                    {
                        send(&Reply::First { id, price });
                    }
                    let result = match model.borrow().as_ref() {
                        Some(est) => estimate(est, &text),
                        None => Err("the model is not loaded yet".into()),
                    };
                    let ok = result.is_ok();
                    send(&Reply::Estimate { id, result });
                    if ok {
                        // The slower reasons wait another turn: a newer request goes first and this one is dropped.
                        later(move || {
                            if latest.get() != id {
                                return;
                            }
                            if let Some(est) = model.borrow().as_ref() {
                                send(&Reply::Why { id, result: why(est, &text) });
                            }
                        });
                    }
                });
            }
            Request::Batch { name, content } => {
                let rows = match model.borrow().as_ref() {
                    Some(est) => batch(est, &name, content),
                    None => vec![BatchRow {
                        line: 0,
                        title: String::new(),
                        result: Err("the model is not loaded yet".into()),
                    }],
                };
                send(&Reply::BatchDone { rows });
            }
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    send(&Reply::Started);
}
