//! The page: a Leptos (CSR) app. It starts the worker that runs the model,
//! and shows the form, examples, batch pricing and the model card.

use leptos::prelude::*;
use pricer::estimator::keys;
use pricer::metrics::Grade;
use pricer_web::{BatchRow, Comparable, EstimateView, ModelCard, Reply, Request, Why};
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
        if i > 0 && (digits.len() - i) % 3 == 0 {
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

#[component]
fn App() -> impl IntoView {
    let load = RwSignal::new(LoadState::Loading { loaded: 0, total: 0 });
    let card = RwSignal::new(None::<ModelCard>);
    let text = RwSignal::new(String::new());
    let listed = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<EstimateView, String>>);
    // Which request the shown result answers (tests and automation wait on it).
    let result_id = RwSignal::new(0u64);
    let hint = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let next_id = RwSignal::new(0u64);
    let batch_rows = RwSignal::new(None::<Vec<BatchRow>>);
    let batch_done = RwSignal::new(None::<usize>);
    let batch_name = RwSignal::new(String::new());
    // As-you-type: the pending debounced estimate, the text last sent, and
    // when each request left (for the click-to-shown time).
    let typing = StoredValue::new_local(None::<leptos::leptos_dom::helpers::TimeoutHandle>);
    let last_sent = StoredValue::new(String::new());
    let sent_at = StoredValue::new((0u64, 0.0f64));
    let shown_ms = RwSignal::new(None::<f64>);
    // The first estimate (words and details alone) of a request: id, price,
    // and when it reached the screen after the request.
    let first = RwSignal::new(None::<(u64, f64, Option<f64>)>);

    let worker = match start_worker() {
        Ok(w) => StoredValue::new_local(Some(w)),
        Err(e) => {
            load.set(LoadState::Failed(format!("the browser could not start a worker: {e:?}")));
            StoredValue::new_local(None)
        }
    };
    let send = move |req: Request| {
        worker.with_value(|w| {
            if let Some(w) = w {
                post(w, &req)
            }
        })
    };
    let load_model = move || {
        load.set(LoadState::Loading { loaded: 0, total: 0 });
        send(Request::Load { url: base_url(MODEL_PATH) });
    };
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(raw) = msg.data().as_string() else { return };
        let Ok(reply) = serde_json::from_str::<Reply>(&raw) else { return };
        match reply {
            Reply::Started => load_model(),
            Reply::Progress { loaded, total } => load.set(LoadState::Loading { loaded, total }),
            Reply::Ready { card: c, cached } => {
                card.set(Some(c));
                load.set(LoadState::Ready { cached });
            }
            Reply::LoadFailed { message } => load.set(LoadState::Failed(message)),
            Reply::First { id, price } => {
                if id == next_id.get_untracked() {
                    let (sent_id, at) = sent_at.get_value();
                    first.set(Some((id, price, (sent_id == id).then(|| now_ms() - at))));
                }
            }
            Reply::Estimate { id, result: r } => {
                if id == next_id.get_untracked() {
                    let (sent_id, at) = sent_at.get_value();
                    shown_ms.set((sent_id == id).then(|| now_ms() - at));
                    result_id.set(id);
                    result.set(Some(r));
                    busy.set(false);
                }
            }
            Reply::Why { id, result: r } => {
                if id == result_id.get_untracked() {
                    result.update(|shown| {
                        if let Some(Ok(e)) = shown {
                            match r {
                                Ok(why) => e.why = why,
                                // The first reasons stay; only the encoder's share is missing.
                                Err(_) => e.why.complete = true,
                            }
                        }
                    });
                }
            }
            Reply::BatchProgress { done } => batch_done.set(Some(done)),
            Reply::BatchDone { rows } => {
                batch_done.set(None);
                batch_rows.set(Some(rows));
            }
        }
    });
    worker.with_value(|w| {
        if let Some(w) = w {
            w.set_onmessage(Some(on_message.as_ref().unchecked_ref()))
        }
    });
    on_message.forget();

    let estimate = move || {
        typing.update_value(|pending| {
            if let Some(h) = pending.take() {
                h.clear();
            }
        });
        let t = text.get_untracked();
        if t.trim().is_empty() {
            hint.set(Some(
                "Describe the product first: its title on the first line, then anything you know about it.".into(),
            ));
            result.set(None);
            return;
        }
        hint.set(None);
        busy.set(true);
        let id = next_id.get_untracked() + 1;
        next_id.set(id);
        last_sent.set_value(t.clone());
        sent_at.set_value((id, now_ms()));
        send(Request::Estimate { id, text: t });
    };
    // Estimates as the user types: once the text rests for a moment, and
    // only when it changed since the last estimate.
    let on_type = move |value: String| {
        text.set(value);
        typing.update_value(|pending| {
            if let Some(h) = pending.take() {
                h.clear();
            }
        });
        let handle = leptos::leptos_dom::helpers::set_timeout_with_handle(
            move || {
                typing.set_value(None);
                let t = text.get_untracked();
                if matches!(load.get_untracked(), LoadState::Ready { .. })
                    && !t.trim().is_empty()
                    && t != last_sent.get_value()
                {
                    estimate();
                }
            },
            std::time::Duration::from_millis(TYPING_PAUSE_MS),
        );
        typing.set_value(handle.ok());
    };
    let ready = move || matches!(load.get(), LoadState::Ready { .. });

    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
        let name = file.name();
        batch_name.set(name.clone());
        batch_rows.set(None);
        batch_done.set(Some(0));
        wasm_bindgen_futures::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.text()).await {
                Ok(content) => send(Request::Batch { name, content: content.as_string().unwrap_or_default() }),
                Err(_) => {
                    batch_done.set(None);
                    batch_rows.set(Some(vec![BatchRow {
                        line: 0,
                        title: String::new(),
                        result: Err("the file could not be read".into()),
                    }]));
                }
            }
        });
    };

    view! {
        <header>
            <h1>"Pricer"</h1>
            <p class="tagline">"What should this cost? Describe a product and get an estimate with a likely range."</p>
            <p class="privacy">"Private by design: the model runs in your browser, and nothing you type or upload leaves this page."</p>
        </header>
        <main>
            <section class="status" id="status" data-state=move || match load.get() {
                LoadState::Loading { .. } => "loading",
                LoadState::Ready { .. } => "ready",
                LoadState::Failed(_) => "error",
            }>
                {move || match load.get() {
                    LoadState::Loading { loaded, total } => view! {
                        <label for="model-progress">"Loading the model"</label>
                        <progress id="model-progress" max=total.max(1).to_string() value=loaded.to_string()></progress>
                        <span class="bytes">{format!("{:.1} of {} MB", loaded as f64 / 1e6, if total > 0 { format!("{:.1}", total as f64 / 1e6) } else { "?".into() })}</span>
                    }.into_any(),
                    LoadState::Ready { cached } => view! {
                        <span class="ok">{if cached { "Model ready (from this browser's cache; works offline)" } else { "Model ready" }}</span>
                    }.into_any(),
                    LoadState::Failed(msg) => view! {
                        <div class="error" role="alert" id="load-error">
                            <strong>"The model could not be loaded. "</strong>{msg}
                        </div>
                        <button id="retry" on:click=move |_| load_model()>"Try again"</button>
                    }.into_any(),
                }}
            </section>

            <section class="estimate">
                <h2>"Estimate a price"</h2>
                <form on:submit=move |ev| { ev.prevent_default(); estimate(); }>
                    <label for="description">"Product: title on the first line, then its description"</label>
                    <textarea id="description" rows="8" placeholder="Stainless steel blender, 1200 W\nCrushes ice, six speeds, 64 oz pitcher..."
                        prop:value=move || text.get()
                        on:input=move |ev| on_type(event_target_value(&ev))></textarea>
                    <div class="row">
                        <label for="listed">"Listed price, if you have one (is it a deal?)"</label>
                        <input id="listed" type="number" min="0" step="0.01" inputmode="decimal" placeholder="e.g. 79.99"
                            prop:value=move || listed.get()
                            on:input=move |ev| listed.set(event_target_value(&ev)) />
                    </div>
                    <button id="estimate" type="submit" disabled=move || !ready() || busy.get()>"Estimate"</button>
                </form>
                <div class="examples">
                    <span>"Try an example: "</span>
                    {EXAMPLES.iter().map(|(label, body)| view! {
                        <button class="example" type="button" on:click=move |_| { text.set(body.to_string()); estimate(); }>{*label}</button>
                    }).collect_view()}
                </div>
                {move || hint.get().map(|h| view! { <p class="hint" id="hint">{h}</p> })}
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
                                <p class="meta" id="took" data-shown-ms=move || shown_ms.get().map(|m| format!("{m:.0}"))>
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
            </section>

            <section class="batch">
                <h2>"Price a whole file"</h2>
                <label for="batch-file">"A CSV (title, description, price optional) or JSONL file of products"</label>
                <input id="batch-file" type="file" accept=".csv,.jsonl,.json,.txt" disabled=move || !ready() on:change=on_file />
                {move || batch_done.get().map(|n| view! { <p id="batch-progress">{format!("Pricing… {n} done")}</p> })}
                {move || batch_rows.get().map(|rows| batch_table(rows, batch_name.get()))}
            </section>

            <section class="card">
                <h2>"About the model"</h2>
                {move || card.get().map(model_card)}
            </section>
        </main>
        <footer>"Pricer estimates from text alone; check before you buy."</footer>
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
                        <li data-price=format!("{:.2}", c.price) data-similarity=format!("{:.3}", c.similarity)>
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn batch_table(rows: Vec<BatchRow>, name: String) -> impl IntoView {
    let mut csv = String::from("line,title,estimate,low,high,error\n");
    for r in &rows {
        match &r.result {
            Ok((p, l, h)) => csv.push_str(&format!("{},{},{p:.2},{l:.2},{h:.2},\n", r.line, csv_field(&r.title))),
            Err(e) => csv.push_str(&format!("{},{},,,,{}\n", r.line, csv_field(&r.title), csv_field(e))),
        }
    }
    let parts = js_sys::Array::of1(&JsValue::from_str(&csv));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/csv");
    let href = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)
        .and_then(|b| web_sys::Url::create_object_url_with_blob(&b))
        .unwrap_or_default();
    let ok = rows.iter().filter(|r| r.result.is_ok()).count();
    let bad = rows.len() - ok;
    view! {
        <p id="batch-summary">{format!("{name}: {ok} priced, {bad} with errors")}</p>
        <a id="batch-download" href=href download="pricer-estimates.csv">"Download as CSV"</a>
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
    let rows = vec![
        ("Kind", c.kind.clone()),
        ("Size", format!("{:.1} MB", c.bytes as f64 / 1e6)),
        (
            "Trained on",
            format!(
                "{} items ({})",
                metric("pricer.provenance.train_items", &|v| format!("{v:.0}")),
                c.get("pricer.provenance.data_files").unwrap_or("unknown")
            ),
        ),
        ("Trained", c.get("pricer.provenance.date").unwrap_or("unknown").to_string()),
    ];
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
