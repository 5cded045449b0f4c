//! Adapting a model to a shop's own priced products, without retraining:
//! the same code in `pricer adapt` and in the page's worker.
//!
//! 1. [`OwnItems::read`]: the shop's records, each with a price; records
//!    without one, duplicates (the same model input) and unreadable lines
//!    are skipped with their line.
//! 2. The caller runs the encoder over [`OwnItems::products`] in batches
//!    ([`Estimator::member_values`]), natively on all cores or in the worker
//!    a batch at a time.
//! 3. [`fit`]: the items become a second neighbour index (with titles, so
//!    comparables can come from them), and the blend is refitted by k-fold
//!    cross-validation in log space. With fewer than [`REFIT_FROM`] items only
//!    a scale and bias of the model's estimate; from there also every
//!    member's weight and the own items' neighbour member (its value out of
//!    fold: an item never finds itself), pulled toward the model's blend. Of
//!    the model as it is, scale and bias, and the refit, the simplest whose
//!    cross-validated MAE no richer one beats by [`MARGIN`] is kept, so
//!    adapting never makes the cross-validated error worse.
//! 4. [`Adaptation`]: the new blend, the index and the report, written into a
//!    model file ([`Estimator::adapted_file`]) or as a small file of its own
//!    that the page keeps and lays over the model it was fitted on
//!    ([`Estimator::apply_adaptation`]).

use crate::estimator::{Blend, LogOutputs, Member, MemberValues, OWN_INDEX, Predictor, Stack};
use crate::knn::{ItemLabels, Knn, Neighbour};
use crate::metrics::Summary;
use crate::model_file::{ModelFile, ModelWriter};
use crate::readers::{Format, RecordError};
use crate::{Error, Estimator, Product, text};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Metadata keys of an adaptation.
pub mod keys {
    pub const ITEMS: &str = "pricer.adapt.items";
    pub const SKIPPED: &str = "pricer.adapt.skipped";
    pub const METHOD: &str = "pricer.adapt.method";
    pub const SOURCE: &str = "pricer.adapt.source";
    pub const FOLDS: &str = "pricer.adapt.folds";
    /// The tensor checksum of the model the adaptation was fitted on.
    pub const BASE_CRC: &str = "pricer.adapt.base_crc32";

    /// `pricer.adapt.cv.before.mae`, `pricer.adapt.cv.after.rmsle`...
    pub fn cv(when: &str, metric: &str) -> String {
        format!("pricer.adapt.cv.{when}.{metric}")
    }
}

/// Fewest usable items an adaptation accepts.
pub const MIN_ITEMS: usize = 5;
/// From this many items the blend's weights are refitted, below it only a
/// scale and bias (docs/benchmarks.md, "Your own products": the learning curves).
pub const REFIT_FROM: usize = 300;
/// Folds of the cross-validation.
pub const FOLDS: usize = 5;
/// Own items that vote in the own neighbour member.
pub const OWN_K: usize = 10;
/// Softmax temperature of the own neighbour member (as the training index's).
pub const OWN_TEMPERATURE: f32 = 0.05;
/// How the own items vote: fading out at the k-th, as the default model's
/// index (software halves: the same or a few cents better than the softmax
/// at every size, docs/benchmarks.md).
pub const OWN_VOTE: crate::knn::Vote = crate::knn::Vote::Fade;
/// Pull of a refit's weights toward the model's blend, per item (ridge).
pub const REFIT_PULL: f64 = 0.05;
/// How much lower a richer fit's cross-validated MAE must be than the
/// simpler one's to be kept (the model as it is, then scale and bias, then
/// the refit): 2% (on the catalog split, 300 products, a refit 0.3% lower
/// on cross-validation was 1% worse on held-out items; docs/benchmarks.md).
pub const MARGIN: f64 = 0.02;
/// Pull of the scale toward 1, as many items' worth of evidence.
pub const SCALE_PULL: f64 = 5.0;

/// What was refitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Nothing beat the model's own blend on cross-validation: it is kept
    /// (the items still serve as comparables).
    Unchanged,
    /// A scale and bias of the model's estimate in log space.
    ScaleBias,
    /// Every member's weight, the own items' neighbour member and the bias.
    Refit,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Unchanged => "unchanged",
            Method::ScaleBias => "scale_bias",
            Method::Refit => "refit",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        [Method::Unchanged, Method::ScaleBias, Method::Refit].into_iter().find(|m| m.name() == name)
    }

    /// For people: what was done.
    pub fn describe(self) -> &'static str {
        match self {
            Method::Unchanged => "the model's blend kept (refitting did not lower the cross-validated error)",
            Method::ScaleBias => "a scale and bias of the model's estimate refitted",
            Method::Refit => "the blend's weights refitted with a member for your own items' neighbours",
        }
    }
}

