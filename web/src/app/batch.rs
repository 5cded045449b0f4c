//! "Price a whole file": a part of [`BATCH_ROWS`] records at a time, with
//! progress, the time left, cancel and the next part; the table and its CSV.

use super::conn::Conn;
use super::pool::Pool;
use super::status::ModelState;
use crate::format::*;
use crate::js::now_ms;
use crate::protocol::*;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

/// Pricing a whole file, a part of [`BATCH_ROWS`] records at a time.
#[derive(Clone, Copy)]
pub(crate) struct BatchState {
    pub(crate) name: RwSignal<String>,
    /// Records of the part priced so far, of how many, and when the part started.
    pub(crate) progress: RwSignal<Option<(usize, usize)>>,
    pub(crate) started_ms: StoredValue<f64>,
    /// The last part priced: its rows, the records before it and after it,
    /// and whether it was stopped.
    pub(crate) part: RwSignal<Option<BatchPart>>,
    pub(crate) error: RwSignal<Option<String>>,
    /// Per worker of the file: its part when done, and its progress.
    shards: StoredValue<Vec<Option<BatchPart>>>,
    shard_progress: StoredValue<Vec<(usize, usize)>>,
    /// Records in the file (from the workers' answers).
    records: StoredValue<usize>,
}

#[derive(Clone)]
pub(crate) struct BatchPart {
    pub(crate) rows: Vec<BatchRow>,
    pub(crate) before: usize,
    pub(crate) left: usize,
    pub(crate) cancelled: bool,
}

impl BatchState {
    pub(crate) fn new() -> Self {
        BatchState {
            name: RwSignal::new(String::new()),
            progress: RwSignal::new(None),
            started_ms: StoredValue::new(0.0),
            part: RwSignal::new(None),
            error: RwSignal::new(None),
            shards: StoredValue::new(vec![]),
            shard_progress: StoredValue::new(vec![]),
            records: StoredValue::new(0),
        }
    }

    /// A part starts, priced by `workers` workers: the table of the one before goes.
    pub(crate) fn start(&self, workers: usize) {
        self.part.set(None);
        self.error.set(None);
        self.progress.set(Some((0, 0)));
        self.started_ms.set_value(now_ms());
        self.shards.set_value(vec![None; workers]);
        self.shard_progress.set_value(vec![(0, 0); workers]);
    }

    /// How many workers price the file.
    pub(crate) fn workers(&self) -> usize {
        self.shards.with_value(|s| s.len()).max(1)
    }

    pub(crate) fn fail(&self, message: String) {
        self.progress.set(None);
        self.error.set(Some(message));
    }

    /// Takes worker `i`'s answer; the part is shown once every worker's
    /// share is in, its rows in file order. True when the worker failed:
    /// the others should stop.
    pub(crate) fn on_reply(&self, i: usize, reply: Reply) -> bool {
        // Answers that come after a failure, or from a worker not pricing this file, are stale.
        if self.progress.get_untracked().is_none() || i >= self.shards.with_value(|s| s.len()) {
            return false;
        }
        match reply {
            Reply::BatchProgress { done, total } => {
                self.shard_progress.update_value(|p| p[i] = (done, total));
                let sum = self.shard_progress.with_value(|p| p.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)));
                self.progress.set(Some(sum));
            }
            Reply::BatchDone { rows, before, left, cancelled, records } => {
                self.records.set_value(records);
                self.shards.update_value(|s| s[i] = Some(BatchPart { rows, before, left, cancelled }));
                if self.shards.with_value(|s| s.iter().all(Option::is_some)) {
                    let parts: Vec<BatchPart> = self.shards.with_value(|s| s.iter().flatten().cloned().collect());
                    let mut rows: Vec<BatchRow> = parts.iter().flat_map(|p| p.rows.clone()).collect();
                    rows.sort_by_key(|r| r.line);
                    let before = parts[0].before;
                    let cancelled = parts.iter().any(|p| p.cancelled);
                    // Stopped workers read different amounts: what is left is what no worker priced.
                    let left = if cancelled { records.saturating_sub(before + rows.len()) } else { parts[0].left };
                    self.progress.set(None);
                    self.part.set(Some(BatchPart { rows, before, left, cancelled }));
                }
            }
            Reply::BatchFailed { message } => {
                self.fail(message);
                return true;
            }
            _ => {}
        }
        false
    }

    /// "about 3 min left", once a few records give the pace.
    pub(crate) fn time_left(&self, done: usize, total: usize) -> Option<String> {
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

/// A CSV or JSONL file of products, priced in the worker a part at a
/// time, with progress, the time left and a cancel button.
#[component]
pub(crate) fn BatchPricing(state: BatchState, model: ModelState, conn: Conn, pool: Pool) -> impl IntoView {
    let on_file = move |ev: leptos::ev::Event| {
        let Some(file) = super::chosen_file(&ev) else { return };
        let name = file.name();
        state.name.set(name.clone());
        let workers = pool.size();
        state.start(workers);
        if let Some(message) = page_file_refusal(&name, file.size() as u64) {
            return state.fail(message);
        }
        wasm_bindgen_futures::spawn_local(async move {
            match crate::js::file_text(&file).await {
                Ok(content) => {
                    for index in 0..workers {
                        let shard = Shard { index, of: workers };
                        let req = Request::Batch { name: name.clone(), content: content.clone(), shard };
                        if let Err(message) = pool.send(conn, index, req) {
                            state.fail(message);
                            return pool.tell(conn, workers, &Request::CancelBatch);
                        }
                    }
                }
                Err(message) => state.fail(message),
            }
        });
    };
    let next = move |_| {
        let workers = state.workers();
        state.start(workers);
        if let Err(message) = pool.send_all(conn, workers, &Request::BatchNext) {
            state.fail(message);
            pool.tell(conn, workers, &Request::CancelBatch);
        }
    };
    let cancel = move |_| pool.tell(conn, state.workers(), &Request::CancelBatch);
    view! {
        <section class="batch">
            <h2>"Price a whole file"</h2>
            <label for="batch-file">{format!(
                "A CSV (title, description, price optional) or JSONL file of products, up to {} MB; \
                 priced {} at a time while estimates go on",
                MAX_PAGE_FILE_BYTES / 1_000_000, thousands(BATCH_ROWS)
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

pub(crate) fn batch_table(part: &BatchPart, name: String) -> impl IntoView + use<> {
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
