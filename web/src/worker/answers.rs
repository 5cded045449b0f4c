//! Estimates and their reasons: the newest request answered, the encoder's
//! share of each word measured a pass at a time.

use super::{State, later, send};
use crate::js::now_ms;
use crate::protocol::*;
use pricer::explain::ExplainOptions;
use pricer::{Estimator, Product};
use std::cell::{Cell, RefCell};

/// The text the worker reads: at most [`MAX_INPUT_CHARS`] characters, and whether it was cut.
pub(super) fn cut_input(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_INPUT_CHARS) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// The estimate with its comparables and the linear members' reasons, from
/// one encoder pass. The encoder's share of each word is measured apart
/// ([`Request::Explain`]), so the next estimate never waits for it.
pub(super) fn estimate(est: &Estimator, text: &str) -> Result<EstimateView, String> {
    let start = now_ms();
    let (text, cut) = cut_input(text);
    let product = Product::from_free_text(text);
    let prepared = est.prepare(&product).map_err(|e| e.to_string())?;
    let x = est.explain(&product, ExplainOptions { occlude: 0, ..Default::default() }).map_err(|e| e.to_string())?;
    let e = x.estimate;
    Ok(EstimateView {
        price: e.price,
        low: e.low,
        high: e.high,
        millis: now_ms() - start,
        truncated: cut || prepared.truncated,
        prepared_chars: prepared.text.chars().count(),
        comparables: x.comparables.clone(),
        why: Why::from_explanation(&x, false),
    })
}

thread_local! {
    /// The page's cell holding its newest estimate's id (shared memory, in
    /// an isolated page): reasons for an older estimate are not wanted.
    static NEWEST_ESTIMATE: RefCell<Option<js_sys::Int32Array>> = const { RefCell::new(None) };
    /// The estimate whose reasons this worker's encoder is measuring (0: none).
    static MEASURING: Cell<u64> = const { Cell::new(0) };
}

/// Takes the page's cell of its newest estimate: from now on, an encoder
/// pass for a replaced estimate's reasons stops at the next layer, so it
/// leaves the cores to the new estimate at once.
pub(super) fn watch_newest_estimate(cell: &js_sys::SharedArrayBuffer) {
    NEWEST_ESTIMATE.with(|n| *n.borrow_mut() = Some(js_sys::Int32Array::new(cell)));
    pricer::encoder::stop_passes_when(reasons_replaced);
}

/// The reasons being measured belong to an estimate the page replaced.
fn reasons_replaced() -> bool {
    let measuring = MEASURING.with(Cell::get);
    measuring != 0
        && NEWEST_ESTIMATE.with(|n| {
            // The page stores ids as i32 (wrapping): compare the low 32 bits.
            let newest = n.borrow().as_ref().and_then(|cell| js_sys::Atomics::load(cell, 0).ok());
            newest.is_some_and(|newest| newest as u32 != measuring as u32)
        })
}

/// A pass for estimate `id`'s reasons failed because the page replaced it.
fn reasons_replaced_for(id: u64) -> bool {
    measuring(id, reasons_replaced)
}

/// Runs `f` (encoder passes for the reasons of estimate `id`), stoppable
/// by the page's cell while it runs.
fn measuring<R>(id: u64, f: impl FnOnce() -> R) -> R {
    MEASURING.with(|m| m.set(id));
    let r = f();
    MEASURING.with(|m| m.set(0));
    r
}

/// The warm-up's products: a short one first (the first call of each
/// function compiles it, whatever the text's length), then a full-length one
/// whose encoder passes run long enough for the browser to optimise them.
const WARM_UP: [&str; 4] = ["Desk lamp\nLED, adjustable arm.", WARM_UP_PRODUCT, WARM_UP_PRODUCT, WARM_UP_PRODUCT];

/// About the model's 128 tokens of a made-up product.
const WARM_UP_PRODUCT: &str = "Stainless Steel 12-Cup Programmable Coffee Maker with Thermal Carafe\n\
    Brew up to 12 cups of hot coffee with this programmable coffee maker. The double-wall stainless steel \
    thermal carafe keeps coffee hot for hours without a hot plate. Features a 24-hour programmable timer, brew \
    strength control, a pause-and-serve function, and a reusable gold-tone filter. Easy-to-read backlit display \
    with digital clock. Dishwasher-safe parts. Brand: Acme Home. Item weight: 7.5 pounds. Includes a measuring \
    scoop and an automatic shut-off after two hours.";