/// A record that was not used, with its 1-based line (CSV: row after the header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub line: u64,
    pub reason: String,
}

/// Skipped records that are listed by line (the CLI's and the page's list);
/// the rest are counted.
pub const SHOWN_SKIPS: usize = 20;

/// Why a shop's product file gives nothing to adapt to.
#[derive(Debug, Clone, PartialEq)]
pub enum ShopFileError {
    /// The file as a whole could not be read (not a table, not text...).
    Unreadable { name: String, reason: String },
    /// Read, but no record is usable; every record is in `skipped`, with why.
    NoUsable { name: String, skipped: Vec<Skipped> },
}

impl std::fmt::Display for ShopFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShopFileError::Unreadable { name, reason } => write!(f, "{name} could not be read: {reason}"),
            ShopFileError::NoUsable { name, skipped } => {
                let first: Vec<String> =
                    skipped.iter().take(3).map(|s| format!("line {}: {}", s.line, s.reason)).collect();
                write!(f, "{name} has no usable priced product ({} records skipped", skipped.len())?;
                if !first.is_empty() {
                    write!(f, "; {}", first.join("; "))?;
                }
                write!(f, ")")
            }
        }
    }
}

impl std::error::Error for ShopFileError {}

/// A shop's product file as `pricer adapt` and the page read it: the format
/// from the file's name (`.csv`, else JSON lines), prices as `prices` says,
/// then [`OwnItems::read`].
/// A file with no usable priced product is refused, naming the first reasons.
pub fn read_shop_file(
    est: &Estimator,
    name: &str,
    bytes: impl std::io::Read + 'static,
    prices: crate::readers::Prices,
) -> Result<OwnItems, ShopFileError> {
    let format = Format::from_name(name);
    let records = crate::readers::read_products_as(bytes, format, prices)
        .map_err(|e| ShopFileError::Unreadable { name: name.to_string(), reason: e.to_string() })?;
    let items = OwnItems::read(est, records, format);
    if items.is_empty() {
        return Err(ShopFileError::NoUsable { name: name.to_string(), skipped: items.skipped });
    }
    Ok(items)
}

/// A shop's priced products, ready to embed.
#[derive(Debug, Clone, Default)]
pub struct OwnItems {
    pub products: Vec<Product>,
    /// Each product's line in the source.
    pub lines: Vec<u64>,
    pub skipped: Vec<Skipped>,
}

impl OwnItems {
    /// The usable records, shortest model input first: each has a positive
    /// price and a model input that no earlier record had. The rest are
    /// [`OwnItems::skipped`], with why.
    /// Lines are the file's: a CSV file's records start on line 2, after
    /// its header (a record whose quoted field spans lines moves the ones
    /// after it; the readers' own errors name the exact line).
    pub fn read(
        est: &Estimator,
        records: impl Iterator<Item = Result<Product, RecordError>>,
        format: Format,
    ) -> OwnItems {
        let header = if format == Format::Csv { 1 } else { 0 };
        let mut out = OwnItems::default();
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut lengths = Vec::new();
        for (i, record) in records.enumerate() {
            let line = i as u64 + 1 + header;
            let p = match record {
                Ok(p) => p,
                Err(e) => {
                    out.skipped.push(Skipped { line: e.line, reason: e.reason });
                    continue;
                }
            };
            let reason = match (p.price, text::model_input(&p, est.prep.budget())) {
                (None, _) => "no price".to_string(),
                (Some(price), _) if !(price > 0.0 && price.is_finite()) => format!("price {price} is not above zero"),
                (_, Err(e)) => e.to_string(),
                (Some(_), Ok(input)) => match seen.get(&input) {
                    Some(first) => format!("the same product as line {first}"),
                    None => {
                        lengths.push(input.len());
                        seen.insert(input, line);
                        out.products.push(p);
                        out.lines.push(line);
                        continue;
                    }
                },
            };
            out.skipped.push(Skipped { line, reason });
        }
        // Shortest text first: batches of similar lengths carry little padding.
        let mut usable: Vec<(usize, u64, Product)> = lengths
            .into_iter()
            .zip(out.lines.drain(..))
            .zip(out.products.drain(..))
            .map(|((n, l), p)| (n, l, p))
            .collect();
        usable.sort_by_key(|(n, _, _)| *n);
        (out.lines, out.products) = usable.into_iter().map(|(_, l, p)| (l, p)).unzip();
        out
    }

    pub fn len(&self) -> usize {
        self.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }
}

/// Cross-validated error of the model before and after adapting, on the items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub items: usize,
    pub skipped: usize,
    pub method: Method,
    pub folds: usize,
    pub before: Summary,
    pub after: Summary,
    /// The file the items came from (its name only).
    pub source: String,
}

