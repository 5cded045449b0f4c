//! The page: a Leptos (CSR) app. It starts the worker that runs the model,
//! and shows the form, examples, batch pricing and the model card.

use leptos::prelude::*;
use pricer::estimator::keys;
use pricer::metrics::Grade;
use pricer_web::{
    BATCH_ROWS, BatchRow, Comparable, EstimateView, ModelCard, OwnSummary, Reply, Request, Why, batch_csv,
    page_file_refusal,
};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

/// How long the text must rest before an estimate starts by itself.
const TYPING_PAUSE_MS: u64 = 350;

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

/// Where the default model lives, relative to the page.
const MODEL_PATH: &str = "models/default.gguf";

/// Example products, one per category, to try in one click.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "Fridge",
        "Frigidaire 18 cu. ft. Top Freezer Refrigerator, Stainless Steel\nEnergy Star certified top-freezer refrigerator with two glass shelves, a gallon door storage bin, humidity-controlled crisper drawers and reversible doors. Brand: Frigidaire. Item weight: 150 pounds.",
    ),
    (
        "Guitar strings",
        "Elixir Strings 80/20 Bronze Acoustic Guitar Strings, Light\nLight gauge acoustic guitar strings with NANOWEB coating for a bright tone that lasts longer than uncoated strings. One set of six strings.",
    ),
    (
        "Cordless drill",
        "DEWALT 20V MAX Cordless Drill Driver Kit, 1/2 inch\nCompact, lightweight drill driver with a high-speed transmission, two batteries, a charger and a contractor bag. LED light with 20-second delay. Ergonomic handle.",
    ),
    (
        "Board game",
        "Catan Board Game, Base Game, Family Strategy Game\nTrade, build and settle the island of Catan in this award-winning strategy game for 3 to 4 players aged 10 and up. Playing time about 60 minutes.",
    ),
];

#[derive(Clone, Debug, PartialEq)]
enum LoadState {
    Loading { loaded: u64, total: u64 },
    Ready { cached: bool },
    Failed(String),
}

fn base_url(path: &str) -> String {
    let doc = web_sys::window().and_then(|w| w.document());
    let base = doc.and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(path, &base).map(|u| u.href()).unwrap_or_else(|_| path.to_string())
}

/// The model the page loads: `?model=PATH` (a file on this site, relative to
/// the page) or the site's default; its absolute URL and how the card names it.
fn model_to_load() -> Result<(String, String), String> {
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

/// The smallest module that uses relaxed SIMD's 8-bit dot product
/// (`i32x4.relaxed_dot_i8x16_i7x16_add_s` on three splats): engines without
/// relaxed SIMD refuse it.
const RELAXED_SIMD_PROBE: [u8; 40] = [
    0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 19, 1, 17, 0, 65, 1, 253, 15, 65, 1, 253, 15,
    65, 1, 253, 15, 253, 147, 2, 11,
];

/// The worker build this browser can run: `worker_relaxed` (int8 products
/// with relaxed SIMD, about twice as fast) where the probe validates, else
/// `worker` (plain SIMD). Both compute the same integers, so the same estimates.
fn worker_build() -> &'static str {
    let probe = js_sys::Uint8Array::from(&RELAXED_SIMD_PROBE[..]);
    if js_sys::WebAssembly::validate(&probe).unwrap_or(false) { "worker_relaxed" } else { "worker" }
}

/// Starts the worker from a blob that loads its script and wasm by absolute
/// URL, so the app works from any sub-path. `<html data-worker>` names the
/// build started.
fn start_worker() -> Result<Worker, JsValue> {
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

fn post(worker: &Worker, req: &Request) {
    if let Ok(text) = serde_json::to_string(req) {
        let _ = worker.post_message(&JsValue::from_str(&text));
    }
}

fn dollars(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let (whole, frac) = (cents / 100, (cents % 100).abs());
    let digits = whole.abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}${grouped}.{frac:02}", if x < 0.0 { "-" } else { "" })
}

fn register_service_worker() {
    if let Some(w) = web_sys::window() {
        let sw = w.navigator().service_worker();
        let _ = sw.register(&base_url("sw.js"));
    }
}

/// A model the page asked a worker to load.
#[derive(Clone)]
enum LoadRequest {
    Url(String),
    File(web_sys::File),
}

/// The page's lines to its two workers (the same code): `worker` answers
/// estimates and batches, `explainer` measures each estimate's reasons, so
/// a new estimate never waits behind the previous product's reasons. Without
/// a second worker, the first does both.
#[derive(Clone, Copy)]
struct Conn {
    worker: StoredValue<Option<Worker>, LocalStorage>,
    explainer: StoredValue<Option<Worker>, LocalStorage>,
    /// The explainer listens (its `Started` came) and holds the same model
    /// as the worker (its load did not fail).
    explainer_started: StoredValue<bool>,
    explainer_failed: StoredValue<bool>,
    /// The model the worker holds, counted per load, and the count the
    /// explainer was last sent.
    loaded: StoredValue<Option<LoadRequest>, LocalStorage>,
    loads: StoredValue<u64>,
    explainer_loads: StoredValue<u64>,
}

