//! The model's loading state: progress, ready, or what went wrong with a retry.

use super::conn::Conn;
use super::{LoadState, model_to_load};
use crate::protocol::*;
use leptos::prelude::*;

/// The model: loading state, card, and which file it is.
#[derive(Clone, Copy)]
pub(crate) struct ModelState {
    pub(crate) load: RwSignal<LoadState>,
    pub(crate) card: RwSignal<Option<ModelCard>>,
    /// How the card names the loaded model, and the one being loaded.
    pub(crate) source: RwSignal<String>,
    pub(crate) asked: RwSignal<String>,
    /// Worth knowing about the last load (a newer model arrived, or the
    /// cached copy was kept and why).
    pub(crate) notice: RwSignal<Option<String>>,
    /// Why a model file the visitor opened was refused (the previous model stays).
    pub(crate) file_error: RwSignal<Option<String>>,
}

impl ModelState {
    pub(crate) fn new() -> Self {
        ModelState {
            load: RwSignal::new(LoadState::Loading { loaded: 0, total: 0 }),
            card: RwSignal::new(None),
            source: RwSignal::new(String::new()),
            asked: RwSignal::new(String::new()),
            notice: RwSignal::new(None),
            file_error: RwSignal::new(None),
        }
    }

    pub(crate) fn ready(&self) -> bool {
        matches!(self.load.get(), LoadState::Ready { .. })
    }

    /// Asks the worker for the page's model (`?model=` or the default).
    pub(crate) fn load_default(&self, conn: Conn) {
        match model_to_load() {
            Ok((url, label)) => {
                self.asked.set(label);
                self.load.set(LoadState::Loading { loaded: 0, total: 0 });
                conn.load(ModelSource::Url(url));
            }
            Err(message) => self.load.set(LoadState::Failed(message)),
        }
    }

    pub(crate) fn on_reply(&self, reply: &Reply) {
        match reply {
            // A file swapped in keeps the page usable: progress shows only while nothing is loaded.
            Reply::Progress { loaded, total } if !matches!(self.load.get_untracked(), LoadState::Ready { .. }) => {
                self.load.set(LoadState::Loading { loaded: *loaded, total: *total })
            }
            Reply::Ready { card, cached, notice, .. } => {
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

/// Loading progress, ready, or what went wrong with a retry.
#[component]
pub(crate) fn Status(model: ModelState, conn: Conn) -> impl IntoView {
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