/// A fitted adaptation: the new blend, the own items' index and the report.
#[derive(Debug, Clone)]
pub struct Adaptation {
    pub blend: Blend,
    pub own: Knn,
    pub report: Report,
    /// The tensor checksum of the model it was fitted on.
    pub base_crc: u32,
}

impl Adaptation {
    /// Writes the blend, the index and the report into a model file being written.
    pub fn write(&self, w: &mut ModelWriter) -> Result<(), Error> {
        let names: Vec<String> = self.blend.members.iter().map(Member::name).collect();
        w.set_strs(Stack::MEMBERS, &names)
            .set_f32s(Stack::WEIGHTS, &self.blend.weights.iter().map(|x| *x as f32).collect::<Vec<_>>())
            .set_f64(Stack::BAND_SCALE, self.blend.band_scale);
        self.own.write_as(w, OWN_INDEX)?;
        let r = &self.report;
        w.set_u32(keys::ITEMS, r.items as u32)
            .set_u32(keys::SKIPPED, r.skipped as u32)
            .set_str(keys::METHOD, r.method.name())
            .set_str(keys::SOURCE, &r.source)
            .set_u32(keys::FOLDS, r.folds as u32)
            .set_u32(keys::BASE_CRC, self.base_crc);
        for (when, s) in [("before", &r.before), ("after", &r.after)] {
            w.set_f64(&keys::cv(when, "mae"), s.mae)
                .set_f64(&keys::cv(when, "rmsle"), s.rmsle)
                .set_f64(&keys::cv(when, "hits_pct"), s.hits_pct)
                .set_f64(&keys::cv(when, "median_abs_error"), s.median_abs_error);
        }
        Ok(())
    }

    /// Reads an adaptation from an adapted model file or an adaptation file.
    pub fn read(f: &ModelFile) -> Result<Adaptation, Error> {
        let blend = Blend::read(f)?;
        let summary = |when: &str| -> Result<Summary, Error> {
            Ok(Summary {
                n: f.u32(keys::ITEMS)? as usize,
                mae: f.f64(&keys::cv(when, "mae"))?,
                rmsle: f.f64(&keys::cv(when, "rmsle"))?,
                hits_pct: f.f64(&keys::cv(when, "hits_pct"))?,
                median_abs_error: f.f64(&keys::cv(when, "median_abs_error"))?,
            })
        };
        let method = f.str(keys::METHOD)?;
        let report = Report {
            items: f.u32(keys::ITEMS)? as usize,
            skipped: f.u32(keys::SKIPPED)? as usize,
            method: Method::from_name(method)
                .ok_or_else(|| Error::ModelFile(format!("unknown adaptation method {method:?}")))?,
            folds: f.u32(keys::FOLDS)? as usize,
            before: summary("before")?,
            after: summary("after")?,
            source: f.str(keys::SOURCE)?.to_string(),
        };
        let own = Knn::read_as(f, OWN_INDEX).map_err(|e| Error::ModelFile(format!("the shop's own items: {e}")))?;
        if own.labels.is_none() {
            return Err(Error::ModelFile("the shop's own items have no titles".into()));
        }
        Ok(Adaptation { blend, own, report, base_crc: f.u32(keys::BASE_CRC)? })
    }

    /// The adaptation alone, as a small model file of kind `adaptation`
    /// (what the page keeps in IndexedDB).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut w = ModelWriter::new("adaptation");
        self.write(&mut w)?;
        w.to_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Adaptation, Error> {
        let f = ModelFile::from_bytes(bytes)?;
        if f.kind()? != "adaptation" {
            return Err(Error::ModelFile(format!("a {} model, not an adaptation", f.kind()?)));
        }
        Adaptation::read(&f)
    }

    /// The index as it is stored (vectors in 4 bits): what an adapted file
    /// holds, so an adaptation applied in memory estimates as its file does.
    fn stored(mut self) -> Result<Adaptation, Error> {
        // Weights are stored as f32.
        for x in &mut self.blend.weights {
            *x = *x as f32 as f64;
        }
        let mut w = ModelWriter::new("adaptation");
        self.own.write_as(&mut w, OWN_INDEX)?;
        self.own = Knn::read_as(&ModelFile::from_bytes(&w.to_bytes()?)?, OWN_INDEX)?;
        Ok(self)
    }
}

/// A product's member values on the model before adapting (what
/// [`Estimator::member_values`] gave) as the adapted blend reads them: with
/// the own items' neighbour member when the blend has it. For measuring many
/// adaptations on the same embedded products without running the encoder again.
pub fn adapted_values(a: &Adaptation, mut v: MemberValues) -> MemberValues {
    if a.blend.members.contains(&Member::OwnNeighbours)
        && let Some(pooled) = &v.pooled
    {
        if v.values.is_empty() {
            // A minilm model's one member, its encoder.
            v.values.push(v.head.map_or(0.0, |h| h[0]));
        }
        v.values.push(a.own.log_estimate(pooled));
    } else if v.values.is_empty() {
        v.values.push(v.head.map_or(0.0, |h| h[0]));
    }
    v
}

