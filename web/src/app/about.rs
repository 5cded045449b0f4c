//! "About the model": the model card read from the file, and another model file from disk.

use super::LoadState;
use super::conn::Conn;
use super::status::ModelState;
use crate::format::*;
use crate::protocol::*;
use leptos::prelude::*;
use pricer::estimator::keys;
use pricer::metrics::Grade;

/// The model card, and another model file from disk.
#[component]
pub(crate) fn AboutTheModel(model: ModelState, conn: Conn) -> impl IntoView {
    let on_model_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
        model.file_error.set(None);
        model.asked.set(format!("{} (your file)", file.name()));
        if !matches!(model.load.get_untracked(), LoadState::Ready { .. }) {
            model.load.set(LoadState::Loading { loaded: 0, total: file.size() as u64 });
        }
        conn.load(ModelSource::File(file));
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

/// How a metric is shown.
pub(crate) type Format = fn(f64) -> String;

pub(crate) fn model_card(c: ModelCard) -> impl IntoView {
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
pub(crate) fn scatter_svg(name: &str, truth: &[f32], estimate: &[f32]) -> impl IntoView + use<> {
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
