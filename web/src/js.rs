//! Small helpers for the browser's JavaScript objects, for page and worker alike.

use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// A JavaScript error as text: its message, or what it says of itself.
pub(crate) fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Milliseconds from the page's or worker's clock (`performance.now()`).
pub(crate) fn now_ms() -> f64 {
    Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// A file the visitor chose, read as text.
#[cfg(feature = "page")]
pub(crate) async fn file_text(file: &web_sys::File) -> Result<String, String> {
    let text = wasm_bindgen_futures::JsFuture::from(file.text())
        .await
        .map_err(|e| format!("{} could not be read: {}", file.name(), js_err(e)))?;
    text.as_string().ok_or_else(|| format!("{} could not be read as text", file.name()))
}