impl OwnItems {
    /// The items among the first `n` usable records of the file (by line),
    /// and where each is in `self`.
    pub fn first(&self, n: usize) -> (OwnItems, Vec<usize>) {
        let mut by_line: Vec<u64> = self.lines.clone();
        by_line.sort_unstable();
        let last = by_line.get(n.saturating_sub(1)).copied().unwrap_or(u64::MAX);
        let keep: Vec<usize> = (0..self.len()).filter(|&i| self.lines[i] <= last).collect();
        let items = OwnItems {
            products: keep.iter().map(|&i| self.products[i].clone()).collect(),
            lines: keep.iter().map(|&i| self.lines[i]).collect(),
            skipped: self.skipped.clone(),
        };
        (items, keep)
    }
}

/// The tensor checksum that names a model file's weights.
pub fn model_crc(f: &ModelFile) -> Result<u32, Error> {
    f.u32(crate::model_file::keys::CRC)
}

impl Estimator {
    /// Why this model cannot be adapted, if it cannot: it needs an encoder
    /// (the own items are found by its embeddings) and must not be adapted already.
    pub fn check_adaptable(&self) -> Result<(), Error> {
        let adapted = match &self.predictor {
            Predictor::Stack(s) => s.own.is_some(),
            _ => false,
        } || self.file.metadata.contains_key(keys::ITEMS);
        if adapted {
            return Err(Error::Model(
                "this model is already adapted to a shop's products: adapt the original model instead".into(),
            ));
        }
        if self.neural().is_none() {
            return Err(Error::Model(format!(
                "adapting needs a model with an encoder (a stack or minilm), not a {} model",
                self.kind
            )));
        }
        Ok(())
    }

    /// The model with `a` laid over it: its blend and the own items' index.
    /// `a` must have been fitted on this model's weights.
    pub fn apply_adaptation(&mut self, a: &Adaptation) -> Result<(), Error> {
        self.check_adaptable()?;
        let crc = model_crc(&self.file)?;
        if crc != a.base_crc {
            return Err(Error::Model(format!(
                "the adaptation was fitted on another model (checksum {:08x}, this one {crc:08x})",
                a.base_crc
            )));
        }
        let stack = self.as_stack();
        stack.own = Some(Box::new(a.own.clone()));
        stack.members = a.blend.members.clone();
        stack.weights = a.blend.weights.clone();
        stack.band_scale = a.blend.band_scale;
        Ok(())
    }

    /// Back to the model as its file has it (after [`Estimator::apply_adaptation`]).
    /// A file written adapted (`pricer adapt`) keeps its adaptation: it is the model.
    pub fn remove_adaptation(&mut self) {
        if self.file.metadata.contains_key(keys::ITEMS) {
            return;
        }
        let Predictor::Stack(s) = &mut self.predictor else { return };
        if self.kind == "minilm" {
            // Made a stack of its encoder alone by `as_stack`: the encoder again.
            if let Some(n) = s.neural.take() {
                self.predictor = Predictor::Neural(n);
            }
        } else if let Ok(original) = Blend::read(&self.file) {
            s.own = None;
            s.members = original.members;
            s.weights = original.weights;
            s.band_scale = original.band_scale;
        }
    }

    /// The predictor as a stack: an encoder alone becomes a stack of one member.
    fn as_stack(&mut self) -> &mut Stack {
        if let Predictor::Neural(_) = &self.predictor {
            let Predictor::Neural(n) = std::mem::replace(&mut self.predictor, Predictor::Constant(0.0)) else {
                unreachable!()
            };
            self.predictor = Predictor::Stack(Stack {
                neural: Some(n),
                knn: None,
                own: None,
                linear: vec![],
                members: vec![Member::Encoder],
                weights: vec![1.0, 0.0],
                band_scale: 1.0,
            });
        }
        match &mut self.predictor {
            Predictor::Stack(s) => s,
            _ => unreachable!("checked by check_adaptable"),
        }
    }

    /// The blend the model's file gives (a minilm model: its encoder alone).
    fn file_blend(&self) -> Option<Blend> {
        match &self.predictor {
            Predictor::Stack(s) => Some(s.blend_params()),
            Predictor::Neural(_) => {
                Some(Blend { members: vec![Member::Encoder], weights: vec![1.0, 0.0], band_scale: 1.0 })
            }
            _ => None,
        }
    }

    /// The whole model file with `a` in it: one self-contained file any
    /// Pricer loads, whose card says it was adapted.
    pub fn adapted_file(&self, a: &Adaptation) -> Result<Vec<u8>, Error> {
        let mut w = ModelWriter::from_file(&self.file)?;
        w.set_str(crate::model_file::keys::KIND, "stack");
        a.write(&mut w)?;
        w.to_bytes()
    }
}

