//! Estimates and their reasons: the newest request answered, the encoder's
//! share of each word measured a pass at a time.

use super::{State, later, send};
use crate::js::now_ms;
use crate::protocol::*;
use pricer::explain::ExplainOptions;
use pricer::{Estimator, Product};

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

impl State {
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
        match est.start_explaining(&product, ExplainOptions { comparables: 0, ..Default::default() }) {
            Ok(x) if x.pending() == 0 => {
                send(&Reply::Why { id, result: Ok(Why::from_explanation(&x.explanation(), true)) })
            }
            Ok(x) => {
                *self.explaining.borrow_mut() = Some((id, x));
                drop(model);
                later(move || self.explain_step(id));
            }
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
                (Some(est), Some((xid, x))) if *xid == id => x.occlude_next(est, 1).map(|()| x.pending()),
                _ => return,
            }
        };
        match step {
            Ok(0) | Err(_) => {
                let Some((_, x)) = self.explaining.borrow_mut().take() else { return };
                let result = step.map(|_| Why::from_explanation(&x.explanation(), true)).map_err(|e| e.to_string());
                send(&Reply::Why { id, result });
            }
            Ok(_) => later(move || self.explain_step(id)),
        }
    }
}
