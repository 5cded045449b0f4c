//! "Your own products": the model adapted to the shop's priced products in
//! the worker, kept in this browser until forgotten.

use super::conn::Conn;
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
}

impl OwnState {
    pub(crate) fn new() -> Self {
        OwnState { progress: RwSignal::new(None), adapted: RwSignal::new(None), error: RwSignal::new(None) }
    }

    pub(crate) fn on_reply(&self, reply: Reply, conn: Conn) {
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

/// The shop's own priced products: the model adapted to them in the worker,
/// kept in this browser until forgotten.
#[component]
pub(crate) fn OwnProducts(state: OwnState, model: ModelState, conn: Conn) -> impl IntoView {
    let on_file = move |ev: leptos::ev::Event| {
        let Some(file) = super::chosen_file(&ev) else { return };
        let name = file.name();
        if let Some(message) = page_file_refusal(&name, file.size() as u64) {
            state.error.set(Some(message));
            return;
        }
        state.error.set(None);
        state.progress.set(Some((0, 0)));
        wasm_bindgen_futures::spawn_local(async move {
            match crate::js::file_text(&file).await {
                Ok(content) => conn.send(Request::Adapt { name, content }),
                Err(message) => {
                    state.progress.set(None);
                    state.error.set(Some(message));
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