/// One embedded item: the model's member values and head outputs.
struct Row {
    values: Vec<f64>,
    head: Option<LogOutputs>,
    pooled: Vec<f32>,
    log_price: f64,
}

/// Least squares pulled toward a prior: minimises
/// `sum (y - x.w)^2 + sum_j pull_j (w_j - prior_j)^2`.
fn ridge(xs: &[Vec<f64>], ys: &[f64], prior: &[f64], pull: &[f64]) -> Vec<f64> {
    let p = prior.len();
    let mut a = vec![vec![0.0; p + 1]; p];
    for (x, y) in xs.iter().zip(ys) {
        for i in 0..p {
            for j in 0..p {
                a[i][j] += x[i] * x[j];
            }
            a[i][p] += x[i] * y;
        }
    }
    for i in 0..p {
        a[i][i] += pull[i];
        a[i][p] += pull[i] * prior[i];
    }
    solve(a).unwrap_or_else(|| prior.to_vec())
}

/// Solves the augmented system `a` (p rows of p + 1) by Gaussian
/// elimination with partial pivoting; `None` when it is singular.
fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let p = a.len();
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let (above, below) = a.split_at_mut(col + 1);
        let pivot_row = &above[col];
        for row in below {
            let f = row[col] / pivot_row[col];
            for (x, y) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * y;
            }
        }
    }
    let mut w = vec![0.0; p];
    for row in (0..p).rev() {
        let rest: f64 = (row + 1..p).map(|k| a[row][k] * w[k]).sum();
        w[row] = (a[row][p] - rest) / a[row][row];
    }
    Some(w)
}

/// A candidate's cross-validated predictions in log space, and its final
/// fit on every item.
struct Candidate {
    method: Method,
    oof: Vec<f64>,
    blend: Blend,
}

/// Fits the adaptation of `est` to `items`, whose member values (from
/// [`Estimator::member_values`] on [`OwnItems::products`], in order) are `values`.
pub fn fit(
    est: &Estimator,
    items: &OwnItems,
    values: Vec<Result<MemberValues, Error>>,
    source: &str,
) -> Result<Adaptation, Error> {
    fit_with(est, items, values, source, REFIT_FROM)
}