impl State {
    /// Starts the warm-up ([`Request::WarmUp`]), once per worker.
    pub(super) fn warm_up(self) {
        if !self.warmed.replace(true) {
            self.warm_up_step(0, 0.0, 0.0);
        }
    }

    /// One warm-up estimate, then a turn of the event loop: a request that
    /// came meanwhile ends the warm-up (its own work warms the code as well).
    fn warm_up_step(self, runs: u32, millis: f64, last_millis: f64) {
        let busy = self.estimate_pending.borrow().is_some()
            || self.explain_pending.borrow().is_some()
            || self.explaining.borrow().is_some()
            || self.batching.borrow().is_some()
            || self.adapting.borrow().is_some();
        let took = match (self.model.borrow().as_ref(), WARM_UP.get(runs as usize)) {
            (Some(est), Some(text)) if !busy => {
                let start = now_ms();
                // As a visitor's estimate: the linear members' answer, then the encoder's.
                let _ = est.first_estimate(&Product::from_free_text(text));
                let _ = estimate(est, text);
                now_ms() - start
            }
            _ => return send(&Reply::WarmedUp { runs, millis, last_millis }),
        };
        later(move || self.warm_up_step(runs + 1, millis + took, took));
    }

    /// Answers the newest estimate request: the linear members' first
    /// answer, then the estimate from one encoder pass.
    pub(super) fn answer_estimate(&self) {
        let Some((id, text)) = self.estimate_pending.borrow_mut().take() else { return };
        let model = self.model.borrow();
        let Some(est) = model.as_ref() else {
            return send(&Reply::Estimate { id, result: Err("the model is not loaded yet".into()) });
        };
        // The page shows the linear members' answer while the encoder runs.
        if let Ok(Some(price)) = est.first_estimate(&Product::from_free_text(cut_input(&text).0)) {
            send(&Reply::First { id, price });
        }
        send(&Reply::Estimate { id, result: estimate(est, &text) });
    }

    /// Starts the newest reasons request (once a model is loaded).
    pub(super) fn start_explaining(self) {
        let model = self.model.borrow();
        let Some(est) = model.as_ref() else { return };
        let Some((id, text)) = self.explain_pending.borrow_mut().take() else { return };
        let product = Product::from_free_text(cut_input(&text).0);
        match measuring(id, || est.start_explaining(&product, ExplainOptions { comparables: 0, ..Default::default() }))
        {
            Ok(x) if x.pending() == 0 => {
                send(&Reply::Why { id, result: Ok(Why::from_explanation(&x.explanation(), true)) })
            }
            Ok(x) => {
                *self.explaining.borrow_mut() = Some((id, x));
                drop(model);
                later(move || self.explain_step(id));
            }
            Err(_) if reasons_replaced_for(id) => send(&Reply::ReasonsStopped { id }),
            Err(e) => send(&Reply::Why { id, result: Err(e.to_string()) }),
        }
    }

    /// Measures the encoder's share of one more word of request `id`'s
    /// reasons, then yields: a newer request goes first, and this one is
    /// dropped.
    pub(super) fn explain_step(self, id: u64) {
        if self.explain_latest.get() != id {
            return;
        }
        let step = {
            let model = self.model.borrow();
            let mut slot = self.explaining.borrow_mut();
            match (model.as_ref(), slot.as_mut()) {
                (Some(est), Some((xid, x))) if *xid == id => {
                    measuring(id, || x.occlude_next(est, 1).map(|()| x.pending()))
                }
                _ => return,
            }
        };
        match step {
            Err(_) if reasons_replaced_for(id) => {
                self.explaining.borrow_mut().take();
                send(&Reply::ReasonsStopped { id });
            }
            Ok(0) | Err(_) => {
                let Some((_, x)) = self.explaining.borrow_mut().take() else { return };
                let result = step.map(|_| Why::from_explanation(&x.explanation(), true)).map_err(|e| e.to_string());
                send(&Reply::Why { id, result });
            }
            Ok(_) => later(move || self.explain_step(id)),
        }
    }
}
