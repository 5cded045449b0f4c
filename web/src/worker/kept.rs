//! The shop's own products in the worker: an adaptation under way (a batch
//! of products embedded per turn of the event loop, so estimates and a
//! cancel get through), and the adaptation kept in IndexedDB for later
//! visits, offline too.

use crate::protocol::Shard;
use js_sys::{Object, Reflect, Uint8Array};
use pricer::adapt::{Adaptation, OwnItems, Skipped};
use pricer::estimator::MemberValues;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbRequest, IdbTransactionMode};

/// IndexedDB database and object store of the adaptation, and its one key.
const DB: &str = "pricer";
const STORE: &str = "own-products";
const KEY: &str = "current";

/// An adaptation laid over the model: the file's name and the records it skipped.
pub struct Applied {
    pub adaptation: Adaptation,
    pub name: String,
    pub skipped: Vec<Skipped>,
}

/// An adaptation under way: this worker embeds its shard of the products;
/// the first worker also gathers the other workers' shares, then fits.
pub struct Job {
    pub id: u64,
    /// The page's number for the adaptation (0: this worker alone, as when
    /// the kept products are adapted to a new model).
    pub page_job: u64,
    pub name: String,
    pub content: String,
    pub items: OwnItems,
    pub shard: Shard,
    /// Every product's member values, in file order, as they come in.
    pub values: Vec<Option<Result<MemberValues, pricer::Error>>>,
    /// This worker's products embedded so far.
    pub done: usize,
    /// The other workers' shares not in yet (their shard indexes).
    pub waiting: Vec<usize>,
    /// The adaptation before, taken off while the products are embedded
    /// (they are read by the model as published) and put back on a cancel.
    pub previous: Option<Applied>,
}

impl Job {
    /// This worker's products.
    pub fn mine(&self) -> usize {
        self.shard.count(0, self.items.len())
    }
}

/// What IndexedDB keeps: the file (to adapt again when the published model
/// changes) and the adaptation fitted on it.
pub struct Kept {
    pub name: String,
    pub content: String,
    pub adaptation: Vec<u8>,
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// A promise of an IndexedDB request's result.
fn done(req: &IdbRequest) -> js_sys::Promise {
    let req = req.clone();
    js_sys::Promise::new(&mut |resolve, reject| {
        let r = req.clone();
        let ok = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = req.clone();
        let failed = Closure::once_into_js(move || {
            let why = r.error().ok().flatten().map(|e| e.message()).unwrap_or_else(|| "unknown error".into());
            let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(&format!("IndexedDB: {why}")));
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(failed.unchecked_ref()));
    })
}

async fn open() -> Result<IdbDatabase, String> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let factory = scope.indexed_db().map_err(js_err)?.ok_or("this browser keeps no IndexedDB here")?;
    let req = factory.open_with_u32(DB, 1).map_err(js_err)?;
    let r = req.clone();
    let upgrade = Closure::once_into_js(move || {
        if let Ok(db) = r.result() {
            let _ = db.unchecked_into::<IdbDatabase>().create_object_store(STORE);
        }
    });
    req.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
    Ok(JsFuture::from(done(&req)).await.map_err(js_err)?.unchecked_into())
}

async fn store(mode: IdbTransactionMode) -> Result<web_sys::IdbObjectStore, String> {
    let db = open().await?;
    db.transaction_with_str_and_mode(STORE, mode).map_err(js_err)?.object_store(STORE).map_err(js_err)
}

/// Keeps the file and its adaptation (replacing any kept before).
pub async fn keep(k: &Kept) -> Result<(), String> {
    let value = Object::new();
    let set = |key: &str, v: &JsValue| Reflect::set(&value, &key.into(), v).map(|_| ()).map_err(js_err);
    set("name", &k.name.as_str().into())?;
    set("content", &k.content.as_str().into())?;
    set("adaptation", &Uint8Array::from(k.adaptation.as_slice()).into())?;
    let req = store(IdbTransactionMode::Readwrite).await?.put_with_key(&value, &KEY.into()).map_err(js_err)?;
    JsFuture::from(done(&req)).await.map_err(js_err)?;
    Ok(())
}

/// What is kept, if anything (a store that cannot be read counts as empty).
pub async fn kept() -> Option<Kept> {
    let req = store(IdbTransactionMode::Readonly).await.ok()?.get(&KEY.into()).ok()?;
    let value = JsFuture::from(done(&req)).await.ok()?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    let get = |key: &str| Reflect::get(&value, &key.into()).ok();
    Some(Kept {
        name: get("name")?.as_string()?,
        content: get("content")?.as_string()?,
        adaptation: get("adaptation")?.dyn_into::<Uint8Array>().ok()?.to_vec(),
    })
}

/// Removes what is kept.
pub async fn forget() -> Result<(), String> {
    let req = store(IdbTransactionMode::Readwrite).await?.delete(&KEY.into()).map_err(js_err)?;
    JsFuture::from(done(&req)).await.map_err(js_err)?;
    Ok(())
}

/// The adaptation in `k`, if it was fitted on this model.
pub fn adaptation_for(k: &Kept, est: &pricer::Estimator) -> Option<Adaptation> {
    let a = Adaptation::from_bytes(&k.adaptation).ok()?;
    let crc = pricer::adapt::model_crc(&est.file).ok()?;
    (a.base_crc == crc).then_some(a)
}