impl Conn {
    fn new() -> Result<Conn, JsValue> {
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

    fn none() -> Conn {
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

    fn send(&self, req: Request) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    }

    /// A request for the second worker only.
    fn explainer_send(&self, req: Request) {
        self.explainer.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    }

    /// Asks the worker for a model (a URL, or a file the visitor opened,
    /// posted as it is: no copy into JSON).
    fn load(&self, req: LoadRequest) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                send_load(w, &req, true)
            }
        });
        self.loaded.set_value(Some(req));
    }

    /// The worker loaded the model last asked for: the explainer loads it too.
    fn worker_loaded(&self) {
        self.loads.update_value(|n| *n += 1);
        self.sync_explainer();
    }

    fn explainer_started(&self) {
        self.explainer_started.set_value(true);
        self.sync_explainer();
    }

    fn sync_explainer(&self) {
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
    fn explain(&self, req: Request) {
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
fn send_load(w: &Worker, req: &LoadRequest, check_server: bool) {
    match req {
        LoadRequest::Url(url) => post(w, &Request::Load { url: url.clone(), check_server }),
        LoadRequest::File(file) => {
            let _ = w.post_message(file);
        }
    }
}

/// The model: loading state, card, and which file it is.
#[derive(Clone, Copy)]
struct ModelState {
    load: RwSignal<LoadState>,
    card: RwSignal<Option<ModelCard>>,
    /// How the card names the loaded model, and the one being loaded.
    source: RwSignal<String>,
    asked: RwSignal<String>,
    /// Worth knowing about the last load (a newer model arrived, or the
    /// cached copy was kept and why).
    notice: RwSignal<Option<String>>,
    /// Why a model file the visitor opened was refused (the previous model stays).
    file_error: RwSignal<Option<String>>,
}

impl ModelState {
    fn new() -> Self {
        ModelState {
            load: RwSignal::new(LoadState::Loading { loaded: 0, total: 0 }),
            card: RwSignal::new(None),
            source: RwSignal::new(String::new()),
            asked: RwSignal::new(String::new()),
            notice: RwSignal::new(None),
            file_error: RwSignal::new(None),
        }
    }

    fn ready(&self) -> bool {
        matches!(self.load.get(), LoadState::Ready { .. })
    }

    /// Asks the worker for the page's model (`?model=` or the default).
    fn load_default(&self, conn: Conn) {
        match model_to_load() {
            Ok((url, label)) => {
                self.asked.set(label);
                self.load.set(LoadState::Loading { loaded: 0, total: 0 });
                conn.load(LoadRequest::Url(url));
            }
            Err(message) => self.load.set(LoadState::Failed(message)),
        }
    }

    fn on_reply(&self, reply: &Reply) {
        match reply {
            // A file swapped in keeps the page usable: progress shows only while nothing is loaded.
            Reply::Progress { loaded, total } if !matches!(self.load.get_untracked(), LoadState::Ready { .. }) => {
                self.load.set(LoadState::Loading { loaded: *loaded, total: *total })
            }
            Reply::Ready { card, cached, notice } => {
                self.card.set(Some(card.clone()));
                self.source.set(self.asked.get_untracked());
                self.notice.set(notice.clone());
                self.file_error.set(None);
                self.load.set(LoadState::Ready { cached: *cached });
            }
            Reply::LoadFailed { message, kept_previous: true } => {
                self.file_error.set(Some(message.clone()));
                self.asked.set(self.source.get_untracked());
            }
            Reply::LoadFailed { message, kept_previous: false } => self.load.set(LoadState::Failed(message.clone())),
            _ => {}
        }
    }
}

/// The estimate form and its result.
#[derive(Clone, Copy)]
struct EstimateState {
    text: RwSignal<String>,
    listed: RwSignal<String>,
    result: RwSignal<Option<Result<EstimateView, String>>>,
    /// Which request the shown result answers (tests and automation wait on it).
    result_id: RwSignal<u64>,
    hint: RwSignal<Option<String>>,
    busy: RwSignal<bool>,
    next_id: RwSignal<u64>,
    /// As-you-type: the pending debounced estimate, the text last sent, and
    /// when each request left (for the click-to-shown time).
    typing: StoredValue<Option<leptos::leptos_dom::helpers::TimeoutHandle>, LocalStorage>,
    last_sent: StoredValue<String>,
    sent_at: StoredValue<(u64, f64)>,
    shown_ms: RwSignal<Option<f64>>,
    /// The first estimate (words and details alone) of a request: id, price,
    /// and when it reached the screen after the request.
    first: RwSignal<Option<(u64, f64, Option<f64>)>>,
}

impl EstimateState {
    fn new() -> Self {
        EstimateState {
            text: RwSignal::new(String::new()),
            listed: RwSignal::new(String::new()),
            result: RwSignal::new(None),
            result_id: RwSignal::new(0),
            hint: RwSignal::new(None),
            busy: RwSignal::new(false),
            next_id: RwSignal::new(0),
            typing: StoredValue::new_local(None),
            last_sent: StoredValue::new(String::new()),
            sent_at: StoredValue::new((0, 0.0)),
            shown_ms: RwSignal::new(None),
            first: RwSignal::new(None),
        }
    }

    fn cancel_typing(&self) {
        self.typing.update_value(|pending| {
            if let Some(h) = pending.take() {
                h.clear();
            }
        });
    }

    /// Sends the text for an estimate (or says what is missing).
    fn estimate(&self, conn: Conn) {
        self.cancel_typing();
        let t = self.text.get_untracked();
        if pricer::text::is_blank(&t) {
            self.hint.set(Some(
                "Describe the product first: its title on the first line, then anything you know about it.".into(),
            ));
            self.result.set(None);
            return;
        }
        self.hint.set(None);
        self.busy.set(true);
        let id = self.next_id.get_untracked() + 1;
        self.next_id.set(id);
        self.last_sent.set_value(t.clone());
        self.sent_at.set_value((id, now_ms()));
        conn.send(Request::Estimate { id, text: t });
    }

    /// Takes a reply; returns the request to send for the reasons of a new
    /// estimate shown.
    fn on_reply(&self, reply: Reply) -> Option<Request> {
        match reply {
            Reply::First { id, price } if id == self.next_id.get_untracked() => {
                let (sent_id, at) = self.sent_at.get_value();
                self.first.set(Some((id, price, (sent_id == id).then(|| now_ms() - at))));
            }
            Reply::Estimate { id, result } if id == self.next_id.get_untracked() => {
                let (sent_id, at) = self.sent_at.get_value();
                self.shown_ms.set((sent_id == id).then(|| now_ms() - at));
                let ok = result.is_ok();
                self.result_id.set(id);
                self.result.set(Some(result));
                self.busy.set(false);
                if ok {
                    return Some(Request::Explain { id, text: self.last_sent.get_value() });
                }
            }
            Reply::Why { id, result } if id == self.result_id.get_untracked() => {
                self.result.update(|shown| {
                    if let Some(Ok(e)) = shown {
                        match result {
                            Ok(why) => e.why = why,
                            // The first reasons stay; only the encoder's share is missing.
                            Err(_) => e.why.complete = true,
                        }
                    }
                });
            }
            _ => {}
        }
        None
    }
}

/// Pricing a whole file, a part of [`BATCH_ROWS`] records at a time.
#[derive(Clone, Copy)]
struct BatchState {
    name: RwSignal<String>,
    /// Records of the part priced so far, of how many, and when the part started.
    progress: RwSignal<Option<(usize, usize)>>,
    started_ms: StoredValue<f64>,
    /// The last part priced: its rows, the records before it and after it,
    /// and whether it was stopped.
    part: RwSignal<Option<BatchPart>>,
    error: RwSignal<Option<String>>,
}

#[derive(Clone)]
struct BatchPart {
    rows: Vec<BatchRow>,
    before: usize,
    left: usize,
    cancelled: bool,
}

impl BatchState {
    fn new() -> Self {
        BatchState {
            name: RwSignal::new(String::new()),
            progress: RwSignal::new(None),
            started_ms: StoredValue::new(0.0),
            part: RwSignal::new(None),
            error: RwSignal::new(None),
        }
    }

    /// A part starts: the table of the one before goes.
    fn start(&self) {
        self.part.set(None);
        self.error.set(None);
        self.progress.set(Some((0, 0)));
        self.started_ms.set_value(now_ms());
    }

    fn fail(&self, message: String) {
        self.progress.set(None);
        self.error.set(Some(message));
    }

    fn on_reply(&self, reply: Reply) {
        match reply {
            Reply::BatchProgress { done, total } => self.progress.set(Some((done, total))),
            Reply::BatchDone { rows, before, left, cancelled } => {
                self.progress.set(None);
                self.part.set(Some(BatchPart { rows, before, left, cancelled }));
            }
            Reply::BatchFailed { message } => self.fail(message),
            _ => {}
        }
    }

    /// "about 3 min left", once a few records give the pace.
    fn time_left(&self, done: usize, total: usize) -> Option<String> {
        let elapsed = now_ms() - self.started_ms.get_value();
        if done == 0 || done >= total || elapsed < 500.0 {
            return None;
        }
        let secs = elapsed / 1000.0 / done as f64 * (total - done) as f64;
        Some(if secs < 90.0 {
            format!("about {:.0} s left", secs.max(1.0))
        } else {
            format!("about {:.0} min left", secs / 60.0)
        })
    }
}

/// The shop's own products: an adaptation under way, the one in use, or why none.
#[derive(Clone, Copy)]
struct OwnState {
    /// Products embedded so far, of how many (while adapting).
    progress: RwSignal<Option<(usize, usize)>>,
    adapted: RwSignal<Option<OwnSummary>>,
    error: RwSignal<Option<String>>,
}

impl OwnState {
    fn new() -> Self {
        OwnState { progress: RwSignal::new(None), adapted: RwSignal::new(None), error: RwSignal::new(None) }
    }

    fn on_reply(&self, reply: Reply, conn: Conn) {
        match reply {
            Reply::AdaptProgress { done, total } => self.progress.set(Some((done, total))),
            Reply::Adapted { own, restored } => {
                self.progress.set(None);
                self.error.set(None);
                self.adapted.set(Some(own));
                if !restored {
                    // The second worker lays the same adaptation over its model.
                    conn.explainer_send(Request::ReloadOwn);
                }
            }
            Reply::AdaptFailed { message, cancelled } => {
                self.progress.set(None);
                self.error.set((!cancelled).then_some(message));
            }
            Reply::Forgotten => {
                self.progress.set(None);
                self.adapted.set(None);
            }
            _ => {}
        }
    }
}

#[component]
fn App() -> impl IntoView {
    let model = ModelState::new();
    let estimate = EstimateState::new();
    let batch = BatchState::new();
    let own = OwnState::new();
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
            Reply::Ready { .. } => {
                model.on_reply(&reply);
                conn.worker_loaded();
                // A new model: its adaptation, if any, is announced after this.
                own.adapted.set(None);
            }
            Reply::Progress { .. } | Reply::LoadFailed { .. } => model.on_reply(&reply),
            Reply::First { .. } | Reply::Estimate { .. } | Reply::Why { .. } => {
                if let Some(req) = estimate.on_reply(reply) {
                    conn.explain(req);
                }
            }
            Reply::BatchProgress { .. } | Reply::BatchDone { .. } | Reply::BatchFailed { .. } => batch.on_reply(reply),
            Reply::AdaptProgress { .. } | Reply::Adapted { .. } | Reply::AdaptFailed { .. } | Reply::Forgotten => {
                own.on_reply(reply, conn)
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
            Reply::Ready { .. } => conn.explainer_failed.set_value(false),
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
            <BatchPricing state=batch model=model conn=conn />
            <OwnProducts state=own model=model conn=conn />
            <AboutTheModel model=model conn=conn />
        </main>
        <footer>"Pricer estimates from text alone; check before you buy."</footer>
    }
}

/// Loading progress, ready, or what went wrong with a retry.
#[component]
fn Status(model: ModelState, conn: Conn) -> impl IntoView {
    view! {
        <section class="status" id="status" data-state=move || match model.load.get() {
            LoadState::Loading { .. } => "loading",
            LoadState::Ready { .. } => "ready",
            LoadState::Failed(_) => "error",
        }>
            {move || match model.load.get() {
                LoadState::Loading { loaded, total } => view! {
                    <label for="model-progress">"Loading the model"</label>
                    <progress id="model-progress" max=total.max(1).to_string() value=loaded.to_string()></progress>
                    <span class="bytes">{format!("{:.1} of {} MB", loaded as f64 / 1e6, if total > 0 { format!("{:.1}", total as f64 / 1e6) } else { "?".into() })}</span>
                }.into_any(),
                LoadState::Ready { cached } => view! {
                    <span class="ok">{if cached { "Model ready (from this browser's cache; works offline)" } else { "Model ready" }}</span>
                    {move || model.notice.get().map(|n| view! { <span class="note" id="model-notice">" ("{n}")"</span> })}
                }.into_any(),
                LoadState::Failed(msg) => view! {
                    <div class="error" role="alert" id="load-error">
                        <strong>"The model could not be loaded. "</strong>{msg}
                    </div>
                    <button id="retry" on:click=move |_| model.load_default(conn)>"Try again"</button>
                }.into_any(),
            }}
        </section>
    }
}

/// The product's text, a listed price, and the examples; estimates on
/// click and as the user types.
#[component]
fn EstimateForm(state: EstimateState, model: ModelState, conn: Conn) -> impl IntoView {
    // Estimates as the user types: once the text rests for a moment, and
    // only when it changed since the last estimate.
    let on_type = move |value: String| {
        state.text.set(value);
        state.cancel_typing();
        let handle = leptos::leptos_dom::helpers::set_timeout_with_handle(
            move || {
                state.typing.set_value(None);
                let t = state.text.get_untracked();
                if matches!(model.load.get_untracked(), LoadState::Ready { .. })
                    && !pricer::text::is_blank(&t)
                    && t != state.last_sent.get_value()
                {
                    state.estimate(conn);
                }
            },
            std::time::Duration::from_millis(TYPING_PAUSE_MS),
        );
        state.typing.set_value(handle.ok());
    };
    view! {
        <form on:submit=move |ev| { ev.prevent_default(); state.estimate(conn); }>
            <label for="description">"Product: title on the first line, then its description"</label>
            <textarea id="description" rows="8" placeholder="Stainless steel blender, 1200 W\nCrushes ice, six speeds, 64 oz pitcher..."
                prop:value=move || state.text.get()
                on:input=move |ev| on_type(event_target_value(&ev))></textarea>
            <div class="row">
                <label for="listed">"Listed price, if you have one (is it a deal?)"</label>
                <input id="listed" type="number" min="0" step="0.01" inputmode="decimal" placeholder="e.g. 79.99"
                    prop:value=move || state.listed.get()
                    on:input=move |ev| state.listed.set(event_target_value(&ev)) />
            </div>
            <button id="estimate" type="submit" disabled=move || !model.ready() || state.busy.get()>"Estimate"</button>
        </form>
        <div class="examples">
            <span>"Try an example: "</span>
            {EXAMPLES.iter().map(|(label, body)| view! {
                <button class="example" type="button" on:click=move |_| { state.text.set(body.to_string()); state.estimate(conn); }>{*label}</button>
            }).collect_view()}
        </div>
        {move || state.hint.get().map(|h| view! { <p class="hint" id="hint">{h}</p> })}
    }
}

/// The estimate, its range, a deal check, its reasons and comparables.
#[component]
fn EstimateResult(state: EstimateState) -> impl IntoView {
    let EstimateState { result, result_id, first, shown_ms, listed, .. } = state;
    view! {
        {move || first.get().filter(|(id, _, _)| *id != result_id.get()).map(|(_, price, _)| view! {
            <p class="first" id="first" aria-live="polite" data-price=format!("{price:.2}")>
                "First estimate from the words and details: "<strong>{dollars(price)}</strong>
                " (the model is still reading the whole text)"
            </p>
        })}
        {move || result.get().map(|r| match r {
            Ok(e) => {
                let deal = listed.get().trim().parse::<f64>().ok().filter(|p| *p > 0.0).map(|p| {
                    let diff = p - e.price;
                    let pct = 100.0 * diff.abs() / e.price.max(0.01);
                    if diff.abs() < 0.005 * e.price { "The listed price matches the estimate.".to_string() }
                    else if diff < 0.0 { format!("The listed price is {} ({pct:.0}%) under the estimate: looks like a deal.", dollars(-diff)) }
                    else { format!("The listed price is {} ({pct:.0}%) over the estimate.", dollars(diff)) }
                });
                view! {
                    <div class="result" id="result" aria-live="polite" data-id=move || result_id.get().to_string()>
                        <p class="price-line">"Estimated price "<strong id="price" data-price=format!("{:.2}", e.price)>{dollars(e.price)}</strong></p>
                        <p id="range" data-low=format!("{:.2}", e.low) data-high=format!("{:.2}", e.high)>
                            {format!("Likely between {} and {}", dollars(e.low), dollars(e.high))}
                        </p>
                        {deal.map(|d| view! { <p id="deal">{d}</p> })}
                        <p class="meta" id="took" data-shown-ms=move || shown_ms.get().map(|m| format!("{m:.0}")) data-millis=format!("{:.1}", e.millis)>
                            {move || match shown_ms.get() {
                                Some(m) => format!("Estimated in {:.0} ms (on screen {:.0} ms after the request)", e.millis, m),
                                None => format!("Estimated in {:.0} ms", e.millis),
                            }}
                        </p>
                        {move || first.get().filter(|(id, _, _)| *id == result_id.get()).map(|(_, price, ms)| view! {
                            <p class="meta" id="first-shown" data-price=format!("{price:.2}") data-shown-ms=ms.map(|m| format!("{m:.0}"))>
                                {match ms {
                                    Some(m) => format!("First estimate from the words and details alone: {}, on screen {m:.0} ms after the request", dollars(price)),
                                    None => format!("First estimate from the words and details alone: {}", dollars(price)),
                                }}
                            </p>
                        })}
                        {e.truncated.then(|| view! { <p class="note" id="truncated">{format!("The text was long: the model read its first {} characters, as the command line does.", e.prepared_chars)}</p> })}
                        {why_view(e.why.clone(), e.price)}
                        {comparables_view(e.comparables.clone())}
                    </div>
                }.into_any()
            }
            Err(msg) => view! { <p class="error" id="estimate-error" role="alert">{msg}</p> }.into_any(),
        })}
    }
}

/// A CSV or JSONL file of products, priced in the worker a part at a
/// time, with progress, the time left and a cancel button.
#[component]
fn BatchPricing(state: BatchState, model: ModelState, conn: Conn) -> impl IntoView {
    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
        input.set_value("");
        let name = file.name();
        state.name.set(name.clone());
        state.start();
        if let Some(message) = page_file_refusal(&name, file.size() as u64) {
            return state.fail(message);
        }
        wasm_bindgen_futures::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.text()).await {
                Ok(content) => conn.send(Request::Batch { name, content: content.as_string().unwrap_or_default() }),
                Err(_) => state.fail(format!("{name} could not be read")),
            }
        });
    };
    let next = move |_| {
        state.start();
        conn.send(Request::BatchNext);
    };
    let cancel = move |_| conn.send(Request::CancelBatch);
    view! {
        <section class="batch">
            <h2>"Price a whole file"</h2>
            <label for="batch-file">{format!(
                "A CSV (title, description, price optional) or JSONL file of products, up to {} MB; \
                 priced {} at a time while estimates go on",
                pricer_web::MAX_PAGE_FILE_BYTES / 1_000_000, thousands(BATCH_ROWS)
            )}</label>
            <input id="batch-file" type="file" accept=".csv,.jsonl,.json,.txt" disabled=move || !model.ready() || state.progress.get().is_some() on:change=on_file />
            {move || state.progress.get().map(|(done, total)| view! {
                <div class="row" id="batch-progress-row">
                    <progress id="batch-progress" max=total.max(1).to_string() value=done.to_string()></progress>
                    <span id="batch-progress-text" data-done=done.to_string() data-total=total.to_string()>{
                        if total == 0 { "Reading the file…".to_string() } else {
                            let left = state.time_left(done, total).map(|t| format!(" · {t}")).unwrap_or_default();
                            format!("Pricing… {done} of {total} records{left}")
                        }
                    }</span>
                    <button id="batch-cancel" type="button" on:click=cancel>"Cancel"</button>
                </div>
            })}
            {move || state.error.get().map(|m| view! { <p class="error" id="batch-error" role="alert">{m}</p> })}
            {move || state.part.get().map(|part| {
                let more = (part.left > 0 && !part.cancelled).then(|| view! {
                    <button id="batch-next" type="button" on:click=next disabled=move || state.progress.get().is_some()>
                        {format!("Price the next {} ({} records left)", thousands(part.left.min(BATCH_ROWS)), thousands(part.left))}
                    </button>
                });
                view! { {batch_table(&part, state.name.get())} {more} }
            })}
        </section>
    }
}