/// [`fit`], refitting the weights from `refit_from` items (to measure the threshold).
pub fn fit_with(
    est: &Estimator,
    items: &OwnItems,
    values: Vec<Result<MemberValues, Error>>,
    source: &str,
    refit_from: usize,
) -> Result<Adaptation, Error> {
    est.check_adaptable()?;
    let blend = est.file_blend().expect("an adaptable model has a blend");
    let mut skipped = items.skipped.clone();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for ((p, line), v) in items.products.iter().zip(&items.lines).zip(values) {
        match v.and_then(|v| {
            let pooled = v.pooled.ok_or_else(|| Error::Model("no encoder output".into()))?;
            Ok((v.values, v.head, pooled))
        }) {
            Ok((values, head, pooled)) => {
                // A model that is not a stack has one member: its encoder.
                let values = if values.is_empty() { vec![head.map_or(0.0, |h| h[0])] } else { values };
                rows.push(Row { values, head, pooled, log_price: p.price.unwrap_or(0.0).ln_1p() });
                labels.push((p.title.as_str(), p.category.as_deref()));
            }
            Err(e) => skipped.push(Skipped { line: *line, reason: e.to_string() }),
        }
    }
    skipped.sort_by_key(|s| s.line);
    let n = rows.len();
    if n < MIN_ITEMS {
        return Err(Error::Model(format!(
            "adapting needs at least {MIN_ITEMS} priced products; {n} usable ({} skipped)",
            skipped.len()
        )));
    }
    let dim = rows[0].pooled.len();
    let vectors: Vec<f32> = rows.iter().flat_map(|r| r.pooled.iter().copied()).collect();
    let log_prices: Vec<f32> = rows.iter().map(|r| r.log_price as f32).collect();
    let own = Knn::new(&vectors, log_prices, dim, OWN_K, OWN_TEMPERATURE)?
        .with_vote(OWN_VOTE)
        .with_labels(ItemLabels::new(labels.iter().copied()))?;

    // Folds from a seeded shuffle: files are often sorted by price or kind.
    let folds = FOLDS.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(42));
    let mut fold = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        fold[i] = pos % folds;
    }
    // Each item's nearest other items, enough to leave a fold out and keep k.
    let near: Vec<Vec<Neighbour>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = own.nearest(&r.pooled, 3 * OWN_K + 1);
            v.retain(|nb| nb.index != i);
            v
        })
        .collect();
    let before: Vec<f64> = rows.iter().map(|r| blend_value(&blend, &r.values)).collect();
    // The own neighbour member's value of item `i` from the items `allowed` lets vote.
    let own_value =
        |i: usize, allowed: &dyn Fn(usize) -> bool| own.log_estimate_among(&near[i], allowed).unwrap_or(before[i]);

    let truth: Vec<f64> = rows.iter().map(|r| r.log_price).collect();
    let mut candidates = vec![Candidate { method: Method::Unchanged, oof: before.clone(), blend: blend.clone() }];
    // Scale and bias of the model's estimate.
    {
        let fit_on = |idx: &[usize]| -> (f64, f64) {
            let mean_b = idx.iter().map(|&i| before[i]).sum::<f64>() / idx.len() as f64;
            let xs: Vec<Vec<f64>> = idx.iter().map(|&i| vec![before[i] - mean_b, 1.0]).collect();
            let ys: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
            let var = xs.iter().map(|x| x[0] * x[0]).sum::<f64>() / idx.len() as f64;
            let w = ridge(&xs, &ys, &[1.0, mean_b], &[SCALE_PULL * var.max(1e-9), 0.0]);
            (w[0], w[1] - w[0] * mean_b)
        };
        let mut oof = vec![0.0; n];
        for f in 0..folds {
            let train: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
            let (a, c) = fit_on(&train);
            for i in (0..n).filter(|&i| fold[i] == f) {
                oof[i] = a * before[i] + c;
            }
        }
        let (a, c) = fit_on(&(0..n).collect::<Vec<_>>());
        let mut weights: Vec<f64> = blend.weights.iter().map(|w| a * w).collect();
        *weights.last_mut().expect("a bias") += c;
        candidates.push(Candidate { method: Method::ScaleBias, oof, blend: Blend { weights, ..blend.clone() } });
    }
    // Every weight, with the own neighbour member, pulled toward the blend.
    if n >= refit_from {
        let m = blend.members.len();
        let mut prior: Vec<f64> = blend.weights[..m].to_vec();
        prior.push(0.0);
        prior.push(blend.weights[m]);
        let mut pull = vec![REFIT_PULL * n as f64; m + 1];
        pull.push(0.0);
        let features = |i: usize, own_v: f64| -> Vec<f64> {
            let mut x = rows[i].values.clone();
            x.push(own_v);
            x.push(1.0);
            x
        };
        let fit_on = |idx: &[usize], left_out: Option<usize>| -> Vec<f64> {
            let xs: Vec<Vec<f64>> =
                idx.iter().map(|&i| features(i, own_value(i, &|j| j != i && Some(fold[j]) != left_out))).collect();
            let ys: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
            ridge(&xs, &ys, &prior, &pull)
        };
        let dot = |x: &[f64], w: &[f64]| x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        let mut oof = vec![0.0; n];
        for f in 0..folds {
            let train: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
            let w = fit_on(&train, Some(f));
            for i in (0..n).filter(|&i| fold[i] == f) {
                oof[i] = dot(&features(i, own_value(i, &|j| fold[j] != f)), &w);
            }
        }
        let w = fit_on(&(0..n).collect::<Vec<_>>(), None);
        let mut members = blend.members.clone();
        members.push(Member::OwnNeighbours);
        candidates.push(Candidate {
            method: Method::Refit,
            oof,
            blend: Blend { members, weights: w, band_scale: 1.0 },
        });
    }

    let dollars = |logs: &[f64]| -> Summary {
        let pairs: Vec<(f64, f64)> = logs.iter().zip(&truth).map(|(e, t)| (e.exp_m1().max(0.0), t.exp_m1())).collect();
        Summary::of(&pairs).expect("at least MIN_ITEMS items")
    };
    let scored: Vec<(Summary, Candidate)> = candidates.into_iter().map(|c| (dollars(&c.oof), c)).collect();
    let before_summary = scored[0].0;
    // Simplest first; a richer fit must beat the one kept by a margin, so
    // the noise of a few folds does not pick it.
    let mut kept: Option<(Summary, Candidate)> = None;
    for (summary, c) in scored {
        match &kept {
            Some((k, _)) if summary.mae >= (1.0 - MARGIN) * k.mae => {}
            _ => kept = Some((summary, c)),
        }
    }
    let (after, mut best) = kept.expect("the model as it is, at least");
    if best.method != Method::Unchanged {
        best.blend.band_scale = band_scale(&rows, &best.oof).unwrap_or(blend.band_scale);
    }
    let report = Report {
        items: n,
        skipped: skipped.len(),
        method: best.method,
        folds,
        before: before_summary,
        after,
        source: source.to_string(),
    };
    Adaptation { blend: best.blend, own, report, base_crc: model_crc(&est.file)? }.stored()
}

