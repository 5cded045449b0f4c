//! The shop's own products: an adaptation fitted a batch of products per
//! turn of the event loop, laid over the model, restored from IndexedDB.

use super::kept::{self, Applied, Job, Kept};
use super::{State, later, send};
use crate::protocol::*;
use pricer::Estimator;

pub(super) fn summary(a: &Applied) -> OwnSummary {
    OwnSummary::new(&a.adaptation, &a.name, &a.skipped)
}

impl State {
    /// Lays the adaptation kept from an earlier visit over the model; the
    /// first worker adapts the kept products again when the model changed.
    pub(super) async fn restore_own(self) {
        let Some(kept) = kept::kept().await else { return };
        let adaptation = {
            let model = self.model.borrow();
            let Some(est) = model.as_ref() else { return };
            if est.check_adaptable().is_err() {
                // A model of the visitor's that cannot be adapted: the kept products wait.
                return;
            }
            kept::adaptation_for(&kept, est)
        };
        match adaptation {
            Some(a) => {
                let skipped = vec![];
                if let Err(message) = self.apply(Applied { adaptation: a, name: kept.name, skipped }) {
                    send(&Reply::AdaptFailed { message, cancelled: false });
                    return;
                }
                if let Some(applied) = self.own.borrow().as_ref() {
                    send(&Reply::Adapted { own: summary(applied), restored: true });
                }
            }
            None if self.first.get() => self.start_adapting(kept.name, kept.content),
            None => {}
        }
    }

    /// Lays `applied` over the model (taking off any adaptation before).
    pub(super) fn apply(&self, applied: Applied) -> Result<(), String> {
        let mut model = self.model.borrow_mut();
        let est = model.as_mut().ok_or("the model is not loaded yet")?;
        est.remove_adaptation();
        est.apply_adaptation(&applied.adaptation).map_err(|e| e.to_string())?;
        *self.own.borrow_mut() = Some(applied);
        // Reasons under way were measured on the model before.
        self.explaining.borrow_mut().take();
        Ok(())
    }

    /// Takes the adaptation off the model (and the reasons measured with it).
    pub(super) fn unapply(&self) {
        self.own.borrow_mut().take();
        if let Some(est) = self.model.borrow_mut().as_mut() {
            est.remove_adaptation();
        }
        self.explaining.borrow_mut().take();
    }

    /// Starts adapting the model to the products of a file's text.
    pub(super) fn start_adapting(&self, name: String, content: String) {
        let id = self.adapt_latest.get() + 1;
        self.adapt_latest.set(id);
        // A job under way gives way; its "before" is still the one to put back.
        let earlier = self.adapting.borrow_mut().take();
        let mut model = self.model.borrow_mut();
        let Some(est) = model.as_mut() else {
            return send(&Reply::AdaptFailed { message: "the model is not loaded yet".into(), cancelled: false });
        };
        let previous = match earlier {
            Some(job) => job.previous,
            None => self.own.borrow_mut().take(),
        };
        est.remove_adaptation();
        let put_back = |est: &mut Estimator, previous: Option<Applied>| {
            if let Some(p) = previous
                && est.apply_adaptation(&p.adaptation).is_ok()
            {
                *self.own.borrow_mut() = Some(p);
            }
        };
        if let Err(e) = est.check_adaptable() {
            put_back(est, previous);
            return send(&Reply::AdaptFailed { message: e.to_string(), cancelled: false });
        }
        if let Some(message) = page_file_refusal(&name, content.len() as u64) {
            put_back(est, previous);
            return send(&Reply::AdaptFailed { message, cancelled: false });
        }
        let items = match pricer::adapt::read_shop_file(
            est,
            &name,
            std::io::Cursor::new(content.clone().into_bytes()),
            pricer::readers::Prices::DecimalPoint,
        ) {
            Ok(items) => items,
            Err(e) => {
                put_back(est, previous);
                return send(&Reply::AdaptFailed { message: e.to_string(), cancelled: false });
            }
        };
        send(&Reply::AdaptProgress { done: 0, total: items.len() });
        *self.adapting.borrow_mut() = Some(Job { id, name, content, items, values: vec![], previous });
        drop(model);
        let state = self.clone();
        later(move || state.adapt_step(id));
    }

    /// Embeds one more batch of the shop's products, then yields; fits the
    /// adaptation after the last.
    pub(super) fn adapt_step(self, id: u64) {
        if self.adapt_latest.get() != id {
            return;
        }
        let finished = {
            let model = self.model.borrow();
            let mut slot = self.adapting.borrow_mut();
            let (Some(est), Some(job)) = (model.as_ref(), slot.as_mut()) else { return };
            if job.id != id {
                return;
            }
            let at = job.values.len();
            let end = (at + pricer::estimator::BATCH).min(job.items.len());
            let values = est.member_values(&job.items.products[at..end]);
            job.values.extend(values);
            send(&Reply::AdaptProgress { done: end, total: job.items.len() });
            end == job.items.len()
        };
        if !finished {
            return later(move || self.adapt_step(id));
        }
        let Some(mut job) = self.adapting.borrow_mut().take() else { return };
        let fitted = {
            let model = self.model.borrow();
            let Some(est) = model.as_ref() else { return };
            let values = std::mem::take(&mut job.values);
            pricer::adapt::fit(est, &job.items, values, &job.name)
        };
        let applied = fitted.map_err(|e| e.to_string()).and_then(|a| {
            let bytes = a.to_bytes().map_err(|e| e.to_string())?;
            let skipped = job.items.skipped.clone();
            self.apply(Applied { adaptation: a, name: job.name.clone(), skipped })?;
            Ok(bytes)
        });
        match applied {
            Ok(bytes) => {
                let own = self.own.borrow().as_ref().map(summary);
                let kept = Kept { name: job.name, content: job.content, adaptation: bytes };
                wasm_bindgen_futures::spawn_local(async move {
                    // Kept before the page hears of it, so the second worker finds it.
                    let _ = kept::keep(&kept).await;
                    if let Some(own) = own {
                        send(&Reply::Adapted { own, restored: false });
                    }
                });
            }
            Err(message) => {
                if let Some(p) = job.previous {
                    let _ = self.apply(p);
                }
                send(&Reply::AdaptFailed { message, cancelled: false });
            }
        }
    }

    pub(super) fn cancel_adapting(&self) {
        self.adapt_latest.set(self.adapt_latest.get() + 1);
        let Some(job) = self.adapting.borrow_mut().take() else { return };
        if let Some(p) = job.previous {
            let _ = self.apply(p);
        }
        send(&Reply::AdaptFailed { message: "adapting was cancelled".into(), cancelled: true });
    }
}