/// 12,345
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The shop's own priced products: the model adapted to them in the worker,
/// kept in this browser until forgotten.
#[component]
fn OwnProducts(state: OwnState, model: ModelState, conn: Conn) -> impl IntoView {
    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
        input.set_value("");
        let name = file.name();
        if let Some(message) = page_file_refusal(&name, file.size() as u64) {
            state.error.set(Some(message));
            return;
        }
        state.error.set(None);
        state.progress.set(Some((0, 0)));
        wasm_bindgen_futures::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.text()).await {
                Ok(content) => conn.send(Request::Adapt { name, content: content.as_string().unwrap_or_default() }),
                Err(_) => {
                    state.progress.set(None);
                    state.error.set(Some(format!("{name} could not be read")));
                }
            }
        });
    };
    let cancel = move |_| conn.send(Request::CancelAdapt);
    let forget = move |_| {
        conn.send(Request::ForgetOwn);
        conn.explainer_send(Request::ForgetOwn);
    };
    let status = move || {
        state.adapted.get().map(|o| {
            let skipped = (o.skipped_count > 0).then(|| {
                let more = o.skipped_count.saturating_sub(o.skipped.len());
                view! {
                    <details id="own-items-skipped">
                        <summary>{format!("{} records not used", o.skipped_count)}</summary>
                        <ul>
                            {o.skipped.iter().map(|s| view! { <li>{format!("{}:{}: {}", o.name, s.line, s.reason)}</li> }).collect_view()}
                            {(more > 0).then(|| view! { <li>{format!("… and {more} more")}</li> })}
                        </ul>
                    </details>
                }
            });
            view! {
                <p id="own-items-status" data-count=o.items.to_string()
                    data-mae-before=format!("{:.2}", o.before.mae) data-mae-after=format!("{:.2}", o.after.mae)>
                    {format!(
                        "Adapted to {} of your products ({}): every estimate, range and comparable now uses them. \
                         Cross-validated on them, the mean error went from {} to {} (RMSLE {:.3} to {:.3}, hits {:.0}% to {:.0}%); {}.",
                        o.items, o.name, dollars(o.before.mae), dollars(o.after.mae), o.before.rmsle, o.after.rmsle,
                        o.before.hits_pct, o.after.hits_pct, o.method
                    )}
                </p>
                {skipped}
                <button id="own-items-forget" on:click=forget>"Forget my products"</button>
            }
        })
    };
    view! {
        <section class="own">
            <h2>"Your own products"</h2>
            <p>"Every catalogue has its own price level. Give the model your priced products (CSV with title, price and \
                optional description and category columns, or JSONL) and it adapts to them: no retraining, and they never \
                leave this browser. They are kept here for your next visit."</p>
            <label for="own-items">"Your priced products"</label>
            <input id="own-items" type="file" accept=".csv,.jsonl,.json,.txt" disabled=move || !model.ready() on:change=on_file />
            {move || state.progress.get().map(|(done, total)| view! {
                <div class="row" id="own-items-progress-row">
                    <progress id="own-items-progress" max=total.max(1).to_string() value=done.to_string()></progress>
                    <span>{if total == 0 { "Reading your products…".to_string() } else { format!("Reading your products with the model: {done} of {total}") }}</span>
                    <button id="own-items-cancel" on:click=cancel>"Cancel"</button>
                </div>
            })}
            {move || state.error.get().map(|m| view! { <p class="error" id="own-items-error" role="alert">{m}</p> })}
            {status}
        </section>
    }
}

