//! The estimate form (as you type, examples, a listed price) and its result.

use super::LoadState;
use super::conn::Conn;
use super::reasons::{comparables_view, why_view};
use super::status::ModelState;
use crate::format::*;
use crate::js::now_ms;
use crate::protocol::*;
use leptos::prelude::*;

/// How long the text must rest before an estimate starts by itself.
pub(crate) const TYPING_PAUSE_MS: u64 = 350;

/// Example products, one per category, to try in one click.
pub(crate) const EXAMPLES: &[(&str, &str)] = &[
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

/// The estimate form and its result.
#[derive(Clone, Copy)]
pub(crate) struct EstimateState {
    pub(crate) text: RwSignal<String>,
    pub(crate) listed: RwSignal<String>,
    pub(crate) result: RwSignal<Option<Result<EstimateView, String>>>,
    /// Which request the shown result answers (tests and automation wait on it).
    pub(crate) result_id: RwSignal<u64>,
    pub(crate) hint: RwSignal<Option<String>>,
    pub(crate) busy: RwSignal<bool>,
    pub(crate) next_id: RwSignal<u64>,
    /// As-you-type: the pending debounced estimate, the text last sent, and
    /// when each request left (for the click-to-shown time).
    pub(crate) typing: StoredValue<Option<leptos::leptos_dom::helpers::TimeoutHandle>, LocalStorage>,
    pub(crate) last_sent: StoredValue<String>,
    pub(crate) sent_at: StoredValue<(u64, f64)>,
    pub(crate) shown_ms: RwSignal<Option<f64>>,
    /// When the estimate's answer reached the page after the request; the
    /// rest of `shown_ms` is rendering and the wait for the next frame.
    pub(crate) answered_ms: RwSignal<Option<f64>>,
    /// The first estimate (words and details alone) of a request: id, price,
    /// and when it reached the screen after the request.
    pub(crate) first: RwSignal<Option<(u64, f64, Option<f64>)>>,
}

impl EstimateState {
    pub(crate) fn new() -> Self {
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
            answered_ms: RwSignal::new(None),
            first: RwSignal::new(None),
        }
    }

    pub(crate) fn cancel_typing(&self) {
        self.typing.update_value(|pending| {
            if let Some(h) = pending.take() {
                h.clear();
            }
        });
    }

    /// Sends the text for an estimate (or says what is missing).
    pub(crate) fn estimate(&self, conn: Conn) {
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
        conn.drop_reasons(id);
    }

    /// Takes a reply; returns the request to send for the reasons of a new
    /// estimate shown.
    pub(crate) fn on_reply(&self, reply: Reply) -> Option<Request> {
        match reply {
            Reply::First { id, price } if id == self.next_id.get_untracked() => {
                let (sent_id, at) = self.sent_at.get_value();
                self.first.set(Some((id, price, (sent_id == id).then(|| now_ms() - at))));
            }
            Reply::Estimate { id, result } if id == self.next_id.get_untracked() => {
                // On screen: the time at the next frame, which paints the price.
                let (sent_id, at) = self.sent_at.get_value();
                self.shown_ms.set(None);
                self.answered_ms.set((sent_id == id).then(|| now_ms() - at));
                let shown_ms = self.shown_ms;
                if sent_id == id {
                    request_animation_frame(move || shown_ms.set(Some(now_ms() - at)));
                }
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

/// The product's text, a listed price, and the examples; estimates on
/// click and as the user types.
#[component]
pub(crate) fn EstimateForm(state: EstimateState, model: ModelState, conn: Conn) -> impl IntoView {
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
pub(crate) fn EstimateResult(state: EstimateState) -> impl IntoView {
    let EstimateState { result, result_id, first, shown_ms, answered_ms, listed, .. } = state;
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
                        <p class="meta" id="took" data-shown-ms=move || shown_ms.get().map(|m| format!("{m:.0}"))
                            data-answered-ms=move || answered_ms.get().map(|m| format!("{m:.1}")) data-millis=format!("{:.1}", e.millis)>
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
