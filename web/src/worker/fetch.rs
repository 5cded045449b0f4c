//! The model's bytes: fetched through Cache Storage (a conditional request
//! when a copy is kept, offline too), or read from a file the visitor opened.

use super::{scope, send};
use crate::js::js_err;
use crate::protocol::*;
use js_sys::{Reflect, Uint8Array};
use pricer::Estimator;
use pricer::estimator::keys;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

/// Cache Storage bucket of model files; bump the suffix to drop old ones.
pub(super) const MODEL_CACHE: &str = "pricer-models-v1";

/// A model's bytes with the validators the server sent (for the next
/// conditional request).
pub(super) struct Fetched {
    bytes: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
}

pub(super) async fn model_cache() -> Result<web_sys::Cache, String> {
    let caches = scope().caches().map_err(js_err)?;
    Ok(JsFuture::from(caches.open(MODEL_CACHE)).await.map_err(js_err)?.unchecked_into())
}

/// The copy in Cache Storage, if any.
pub(super) async fn cached_model(url: &str) -> Option<Fetched> {
    let cache = model_cache().await.ok()?;
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    let resp = hit.dyn_into::<Response>().ok()?;
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let buf = JsFuture::from(resp.array_buffer().ok()?).await.ok()?;
    Some(Fetched { bytes: Uint8Array::new(&buf).to_vec(), etag, last_modified })
}

/// What the server said when asked for the model.
pub(super) enum Answer {
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
pub(super) async fn ask_server(url: &str, cached: Option<&Fetched>) -> Result<Answer, String> {
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
pub(super) async fn store_in_cache(url: &str, f: &Fetched) -> Result<(), String> {
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

pub(super) async fn drop_from_cache(url: &str) {
    if let Ok(cache) = model_cache().await {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
}

pub(super) fn damaged(e: pricer::Error) -> String {
    format!("the model file is damaged or not a Pricer model ({e})")
}

/// The model at `url`: the server's copy when it changed (or there is no
/// cached one), else the cached copy, which also serves offline. A new file
/// that fails to load never replaces a good cached one.
pub(super) async fn fetch_and_load(url: &str, check_server: bool) -> Result<(Estimator, u64, Origin), String> {
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
pub(super) enum Origin {
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

pub(super) fn card(est: &Estimator, bytes: u64) -> ModelCard {
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

/// A model file the visitor opened; one larger than any Pricer model is
/// refused before its bytes are read.
pub(super) async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
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