/// The model card, and another model file from disk.
#[component]
fn AboutTheModel(model: ModelState, conn: Conn) -> impl IntoView {
    let on_model_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
        model.file_error.set(None);
        model.asked.set(format!("{} (your file)", file.name()));
        if !matches!(model.load.get_untracked(), LoadState::Ready { .. }) {
            model.load.set(LoadState::Loading { loaded: 0, total: file.size() as u64 });
        }
        conn.load(LoadRequest::File(file));
    };
    view! {
        <section class="card">
            <h2>"About the model"</h2>
            <p id="model-source" data-source=move || model.source.get()>
                {move || if model.source.get().is_empty() { String::new() } else { format!("Model file: {}", model.source.get()) }}
            </p>
            {move || model.card.get().map(model_card)}
            <div class="row">
                <label for="model-file">"Use another Pricer model file (.gguf) from your disk; it stays on this page"</label>
                <input id="model-file" type="file" accept=".gguf" on:change=on_model_file />
            </div>
            {move || model.file_error.get().map(|m| view! {
                <p class="error" id="model-file-error" role="alert">{format!("That model file was not loaded, the previous model stays: {m}")}</p>
            })}
        </section>
    }
}

/// Percent change of a log(1 + price) weight: +12%.
fn percent(weight: f64) -> String {
    format!("{:+.0}%", 100.0 * weight.exp_m1())
}

