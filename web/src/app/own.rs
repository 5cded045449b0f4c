//! "Your own products": the model adapted to the shop's priced products in
//! the worker, kept in this browser until forgotten.

use super::conn::Conn;
use super::pool::Pool;
use super::status::ModelState;
use crate::format::*;
use crate::protocol::*;
use leptos::prelude::*;

/// The shop's own products: an adaptation under way, the one in use, or why none.
#[derive(Clone, Copy)]
pub(crate) struct OwnState {
    /// Products embedded so far, of how many (while adapting).
    pub(crate) progress: RwSignal<Option<(usize, usize)>>,
    pub(crate) adapted: RwSignal<Option<OwnSummary>>,
    pub(crate) error: RwSignal<Option<String>>,
    /// The adaptation under way (the page's number for it), and each of its
    /// workers' products embedded, of how many.
    job: StoredValue<u64>,
    shard_progress: StoredValue<Vec<(usize, usize)>>,
}

impl OwnState {
    pub(crate) fn new() -> Self {
        OwnState {
            progress: RwSignal::new(None),
            adapted: RwSignal::new(None),
            error: RwSignal::new(None),
            job: StoredValue::new(0),
            shard_progress: StoredValue::new(vec![]),
        }
    }

    /// An adaptation starts on `workers` workers: its number.
    fn start(&self, workers: usize) -> u64 {
        self.job.update_value(|j| *j += 1);
        self.shard_progress.set_value(vec![(0, 0); workers]);
        self.error.set(None);
        self.progress.set(Some((0, 0)));
        self.job.get_value()
    }

    /// How many workers the adaptation under way (or the last) had.
    pub(crate) fn workers(&self) -> usize {
        self.shard_progress.with_value(|s| s.len()).max(1)
    }

    /// The extra workers are gone: the first worker goes on alone (it
    /// adapts again, by itself, when the model changed).
    pub(crate) fn alone(&self) {
        self.shard_progress.set_value(vec![]);
    }

    pub(crate) fn fail(&self, message: String) {
        self.progress.set(None);
        self.error.set(Some(message));
    }

    /// Worker `i`'s answer (0: the first worker, which fits the adaptation).
    pub(crate) fn on_reply(&self, i: usize, reply: Reply, conn: Conn, pool: Pool) {
        match reply {
            Reply::AdaptProgress { done, total } => {
                if self.workers() == 1 {
                    if i == 0 {
                        self.progress.set(Some((done, total)));
                    }
                    return;
                }
                if self.progress.get_untracked().is_none() || i >= self.workers() {
                    return;
                }
                self.shard_progress.update_value(|p| p[i] = (done, total));
                let sum = self.shard_progress.with_value(|p| p.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)));
                self.progress.set(Some(sum));
            }
            // Passed on to the first worker, unless the adaptation gave way.
            Reply::AdaptShare { job, index, values }
                if job == self.job.get_value() && self.progress.get_untracked().is_some() =>
            {
                conn.send(Request::AdaptValues { job, index, values })
            }
            Reply::Adapted { own, restored } => {
                self.progress.set(None);
                self.error.set(None);
                self.adapted.set(Some(own));
                if !restored {
                    // The second worker lays the same adaptation over its model.
                    conn.explainer_send(Request::ReloadOwn);
                }
            }
            Reply::AdaptFailed { message, cancelled } if i == 0 => {
                self.progress.set(None);
                self.error.set((!cancelled).then_some(message));
            }
            // Another worker failed: the whole adaptation stops.
            Reply::AdaptFailed { message, cancelled: false } if self.progress.get_untracked().is_some() => {
                self.fail(message);
                pool.tell(conn, self.workers(), &Request::CancelAdapt);
            }
            Reply::Forgotten => {
                self.progress.set(None);
                self.adapted.set(None);
            }
            _ => {}
        }
    }
}

/// The shop's own priced products: the model adapted to them in the worker,
/// kept in this browser until forgotten.
#[component]
pub(crate) fn OwnProducts(state: OwnState, model: ModelState, conn: Conn, pool: Pool) -> impl IntoView {
    let on_file = move |ev: leptos::ev::Event| {
        let Some(file) = super::chosen_file(&ev) else { return };
        let name = file.name();
        if let Some(message) = page_file_refusal(&name, file.size() as u64) {
            state.error.set(Some(message));
            return;
        }
        let workers = pool.size();
        let job = state.start(workers);
        wasm_bindgen_futures::spawn_local(async move {
            let content = match crate::js::file_text(&file).await {
                Ok(content) => content,
                Err(message) => return state.fail(message),
            };
            // Each worker embeds its share; the first fits the adaptation.
            for index in 0..workers {
                let shard = Shard { index, of: workers };
                let req = Request::Adapt { name: name.clone(), content: content.clone(), job, shard };
                if let Err(message) = pool.send(conn, index, req) {
                    state.fail(message);
                    return pool.tell(conn, workers, &Request::CancelAdapt);
                }
            }
        });
    };
    let cancel = move |_| pool.tell(conn, state.workers(), &Request::CancelAdapt);
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
