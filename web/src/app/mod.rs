//! The page: a Leptos (CSR) app, one file per section. It starts the
//! workers that run the model ([`conn`]) and shows the status, the estimate
//! form and its reasons, batch pricing, the shop's own products and the
//! model card.

use crate::protocol::*;
use leptos::prelude::*;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::MessageEvent;

mod about;
mod batch;
mod conn;
mod estimate;
mod own;
mod pool;
mod reasons;
mod status;

use about::AboutTheModel;
use batch::{BatchPricing, BatchState};
use conn::Conn;
use estimate::{EstimateForm, EstimateResult, EstimateState};
use own::{OwnProducts, OwnState};
use pool::Pool;
use status::{ModelState, Status};

/// Where the default model lives, relative to the page.
pub(crate) const MODEL_PATH: &str = "models/default.gguf";

/// The model's loading state, as the status line shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LoadState {
    Loading { loaded: u64, total: u64 },
    Ready { cached: bool },
    Failed(String),
}

/// `path` made absolute against the page's base URL, so the app works from any sub-path.
pub(crate) fn base_url(path: &str) -> String {
    let doc = web_sys::window().and_then(|w| w.document());
    let base = doc.and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(path, &base).map(|u| u.href()).unwrap_or_else(|_| path.to_string())
}

/// The model the page loads: `?model=PATH` (a file on this site, relative to
/// the page) or the site's default; its absolute URL and how the card names it.
pub(crate) fn model_to_load() -> Result<(String, String), String> {
    let default = || Ok((base_url(MODEL_PATH), format!("{MODEL_PATH} (this site's model)")));
    let Some(location) = web_sys::window().map(|w| w.location()) else { return default() };
    let query = location.search().unwrap_or_default();
    let asked = web_sys::UrlSearchParams::new_with_str(&query).ok().and_then(|q| q.get("model"));
    let Some(asked) = asked.filter(|m| !m.trim().is_empty()) else { return default() };
    let url = web_sys::Url::new_with_base(&asked, &base_url("."))
        .map_err(|_| format!("?model={asked} is not a URL the page can read"))?;
    let here = location.origin().unwrap_or_default();
    if url.origin() != here {
        return Err(format!(
            "?model= must name a model file on this site, as a relative URL (models/mine.gguf); \
             {asked} is on another origin ({}), and the page loads nothing from elsewhere",
            url.origin()
        ));
    }
    Ok((url.href(), format!("{asked} (linked with ?model=)")))
}

/// The file chosen in a file input; the input is cleared, so that choosing
/// the same file again (edited since) is seen again.
pub(crate) fn chosen_file(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    let input: web_sys::HtmlInputElement = event_target(ev);
    let file = input.files().and_then(|f| f.get(0))?;
    input.set_value("");
    Some(file)
}

/// The service worker (`sw.js`) keeps the app's files for offline visits.
pub(crate) fn register_service_worker() {
    if let Some(w) = web_sys::window() {
        let sw = w.navigator().service_worker();
        let _ = sw.register(&base_url("sw.js"));
    }
}