/// The words and details that raised and lowered the estimate.
fn why_view(w: Why, price: f64) -> impl IntoView {
    let row = |class: &'static str, label: String, weight: f64| {
        let dir = if weight >= 0.0 { "up" } else { "down" };
        let word = (class == "word").then(|| label.clone());
        view! {
            <li class=format!("{class} {dir}") data-weight=format!("{weight:.4}") data-word=word>
                <span class="label">{label}</span>" "<span class="pct">{percent(weight)}</span>
            </li>
        }
    };
    let words = w.words.into_iter().map(|(l, v)| row("word", l, v)).collect_view();
    let details = w.details.into_iter().map(|(l, v)| row("detail", l, v)).collect_view();
    view! {
        <div class="why" id="why" data-complete=w.complete.to_string() data-typical=format!("{:.2}", w.typical)>
            <h3>"Why this price"</h3>
            <p class="why-sum">{format!("From {} typical to {}. The words that raised and lowered it most:", dollars(w.typical), dollars(price))}</p>
            <ul class="reasons">
                {words}
                {details}
                <li class="rest" data-weight=format!("{:.4}", w.rest)>
                    <span class="label">"the text as a whole (encoder and neighbours)"</span>" "<span class="pct">{percent(w.rest)}</span>
                </li>
            </ul>
            {(!w.complete).then(|| view! { <p class="note" id="why-pending">"Measuring how much the encoder reads into each word…"</p> })}
        </div>
    }
}

