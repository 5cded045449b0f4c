//! Why an estimate: the words and details that moved it, and comparable products.

use crate::format::*;
use crate::protocol::*;
use leptos::prelude::*;

/// The words and details that raised and lowered the estimate.
pub(crate) fn why_view(w: Why, price: f64) -> impl IntoView {
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
pub(crate) fn comparables_view(items: Vec<Comparable>) -> impl IntoView {
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
