//! The shop's own products: an adaptation fitted a batch of products per
//! turn of the event loop, laid over the model, restored from IndexedDB.

use super::kept::{self, Applied, Job, Kept};
use super::{State, later, send};
use crate::protocol::*;
use pricer::{Estimator, Product};

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
            None if self.first.get() => self.start_adapting(kept.name, kept.content, 0, Shard::ALL),
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

    /// Starts adapting the model to the products of a file's text: this
    /// worker embeds `shard`'s products (every product when alone).
    pub(super) fn start_adapting(&self, name: String, content: String, page_job: u64, shard: Shard) {
        if self.restoring.get() {
            // The kept adaptation is being laid over the model: it must be on
            // before it comes off for the products to be read by the model as published.
            let (state, asked) = (self.clone(), self.adapt_latest.get());
            return later(move || {
                // Unless cancelled (or replaced) meanwhile.
                if state.adapt_latest.get() == asked {
                    state.start_adapting(name, content, page_job, shard)
                }
            });
        }
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
        let values = (0..items.len()).map(|_| None).collect();
        let waiting = if shard.index == 0 { (1..shard.of).collect() } else { vec![] };
        let job = Job { id, page_job, name, content, items, shard, values, done: 0, waiting, previous };
        send(&Reply::AdaptProgress { done: 0, total: job.mine() });
        *self.adapting.borrow_mut() = Some(job);
        drop(model);
        let state = self.clone();
        later(move || state.adapt_step(id));
    }

    /// Embeds a few more of this worker's products, then yields; after the
    /// last, sends the share on or (the first worker) fits the adaptation
    /// once every share is in.
    pub(super) fn adapt_step(self, id: u64) {
        if self.adapt_latest.get() != id {
            return;
        }
        let (finished, fit_now) = {
            let model = self.model.borrow();
            let mut slot = self.adapting.borrow_mut();
            let (Some(est), Some(job)) = (model.as_ref(), slot.as_mut()) else { return };
            if job.id != id {
                return;
            }
            let (mine, Shard { index, of }) = (job.mine(), job.shard);
            let end = (job.done + pricer::estimator::BATCH).min(mine);
            let which: Vec<usize> = (job.done..end).map(|k| index + k * of).collect();
            let products: Vec<Product> = which.iter().map(|&r| job.items.products[r].clone()).collect();
            for (r, v) in which.into_iter().zip(est.member_values(&products)) {
                job.values[r] = Some(v);
            }
            job.done = end;
            send(&Reply::AdaptProgress { done: end, total: mine });
            (end == mine, end == mine && index == 0 && job.waiting.is_empty())
        };
        if !finished {
            return later(move || self.adapt_step(id));
        }
        if fit_now {
            return self.fit();
        }
        let share = self.adapting.borrow().as_ref().is_some_and(|j| j.shard.index != 0);
        if share && let Some(job) = self.adapting.borrow_mut().take() {
            let values = job.values.iter().flatten().map(SentValues::send).collect();
            send(&Reply::AdaptShare { job: job.page_job, index: job.shard.index, values });
            // This worker keeps the model as it was: the first worker fits.
            if let Some(p) = job.previous {
                let _ = self.apply(p);
            }
        }
    }

    /// Another worker's share of the products of adaptation `page_job`:
    /// the adaptation is fitted once every share is in.
    pub(super) fn receive_share(&self, page_job: u64, index: usize, values: Vec<SentResult>) {
        let fit_now = {
            let mut slot = self.adapting.borrow_mut();
            // Shares of an adaptation that gave way are dropped.
            let Some(job) = slot.as_mut().filter(|j| page_job != 0 && j.page_job == page_job) else { return };
            let shard = Shard { index, of: job.shard.of };
            let expected = shard.count(0, job.items.len());
            if !job.waiting.contains(&index) || values.len() != expected {
                drop(slot);
                return self.abandon(format!(
                    "another worker's share of your products did not match the file ({} values for {expected} products of share {index})",
                    values.len()
                ));
            }
            job.waiting.retain(|&w| w != index);
            for (k, v) in values.into_iter().enumerate() {
                job.values[index + k * shard.of] = Some(SentValues::receive(v));
            }
            job.waiting.is_empty() && job.done == job.mine()
        };
        if fit_now {
            self.fit();
        }
    }

    /// Fits the adaptation on every product's values, lays it over the
    /// model and keeps it in IndexedDB.
    fn fit(&self) {
        let Some(mut job) = self.adapting.borrow_mut().take() else { return };
        let fitted = {
            let model = self.model.borrow();
            let Some(est) = model.as_ref() else { return };
            let values = std::mem::take(&mut job.values)
                .into_iter()
                .map(|v| v.unwrap_or_else(|| Err(pricer::Error::Model("the product was not read by the model".into()))))
                .collect();
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
        self.stop_adapting("adapting was cancelled".into(), true);
    }

    /// Gives the adaptation under way up, saying why.
    fn abandon(&self, message: String) {
        self.stop_adapting(message, false);
    }

    /// Stops the adaptation under way; the one before goes back on.
    fn stop_adapting(&self, message: String, cancelled: bool) {
        self.adapt_latest.set(self.adapt_latest.get() + 1);
        let Some(job) = self.adapting.borrow_mut().take() else {
            // A cancel before the products were read (the start waits for a restore): the page stops waiting.
            if cancelled {
                send(&Reply::AdaptFailed { message, cancelled });
            }
            return;
        };
        if let Some(p) = job.previous {
            let _ = self.apply(p);
        }
        send(&Reply::AdaptFailed { message, cancelled });
    }
}
