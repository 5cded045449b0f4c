//! "Price a whole file": a part of records at a time, a few per turn of
//! the event loop, an estimate asked meanwhile answered first.

use super::{State, later, send};
use crate::protocol::*;
use pricer::readers::{Format, NumberedRecord, Prices, read_numbered_products_as};
use pricer::{Estimator, Product};

/// A file being priced: its records as they are read, in file order, and
/// where the part under way stands.
pub(super) struct BatchJob {
    pub(super) id: u64,
    pub(super) records: Box<dyn Iterator<Item = NumberedRecord>>,
    /// Records in the file, in the parts before this one, in this part, and
    /// read of this part so far.
    pub(super) count: usize,
    pub(super) before: usize,
    pub(super) part: usize,
    pub(super) read: usize,
    pub(super) rows: Vec<BatchRow>,
    /// The records this worker prices, and how many of them this part holds.
    pub(super) shard: Shard,
    pub(super) mine: usize,
}

impl BatchJob {
    /// Reads the file's records (counted first, for the progress and the
    /// time left); the first part starts at once.
    fn new(id: u64, name: &str, content: String, shard: Shard) -> Result<BatchJob, String> {
        let bytes: std::rc::Rc<[u8]> = content.into_bytes().into();
        let format = Format::from_name(name);
        let open = |bytes: std::rc::Rc<[u8]>| {
            read_numbered_products_as(std::io::Cursor::new(bytes), format, Prices::DecimalPoint)
                .map_err(|e| format!("{name} could not be read: {e}"))
        };
        let count = open(bytes.clone())?.count();
        if count == 0 {
            return Err(format!("{name} holds no products"));
        }
        let records = open(bytes)?;
        let mut job = BatchJob { id, records, count, before: 0, part: 0, read: 0, rows: vec![], shard, mine: 0 };
        job.next_part();
        Ok(job)
    }

    /// The next part: up to [`BATCH_ROWS`] records after those priced.
    fn next_part(&mut self) {
        self.part = (self.count - self.before).min(BATCH_ROWS);
        self.mine = self.shard.count(self.before, self.before + self.part);
    }

    /// This worker's records of the part priced so far.
    fn mine_done(&self) -> usize {
        self.shard.count(self.before, self.before + self.read)
    }

    /// Prices the next few records of the part; true when the part is done.
    fn step(&mut self, est: &Estimator) -> bool {
        let mut pending: Vec<(u64, Product)> = Vec::new();
        while pending.len() < pricer::estimator::BATCH && self.read < self.part {
            let Some((line, record)) = self.records.next() else {
                // Fewer records than counted: the part ends here.
                self.part = self.read;
                break;
            };
            let r = self.before + self.read;
            self.read += 1;
            if !self.shard.has(r) {
                continue;
            }
            match record {
                Ok(p) => pending.push((line, p)),
                Err(e) => self.rows.push(BatchRow { line, title: String::new(), result: Err(e.reason) }),
            }
        }
        let products: Vec<Product> = pending.iter().map(|(_, p)| p.clone()).collect();
        for ((line, p), r) in pending.into_iter().zip(est.estimate_batch(&products)) {
            let result = r.map(|e| (e.price, e.low, e.high)).map_err(|e| e.to_string());
            self.rows.push(BatchRow { line, title: p.title, result });
        }
        self.read >= self.part
    }

    /// The part's rows, in file order, as the page gets them.
    fn done(&mut self, cancelled: bool) -> Reply {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|r| r.line);
        let before = self.before;
        self.before += self.read;
        self.read = 0;
        self.part = 0;
        Reply::BatchDone { rows, before, left: self.count - self.before, cancelled, records: self.count }
    }
}

impl State {
    /// Starts pricing a file's records (its first part).
    pub(super) fn start_batch(&self, name: String, content: String, shard: Shard) {
        let id = self.batch_latest.get() + 1;
        self.batch_latest.set(id);
        self.batching.borrow_mut().take();
        if self.model.borrow().is_none() {
            return send(&Reply::BatchFailed { message: "the model is not loaded yet".into() });
        }
        if let Some(message) = page_file_refusal(&name, content.len() as u64) {
            return send(&Reply::BatchFailed { message });
        }
        match BatchJob::new(id, &name, content, shard) {
            Ok(job) => {
                send(&Reply::BatchProgress { done: 0, total: job.mine });
                *self.batching.borrow_mut() = Some(job);
                let state = self.clone();
                later(move || state.batch_step(id));
            }
            Err(message) => send(&Reply::BatchFailed { message }),
        }
    }

    /// Prices the file's next part, if it has one.
    pub(super) fn next_batch(&self) {
        let id = self.batch_latest.get() + 1;
        let mut slot = self.batching.borrow_mut();
        let Some(job) = slot.as_mut().filter(|j| j.part == 0 && j.before < j.count) else {
            return send(&Reply::BatchFailed { message: "no file is waiting to be priced further".into() });
        };
        self.batch_latest.set(id);
        job.id = id;
        job.next_part();
        send(&Reply::BatchProgress { done: 0, total: job.mine });
        let state = self.clone();
        later(move || state.batch_step(id));
    }

    /// Prices a few more records, then yields; an estimate asked meanwhile
    /// is answered first, so it never waits for the file.
    pub(super) fn batch_step(self, id: u64) {
        if self.batch_latest.get() != id {
            return;
        }
        if self.restoring.get() {
            return later(move || self.batch_step(id));
        }
        if self.estimate_pending.borrow().is_some() {
            self.answer_estimate();
        }
        let reply = {
            let model = self.model.borrow();
            let mut slot = self.batching.borrow_mut();
            let (Some(est), Some(job)) = (model.as_ref(), slot.as_mut()) else { return };
            if job.id != id {
                return;
            }
            if job.step(est) {
                Some(job.done(false))
            } else {
                send(&Reply::BatchProgress { done: job.mine_done(), total: job.mine });
                None
            }
        };
        match reply {
            Some(reply) => {
                if let Reply::BatchDone { left: 0, .. } = reply {
                    self.batching.borrow_mut().take();
                }
                send(&reply);
            }
            None => later(move || self.batch_step(id)),
        }
    }

    /// Stops the part under way; its rows so far are shown, and the file is dropped.
    pub(super) fn cancel_batch(&self) {
        self.batch_latest.set(self.batch_latest.get() + 1);
        if let Some(mut job) = self.batching.borrow_mut().take() {
            send(&job.done(true));
        }
    }
}