fn blend_value(b: &Blend, values: &[f64]) -> f64 {
    values.iter().zip(&b.weights).map(|(v, w)| v * w).sum::<f64>() + b.weights[b.members.len()]
}

/// The factor on the encoder's quantile band that puts 80% of the items'
/// prices inside the range around their out-of-fold estimates.
fn band_scale(rows: &[Row], oof: &[f64]) -> Option<f64> {
    let mut ratios: Vec<f64> = rows
        .iter()
        .zip(oof)
        .filter_map(|(r, point)| {
            let o = r.head?;
            let half = if r.log_price < *point { o[0] - o[1].min(o[3]) } else { o[1].max(o[3]) - o[0] };
            Some((r.log_price - point).abs() / half.max(1e-6))
        })
        .collect();
    if ratios.len() < 20 {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[((ratios.len() - 1) as f64 * 0.8).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::tests::neural_stack;

    const WORDS: [&str; 9] = ["steel", "blender", "usb", "cable", "gold", "ring", "pack", "of", "12"];

    fn model() -> Estimator {
        neural_stack(vec![Member::Encoder, Member::Neighbours], vec![0.6, 0.4, 0.2], vec![])
    }

    /// `n` distinct products of the tiny vocabulary, priced by `price(i, base log estimate)`.
    fn items(est: &Estimator, n: usize, mut price: impl FnMut(usize, f64) -> f64) -> OwnItems {
        let mut products = Vec::new();
        let mut i = 0usize;
        while products.len() < n {
            // Distinct word sequences: the digits of i in base 9.
            let (mut x, mut words) = (i + 81, vec![]);
            while x > 0 {
                words.push(WORDS[x % 9]);
                x /= 9;
            }
            i += 1;
            products.push(Product::from_free_text(&words.join(" ")));
        }
        let values = est.member_values(&products);
        for (j, (p, v)) in products.iter_mut().zip(values).enumerate() {
            let Predictor::Stack(s) = &est.predictor else { unreachable!() };
            p.price = Some(price(j, s.blend(&v.unwrap().values)).exp_m1());
        }
        OwnItems::read(est, products.into_iter().map(Ok), Format::Jsonl)
    }

    fn adapt(est: &Estimator, items: &OwnItems) -> Adaptation {
        fit(est, items, est.member_values(&items.products), "shop.csv").unwrap()
    }

    #[test]
    fn few_items_refit_only_a_scale_and_bias() {
        let est = model();
        // The shop's prices: half the model's log estimate, plus 0.3.
        let own = items(&est, 60, |_, base| 0.5 * base + 0.3);
        assert_eq!(own.len(), 60);
        let a = adapt(&est, &own);
        assert_eq!(a.report.method, Method::ScaleBias, "{:?}", a.report);
        assert_eq!(a.blend.members, vec![Member::Encoder, Member::Neighbours], "no member added");
        assert!(a.report.after.mae < 0.2 * a.report.before.mae, "{:?}", a.report);
        // Every weight scaled alike: 0.6 : 0.4 stays.
        let w = &a.blend.weights;
        assert!((w[0] / w[1] - 1.5).abs() < 1e-3 && (w[0] / 0.6 - 0.5).abs() < 0.05, "{w:?}");
        let mut adapted = model();
        adapted.apply_adaptation(&a).unwrap();
        for p in &own.products[..5] {
            let e = adapted.estimate(p).unwrap();
            assert!((e.price / p.price.unwrap() - 1.0).abs() < 0.05, "{e:?} vs {:?}", p.price);
        }
    }

    #[test]
    fn cross_validation_never_lets_an_item_see_itself() {
        let est = model();
        // Prices that no text explains: an item that found itself among its
        // neighbours would look perfectly priced by the own-neighbour member.
        let mut seed = 7u64;
        let own = items(&est, REFIT_FROM, |_, _| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            1.0 + 4.0 * ((seed >> 33) as f64 / (1u64 << 31) as f64)
        });
        let logs: Vec<f64> = own.products.iter().map(|p| p.price.unwrap().ln_1p()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let spread = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        let a = adapt(&est, &own);
        assert!(a.report.after.rmsle > 0.9 * spread, "out of fold, nothing is learnt: {:?} vs {spread}", a.report);
        // The index still holds every item, and a product of the shop finds itself first.
        assert_eq!(a.own.len(), own.len());
        let mut adapted = model();
        adapted.apply_adaptation(&a).unwrap();
        let x =
            adapted.explain(&own.products[3], crate::explain::ExplainOptions { comparables: 3, occlude: 0 }).unwrap();
        assert!(x.comparables[0].yours && x.comparables[0].title == own.products[3].title, "{:?}", x.comparables);
        assert!((x.total() - x.estimate.price.ln_1p()).abs() < 1e-6, "the reasons still add up");
    }

    #[test]
    fn an_adapted_file_round_trips_and_estimates_as_the_adaptation_applied() {
        let est = model();
        let own = items(&est, REFIT_FROM + 20, |i, base| 0.8 * base + 0.5 + 0.3 * ((i % 5) as f64 - 2.0));
        let a = adapt(&est, &own);
        assert!(a.report.after.mae <= a.report.before.mae);
        let file = Estimator::from_bytes(&est.adapted_file(&a).unwrap()).unwrap();
        let mut applied = model();
        let before: Vec<f64> = own.products[..8].iter().map(|p| applied.estimate(p).unwrap().price).collect();
        applied.apply_adaptation(&a).unwrap();
        for p in &own.products[..8] {
            // The index's 4-bit vectors, stored again, differ in the last bits.
            let (x, y) = (file.estimate(p).unwrap().price, applied.estimate(p).unwrap().price);
            assert!((x / y - 1.0).abs() < 1e-6, "{x} vs {y}");
        }
        // The file's card says it was adapted; the small file alone round-trips too.
        let back = Adaptation::read(&file.file).unwrap();
        assert_eq!((back.report.items, back.report.method), (own.len(), a.report.method));
        assert_eq!(back.report.source, "shop.csv");
        let blob = Adaptation::from_bytes(&a.to_bytes().unwrap()).unwrap();
        assert_eq!(blob.blend, a.blend);
        // Neither is adapted twice, and forgetting gives the model back (an
        // adapted file stays as it is).
        assert!(file.check_adaptable().unwrap_err().to_string().contains("already adapted"));
        let mut file = file;
        file.remove_adaptation();
        let p = &own.products[0];
        let (x, y) = (file.estimate(p).unwrap().price, applied.estimate(p).unwrap().price);
        assert!((x / y - 1.0).abs() < 1e-6, "{x} vs {y}");
        assert!(applied.apply_adaptation(&a).is_err());
        applied.remove_adaptation();
        let again: Vec<f64> = own.products[..8].iter().map(|p| applied.estimate(p).unwrap().price).collect();
        assert_eq!(before, again);
        // An adaptation fits only the model it was fitted on.
        let other = neural_stack(vec![Member::Encoder], vec![1.0, 0.0], vec![]);
        let mut other = Estimator::from_bytes(&{
            let mut w = ModelWriter::from_file(&other.file).unwrap();
            w.set_f64("pricer.other", 1.0).add_f32("other.tensor", &[1.0]).unwrap();
            w.to_bytes().unwrap()
        })
        .unwrap();
        let err = other.apply_adaptation(&a).unwrap_err().to_string();
        assert!(err.contains("another model"), "{err}");
        other.remove_adaptation();
    }

    #[test]
    fn bad_records_are_skipped_with_their_line_and_too_few_is_an_error() {
        let est = model();
        let priced = |t: &str, price: Option<f64>| Product { price, ..Product::from_free_text(t) };
        let records = vec![
            Ok(priced("steel blender", Some(30.0))),
            Ok(priced("usb cable", None)),
            Err(RecordError { line: 3, reason: "not JSON".into() }),
            Ok(priced("steel blender", Some(31.0))),
            Ok(priced("gold ring", Some(0.0))),
            Ok(priced("   ", Some(5.0))),
            Ok(priced("pack of 12", Some(9.0))),
        ];
        let own = OwnItems::read(&est, records.into_iter(), Format::Jsonl);
        assert_eq!(own.lines, vec![7, 1], "usable, shortest text first");
        let reasons: Vec<(u64, &str)> = own.skipped.iter().map(|s| (s.line, s.reason.as_str())).collect();
        assert_eq!(reasons[0], (2, "no price"));
        assert_eq!(reasons[1], (3, "not JSON"));
        assert_eq!(reasons[2], (4, "the same product as line 1"));
        assert!(reasons[3].0 == 5 && reasons[3].1.contains("not above zero"), "{reasons:?}");
        assert!(reasons[4].0 == 6 && reasons[4].1.contains("nothing to price"), "{reasons:?}");
        let err = fit(&est, &own, est.member_values(&own.products), "x.csv").unwrap_err().to_string();
        assert!(err.contains("at least 5 priced products; 2 usable (5 skipped)"), "{err}");
        // A model without an encoder has no embeddings to find the items by.
        let linear = crate::estimator::Estimator::from_bytes(&{
            let mut w = ModelWriter::new("constant");
            w.set_f64(crate::estimator::keys::CONSTANT_PRICE, 3.0).set_f64("pricer.range.log_low", -0.5);
            w.set_f64("pricer.range.log_high", 0.5);
            crate::estimator::Prep { max_tokens: 10, tokenizer: None }.write(&mut w);
            w.to_bytes().unwrap()
        })
        .unwrap();
        assert!(linear.check_adaptable().unwrap_err().to_string().contains("needs a model with an encoder"));
    }
}