#[component]
pub(crate) fn App() -> impl IntoView {
    let model = ModelState::new();
    let estimate = EstimateState::new();
    let batch = BatchState::new();
    let own = OwnState::new();
    let pool = Pool::new(batch, own);
    let conn = match Conn::new() {
        Ok(c) => c,
        Err(e) => {
            model.load.set(LoadState::Failed(format!("the browser could not start a worker: {e:?}")));
            Conn::none()
        }
    };
    // Whatever was waiting on the worker gets a message and its buttons
    // back: an answer that cannot be read never leaves the page stuck.
    let worker_trouble = move |message: String| {
        if estimate.busy.get_untracked() {
            estimate.busy.set(false);
            estimate.result_id.set(estimate.next_id.get_untracked());
            estimate.result.set(Some(Err(message.clone())));
        }
        if batch.progress.get_untracked().is_some() {
            batch.fail(message.clone());
        }
        if own.progress.get_untracked().is_some() {
            own.progress.set(None);
            own.error.set(Some(message.clone()));
        }
        if matches!(model.load.get_untracked(), LoadState::Loading { .. }) {
            model.load.set(LoadState::Failed(message));
        }
    };
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        worker_trouble(format!("the model's worker stopped ({}): reload the page", e.message()))
    });
    conn.worker.with_value(|w| {
        if let Some(w) = w {
            w.set_onerror(Some(on_error.as_ref().unchecked_ref()))
        }
    });
    on_error.forget();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(raw) = msg.data().as_string() else { return };
        let reply = match serde_json::from_str::<Reply>(&raw) {
            Ok(reply) => reply,
            Err(e) => {
                return worker_trouble(format!("the model's worker sent an answer the page could not read ({e})"));
            }
        };
        match reply {
            Reply::Started => model.load_default(conn),
            Reply::ThreadsFailed { message } => {
                if let Err(e) = conn.threads_failed(&message) {
                    worker_trouble(format!(
                        "the browser could not start a worker ({e}) after the one with threads failed ({message})"
                    ))
                }
            }
            Reply::Ready { memory, threads, .. } => {
                model.on_reply(&reply);
                conn.worker_loaded();
                pool.model_loaded(memory, threads);
                pool.reset(conn, "another model was loaded while the file was being priced: price it again");
                // A new model: its adaptation, if any, is announced after this.
                own.adapted.set(None);
                conn.send(Request::WarmUp);
            }
            Reply::WarmedUp { runs, millis, last_millis } => conn::mark_warm_up(runs, millis, last_millis),
            Reply::Progress { .. } | Reply::LoadFailed { .. } => model.on_reply(&reply),
            // Only the explainer has the shared cell that stops reasons.
            Reply::ReasonsStopped { .. } => conn::count_stopped_reasons(),
            Reply::First { .. } | Reply::Estimate { .. } | Reply::Why { .. } => {
                if let Some(req) = estimate.on_reply(reply) {
                    // After the frame that paints the price: the reasons' first
                    // encoder pass must not compete with it.
                    request_animation_frame(move || set_timeout(move || conn.explain(req), Duration::ZERO));
                }
            }
            Reply::BatchProgress { .. } | Reply::BatchDone { .. } | Reply::BatchFailed { .. } => {
                if batch.on_reply(0, reply) {
                    pool.tell(conn, batch.workers(), &Request::CancelBatch);
                }
            }
            Reply::AdaptProgress { .. }
            | Reply::AdaptShare { .. }
            | Reply::Adapted { .. }
            | Reply::AdaptFailed { .. }
            | Reply::Forgotten => {
                if matches!(reply, Reply::Adapted { restored: false, .. } | Reply::Forgotten) {
                    pool.reset(conn, "your products changed while the file was being priced: price it again");
                }
                own.on_reply(0, reply, conn, pool)
            }
        }
    });
    conn.worker.with_value(|w| {
        if let Some(w) = w {
            w.set_onmessage(Some(on_message.as_ref().unchecked_ref()))
        }
    });
    on_message.forget();
    // The explainer answers only with reasons; if it cannot load the model,
    // the worker gives the reasons instead.
    let on_explainer = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(raw) = msg.data().as_string() else { return };
        let Ok(reply) = serde_json::from_str::<Reply>(&raw) else { return };
        match reply {
            Reply::Started => conn.explainer_started(),
            Reply::Why { .. } => {
                estimate.on_reply(reply);
            }
            Reply::ReasonsStopped { .. } => conn::count_stopped_reasons(),
            Reply::Ready { .. } => {
                conn.explainer_failed.set_value(false);
                conn.explainer_send(Request::WarmUp);
            }
            Reply::LoadFailed { .. } => conn.explainer_failed.set_value(true),
            _ => {}
        }
    });
    conn.explainer.with_value(|w| {
        if let Some(w) = w {
            w.set_onmessage(Some(on_explainer.as_ref().unchecked_ref()))
        }
    });
    on_explainer.forget();

    view! {
        <header>
            <h1>"Pricer"</h1>
            <p class="tagline">"What should this cost? Describe a product and get an estimate with a likely range."</p>
            <p class="privacy">"Private by design: the model runs in your browser, and nothing you type or upload leaves this page."</p>
        </header>
        <main>
            <Status model=model conn=conn />
            <section class="estimate">
                <h2>"Estimate a price"</h2>
                <EstimateForm state=estimate model=model conn=conn />
                <EstimateResult state=estimate />
            </section>
            <BatchPricing state=batch model=model conn=conn pool=pool />
            <OwnProducts state=own model=model conn=conn pool=pool />
            <AboutTheModel model=model conn=conn />
        </main>
        <footer>"Pricer estimates from text alone; check before you buy."</footer>
    }
}

/// Mounts the page.
pub fn main() {
    console_error_panic_hook::set_once();
    register_service_worker();
    leptos::mount::mount_to_body(App);
}