/// The training items most like the product, with their prices.
fn comparables_view(items: Vec<Comparable>) -> impl IntoView {
    (!items.is_empty()).then(|| {
        view! {
            <div class="comparables">
                <h3>"Comparable products"</h3>
                <ol id="comparables">
                    {items.into_iter().map(|c| view! {
                        <li data-price=format!("{:.2}", c.price) data-similarity=format!("{:.3}", c.similarity)
                            data-yours=c.yours.then_some("true") class:yours=c.yours>
                            {c.yours.then(|| view! { <span class="badge">"your product"</span> })}
                            <span class="title">{c.title}</span>
                            {c.category.map(|cat| view! { <span class="category">{cat.replace('_', " ")}</span> })}
                            <strong class="cprice">{dollars(c.price)}</strong>
                            <span class="similarity">{format!("{:.0}% alike", 100.0 * c.similarity.max(0.0))}</span>
                        </li>
                    }).collect_view()}
                </ol>
            </div>
        }
    })
}

fn batch_table(part: &BatchPart, name: String) -> impl IntoView + use<> {
    let rows = part.rows.clone();
    let parts = js_sys::Array::of1(&JsValue::from_str(&batch_csv(&rows)));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/csv");
    let href = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)
        .and_then(|b| web_sys::Url::create_object_url_with_blob(&b))
        .unwrap_or_default();
    let ok = rows.iter().filter(|r| r.result.is_ok()).count();
    let bad = rows.len() - ok;
    let whole = part.before == 0 && part.left == 0 && !part.cancelled;
    let which = if whole {
        String::new()
    } else {
        format!(" (records {} to {})", thousands(part.before + 1), thousands(part.before + rows.len()))
    };
    let stopped = part.cancelled.then(|| format!(" Cancelled: {} records were not priced.", thousands(part.left)));
    let file =
        if whole { "pricer-estimates.csv".to_string() } else { format!("pricer-estimates-{}.csv", part.before + 1) };
    view! {
        <p id="batch-summary" data-before=part.before.to_string() data-left=part.left.to_string()
            data-cancelled=part.cancelled.to_string()>
            {format!("{name}{which}: {ok} priced, {bad} with errors.{}", stopped.unwrap_or_default())}
        </p>
        <a id="batch-download" href=href download=file>"Download as CSV"</a>
        <div class="table-wrap">
        <table id="batch-table">
            <thead><tr><th>"Line"</th><th>"Title"</th><th>"Estimate"</th><th>"Range"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|r| match r.result {
                    Ok((p, l, h)) => view! {
                        <tr class="ok" data-line=r.line.to_string() data-price=format!("{p:.2}")>
                            <td>{r.line}</td><td>{r.title}</td><td>{dollars(p)}</td><td>{format!("{} – {}", dollars(l), dollars(h))}</td>
                        </tr>
                    }.into_any(),
                    Err(e) => view! {
                        <tr class="bad" data-line=r.line.to_string()>
                            <td>{r.line}</td><td>{r.title}</td><td colspan="2" class="error">{e}</td>
                        </tr>
                    }.into_any(),
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}

/// How a metric is shown.
type Format = fn(f64) -> String;

fn model_card(c: ModelCard) -> impl IntoView {
    let num = |k: &str| c.get(k).and_then(|v| v.parse::<f64>().ok());
    let metric = |k: &str, f: &dyn Fn(f64) -> String| num(k).map(f).unwrap_or_else(|| "n/a".into());
    let data = keys::TrainingData::from_metadata(&c.metadata);
    let listed = |files: &[String]| if files.is_empty() { "none named".to_string() } else { files.join(", ") };
    let rows = vec![
        ("Kind", c.kind.clone()),
        ("Size", format!("{:.1} MB", c.bytes as f64 / 1e6)),
        ("Trained on", data.trained_on()),
        ("Validation splits", listed(&data.validation)),
        ("Test splits (never trained on)", listed(&data.test)),
        ("Trained", c.get(pricer::estimator::keys::DATE).unwrap_or("unknown").to_string()),
    ];
    let mut rows = rows;
    if let Some(recipe) = keys::built_with(&c.metadata) {
        rows.push(("Recipe", format!("{recipe}, built with pricer build")));
    }
    if let (Some(items), Some(source)) = (c.get(pricer::adapt::keys::ITEMS), c.get(pricer::adapt::keys::SOURCE)) {
        let (before, after) =
            (num(&pricer::adapt::keys::cv("before", "mae")), num(&pricer::adapt::keys::cv("after", "mae")));
        let cv = match (before, after) {
            (Some(b), Some(a)) => format!("; cross-validated MAE on them {} before, {} after", dollars(b), dollars(a)),
            _ => String::new(),
        };
        rows.push((
            "Adapted",
            format!("to {items} products of {source} with pricer adapt{cv} (test splits: before adapting)"),
        ));
    }
    // One column per test split (a plain catalogue sample, the course's
    // price-balanced items...): the model is measured on each.
    let label = |name: &str| if name.is_empty() { "Test split".to_string() } else { format!("Test: {name}") };
    let metrics: [(&str, &str, Format); 5] = [
        ("Test items", "n", |v| format!("{v:.0}")),
        ("Mean absolute error", "mae", dollars),
        ("RMSLE", "rmsle", |v| format!("{v:.3}")),
        ("Hits (within $40 or 20%)", "hits_pct", |v| format!("{v:.1}%")),
        ("Truth inside the likely range", "coverage_pct", |v| format!("{v:.1}%")),
    ];
    let splits = c.splits.clone();
    let table = (!splits.is_empty()).then(|| {
        view! {
            <table id="test-metrics">
                <thead><tr><th></th>{splits.iter().map(|s| view! { <th data-split=s.name.clone()>{label(&s.name)}</th> }).collect_view()}</tr></thead>
                <tbody>
                    {metrics.iter().map(|(title, key, fmt)| view! {
                        <tr data-metric=key.to_string()>
                            <th>{title.to_string()}</th>
                            {splits.iter().map(|s| view! { <td>{metric(&keys::test_key(&s.name, key), fmt)}</td> }).collect_view()}
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        }
    });
    let scatters = splits.into_iter().map(|s| scatter_svg(&s.name, &s.truth, &s.estimate)).collect_view();
    view! {
        <dl id="model-card">
            {rows.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}
        </dl>
        {table}
        <div class="scatters">{scatters}</div>
    }
}

/// Truth against estimate on one test split, coloured as the Tester grades.
fn scatter_svg(name: &str, truth: &[f32], estimate: &[f32]) -> impl IntoView + use<> {
    if truth.is_empty() || truth.len() != estimate.len() {
        return view! { <p>"This model file holds no test-split estimates to chart."</p> }.into_any();
    }
    let max = truth.iter().chain(estimate).fold(1.0f32, |a, b| a.max(*b)) as f64 * 1.05;
    let (w, pad) = (320.0, 36.0);
    let sx = move |v: f64| pad + v / max * (w - pad - 8.0);
    let sy = move |v: f64| w - pad - v / max * (w - pad - 8.0);
    let points = truth
        .iter()
        .zip(estimate)
        .map(|(t, e)| {
            let (t, e) = (*t as f64, *e as f64);
            view! { <circle cx=format!("{:.1}", sx(t)) cy=format!("{:.1}", sy(e)) r="2.5" fill=Grade::of(e, t).color() fill-opacity="0.7"></circle> }
        })
        .collect_view();
    let split = if name.is_empty() { "test split".to_string() } else { format!("test split {name}") };
    view! {
        <figure>
            <svg class="scatter" data-split=name.to_string() viewBox=format!("0 0 {w} {w}") role="img" aria-label=format!("True price against estimate on the {split}")>
                <line x1=sx(0.0) y1=sy(0.0) x2=sx(max) y2=sy(max) stroke="#888" stroke-dasharray="4 3"></line>
                <line x1=sx(0.0) y1=sy(0.0) x2=sx(max) y2=sy(0.0) stroke="#333"></line>
                <line x1=sx(0.0) y1=sy(0.0) x2=sx(0.0) y2=sy(max) stroke="#333"></line>
                <text x=w / 2.0 y=w - 6.0 text-anchor="middle" font-size="11">{format!("true price ($0 – {})", dollars(max))}</text>
                <text x="12" y=w / 2.0 text-anchor="middle" font-size="11" transform=format!("rotate(-90 12 {})", w / 2.0)>"estimate"</text>
                {points}
            </svg>
            <figcaption>{format!("The {split}: green within $40 or 20%, orange within $80 or 40%, red beyond.")}</figcaption>
        </figure>
    }
    .into_any()
}

fn main() {
    console_error_panic_hook::set_once();
    register_service_worker();
    leptos::mount::mount_to_body(App);
}
