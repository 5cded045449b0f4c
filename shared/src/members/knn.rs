//! Comparable products: the training items nearest to a product in the
//! encoder's embedding space, and the price they suggest (the course's week 8
//! idea, as a member of the stack).

use super::screen::{Screen, survivors};
use crate::Error;
use crate::model_file::{ModelFile, ModelWriter};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Metadata keys and tensor names of the training items' neighbour index
/// (an index stored under another name: [`IndexKeys`]).
pub mod keys {
    pub const K: &str = "pricer.knn.k";
    pub const TEMPERATURE: &str = "pricer.knn.temperature";
    /// How the neighbours vote ([`Vote`]); files without it vote `softmax`.
    pub const VOTE: &str = "pricer.knn.vote";
    pub const VECTORS: &str = "knn.vectors";
    pub const LOG_PRICES: &str = "knn.log_prices";
    /// The indexed items' titles, one per line (comparables to show).
    pub const TITLES: &str = "pricer.knn.titles";
    /// The distinct category names of the indexed items.
    pub const CATEGORY_NAMES: &str = "pricer.knn.category_names";
    /// Per item: 1 + its category's position in the names, 0 for none.
    pub const CATEGORIES: &str = "knn.categories";
}

/// The keys of an index stored under a name: `knn` for the training items
/// (the names in [`keys`]), `own` for a shop's own items (`pricer adapt`).
#[derive(Debug, Clone)]
pub struct IndexKeys {
    pub k: String,
    pub temperature: String,
    pub vote: String,
    pub vectors: String,
    pub log_prices: String,
    pub titles: String,
    pub category_names: String,
    pub categories: String,
}

impl IndexKeys {
    pub fn named(name: &str) -> IndexKeys {
        IndexKeys {
            k: format!("pricer.{name}.k"),
            temperature: format!("pricer.{name}.temperature"),
            vote: format!("pricer.{name}.vote"),
            vectors: format!("{name}.vectors"),
            log_prices: format!("{name}.log_prices"),
            titles: format!("pricer.{name}.titles"),
            category_names: format!("pricer.{name}.category_names"),
            categories: format!("{name}.categories"),
        }
    }
}

/// Longest title kept in the index, in characters: enough to recognise a
/// product, and a bound on what the file stores per item.
pub const MAX_TITLE_CHARS: usize = 100;

/// What a person sees of an indexed item: its title and category.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemLabels {
    pub titles: Vec<String>,
    pub category_names: Vec<String>,
    /// Per item: 1 + index into `category_names`, 0 for none.
    pub categories: Vec<u16>,
}

impl ItemLabels {
    /// Labels for items given as (title, category): titles on one line, cut
    /// to [`MAX_TITLE_CHARS`] at a word boundary (with "…").
    pub fn new<'a>(items: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut labels = ItemLabels::default();
        for (title, category) in items {
            labels.titles.push(short_title(title));
            let c = match category {
                None => 0,
                Some(c) => match labels.category_names.iter().position(|n| n == c) {
                    Some(i) => i + 1,
                    None => {
                        labels.category_names.push(c.to_string());
                        labels.category_names.len()
                    }
                },
            };
            labels.categories.push(c.min(u16::MAX as usize) as u16);
        }
        labels
    }

    pub fn category(&self, item: usize) -> Option<&str> {
        let c = *self.categories.get(item)? as usize;
        self.category_names.get(c.checked_sub(1)?).map(String::as_str)
    }
}

/// A title as the index keeps it: whitespace and control characters as
/// single spaces, at most [`MAX_TITLE_CHARS`] characters.
pub fn short_title(title: &str) -> String {
    let one_line: String = title
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.chars().count() <= MAX_TITLE_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_TITLE_CHARS - 1).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > MAX_TITLE_CHARS / 2 => cut[..i].to_string(),
        _ => cut,
    };
    format!("{cut}…")
}

/// How the k nearest items share the vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vote {
    /// A softmax of their similarities. An item entering or leaving the k
    /// nearest moves the estimate by a step: its whole weight comes or goes.
    #[default]
    Softmax,
    /// The softmax weight less that of the (k+1)-th nearest item, so the
    /// k-th item's weight fades to 0 as the next one catches up with it: the
    /// estimate moves continuously with the query, and a query nudged by
    /// 8-bit arithmetic no longer swaps whole votes at the boundary.
    Fade,
}

impl Vote {
    pub fn name(self) -> &'static str {
        match self {
            Vote::Softmax => "softmax",
            Vote::Fade => "fade",
        }
    }

    /// A vote by its name; the error names what was given and what exists.
    pub fn parse(name: &str) -> Result<Vote, String> {
        match name {
            "softmax" => Ok(Vote::Softmax),
            "fade" => Ok(Vote::Fade),
            other => Err(format!("unknown neighbour vote {other:?} (softmax or fade)")),
        }
    }
}

/// Unit-length embeddings of training items with their log(1 + price).
#[derive(Debug, Clone)]
pub struct Knn {
    /// `n x dim`, row-major, each row of unit length.
    vectors: Vec<f32>,
    log_prices: Vec<f32>,
    dim: usize,
    /// Neighbours that vote.
    pub k: usize,
    /// Softmax temperature over cosine similarities: small values trust the
    /// closest neighbours most.
    pub temperature: f32,
    /// How the k nearest share the vote.
    pub vote: Vote,
    /// Titles and categories of the items (files written before comparables
    /// were shown have none).
    pub labels: Option<Box<ItemLabels>>,
    /// The rows in 8-bit codes, for a scan's first pass (`None` where a
    /// value is not finite: every row is then compared exactly).
    screen: Option<Box<Screen>>,
}

/// One neighbour: its row in the index and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    pub similarity: f32,
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() }
}

/// Dot product in eight independent lanes, so the compiler can keep them in
/// SIMD registers (a single running sum forces one addition after another).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Rows per part of a scan shared by threads ([`Knn::nearest`]).
const SCAN_PART: usize = 1024;

/// Puts `n` into `best` (most similar first, at most `k`) if it beats the
/// last; among equal similarities the one offered first stays ahead.
fn keep_if_among_best(best: &mut Vec<Neighbour>, n: Neighbour, k: usize) {
    if best.len() < k || n.similarity > best[best.len() - 1].similarity {
        let at = best.partition_point(|b| b.similarity >= n.similarity);
        best.insert(at, n);
        best.truncate(k);
    }
}

impl Knn {
    /// An index of `vectors` (`log_prices.len()` rows of `dim`), normalised here.
    pub fn new(vectors: &[f32], log_prices: Vec<f32>, dim: usize, k: usize, temperature: f32) -> Result<Self, Error> {
        if dim == 0 || vectors.len() != log_prices.len() * dim {
            return Err(Error::Model(format!(
                "{} values are not {} vectors of {dim}",
                vectors.len(),
                log_prices.len()
            )));
        }
        if k == 0 || log_prices.is_empty() || temperature <= 0.0 || temperature.is_nan() {
            return Err(Error::Model(format!(
                "a neighbour index needs items, k >= 1 and a positive temperature (k {k}, temperature {temperature})"
            )));
        }
        let vectors: Vec<f32> = vectors.chunks(dim).flat_map(normalized).collect();
        let screen = Screen::new(&vectors, dim).map(Box::new);
        Ok(Self { vectors, log_prices, dim, k, temperature, vote: Vote::Softmax, labels: None, screen })
    }

    /// The index with each item's title and category (in the vectors' order).
    pub fn with_labels(mut self, labels: ItemLabels) -> Result<Self, Error> {
        if labels.titles.len() != self.len() || labels.categories.len() != self.len() {
            return Err(Error::Model(format!(
                "{} titles and {} categories for {} indexed items",
                labels.titles.len(),
                labels.categories.len(),
                self.len()
            )));
        }
        self.labels = Some(Box::new(labels));
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.log_prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log_prices.is_empty()
    }

    pub fn log_price(&self, index: usize) -> f32 {
        self.log_prices[index]
    }

    /// The mean log(1 + price) of the indexed items.
    pub fn mean_log_price(&self) -> f64 {
        self.log_prices.iter().map(|x| *x as f64).sum::<f64>() / self.len().max(1) as f64
    }

    /// The index with another vote.
    pub fn with_vote(mut self, vote: Vote) -> Self {
        self.vote = vote;
        self
    }

    /// How many of the nearest items a vote reads: the k voters, and for
    /// [`Vote::Fade`] the item after them.
    pub fn reads(&self) -> usize {
        match self.vote {
            Vote::Softmax => self.k,
            Vote::Fade => self.k.saturating_add(1),
        }
    }

    /// The weighted log price of the first `k` of `near` (most similar
    /// first) that `allowed` lets vote: what [`Knn::log_estimate`] gives when
    /// only those items are indexed. `near` should hold [`Knn::reads`] of
    /// them. `None` when none is allowed.
    pub fn log_estimate_among(&self, near: &[Neighbour], allowed: impl Fn(usize) -> bool) -> Option<f64> {
        let read: Vec<Neighbour> = near.iter().filter(|n| allowed(n.index)).take(self.reads()).copied().collect();
        if read.is_empty() {
            return None;
        }
        let weights = self.vote_weights(&read);
        Some(read.iter().zip(weights).map(|(n, w)| w * self.log_prices[n.index] as f64).sum())
    }

    /// The share of the vote (summing to 1) of each of the first `k` of
    /// `near` (most similar first): a softmax of the similarities at the
    /// index's temperature; for [`Vote::Fade`] less the weight of `near[k]`
    /// when there is one (all equal: an even vote).
    pub fn vote_weights(&self, near: &[Neighbour]) -> Vec<f64> {
        let Some(top) = near.first().map(|n| n.similarity) else { return Vec::new() };
        let weight = |n: &Neighbour| (((n.similarity - top) / self.temperature) as f64).exp();
        let floor = match self.vote {
            Vote::Fade => near.get(self.k).map_or(0.0, weight),
            Vote::Softmax => 0.0,
        };
        let voters = &near[..near.len().min(self.k)];
        let w: Vec<f64> = voters.iter().map(|n| (weight(n) - floor).max(0.0)).collect();
        let total = w.iter().sum::<f64>();
        if total > 0.0 {
            w.into_iter().map(|w| w / total).collect()
        } else {
            vec![1.0 / voters.len() as f64; voters.len()]
        }
    }

    /// The `k` items most similar to `query` (any length; it is normalised),
    /// most similar first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<Neighbour> {
        if k == 0 {
            return Vec::new();
        }
        let q = normalized(query);
        let rows = self.len();
        let threads = crate::encoder::compute_threads() >= 2 && rows > SCAN_PART;
        let parts = || -> Vec<std::ops::Range<usize>> {
            (0..rows).step_by(SCAN_PART).map(|s| s..(s + SCAN_PART).min(rows)).collect()
        };
        if let Some((screen, coded)) = self.screen.as_ref().and_then(|s| Some((s, s.query(&q)?))) {
            // The coarse pass over every row (on the pool's threads), then
            // the exact product for the rows that may be among the k best
            // of the whole index.
            let ends: Vec<(f64, f64)> = if threads {
                crate::encoder::on_threads(parts(), |r| screen.ends(&coded, r)).concat()
            } else {
                screen.ends(&coded, 0..rows)
            };
            // One end pair per row, in row order (a part lost would shift them: then the full scan).
            if ends.len() == rows {
                return self.nearest_of(&q, survivors(&ends, k), k);
            }
        }
        if !threads {
            return self.scan_all(&q, 0..rows, k);
        }
        // Without a screen, every row's exact product: bound by memory reads
        // (13.5k items of 384 values: 20 MB per query), so its parts go to
        // the pool's threads. Each part keeps its own k best; offered again
        // in index order to the same rule, they leave what one scan leaves
        // (every similarity is computed alike in any part).
        let mut found: Vec<Neighbour> =
            crate::encoder::on_threads(parts(), |r| self.scan_all(&q, r, k)).into_iter().flatten().collect();
        found.sort_unstable_by_key(|n| n.index);
        let mut best = Vec::with_capacity(k.min(found.len()) + 1);
        found.into_iter().for_each(|n| keep_if_among_best(&mut best, n, k));
        best
    }

    /// The `k` best of the rows `among` for a normalised query, most similar
    /// first, screened as [`Knn::nearest`] screens the whole index: tests
    /// compare it with [`Knn::scan_all`] on parts of an index.
    #[cfg(test)]
    fn nearest_among(&self, q: &[f32], among: std::ops::Range<usize>, k: usize) -> Vec<Neighbour> {
        match self.screen.as_ref().and_then(|s| s.candidates(q, among.clone(), k)) {
            Some(rows) => self.nearest_of(q, rows, k),
            None => self.scan_all(q, among, k),
        }
    }

    /// The `k` best of `rows` (in index order), each compared exactly.
    fn nearest_of(&self, q: &[f32], rows: Vec<usize>, k: usize) -> Vec<Neighbour> {
        let mut best: Vec<Neighbour> = Vec::with_capacity(k.min(rows.len()) + 1);
        for index in rows {
            let row = &self.vectors[index * self.dim..(index + 1) * self.dim];
            keep_if_among_best(&mut best, Neighbour { index, similarity: dot(row, q) }, k);
        }
        best
    }

    /// The `k` best of the rows `among`, each compared exactly.
    fn scan_all(&self, q: &[f32], among: std::ops::Range<usize>, k: usize) -> Vec<Neighbour> {
        // `k` may come from a file: never reserve more than the index holds.
        let mut best: Vec<Neighbour> = Vec::with_capacity(k.min(among.len()) + 1);
        let rows = self.vectors[among.start * self.dim..among.end * self.dim].chunks_exact(self.dim);
        for (index, row) in among.zip(rows) {
            keep_if_among_best(&mut best, Neighbour { index, similarity: dot(row, q) }, k);
        }
        best
    }

    /// The neighbours' log prices, weighted by the index's [`Vote`].
    pub fn log_estimate(&self, query: &[f32]) -> f64 {
        self.log_estimate_among(&self.nearest(query, self.reads()), |_| true).unwrap_or(0.0)
    }

    /// Stores the index: vectors as Q4_0 when their width splits into blocks
    /// (an eighth of f32's size: the validation metrics of the neighbour
    /// member matched Q8_0's and f32's to the cent, docs/benchmarks.md), else f16.
    pub fn write(&self, w: &mut ModelWriter) -> Result<(), Error> {
        self.write_as(w, "knn")
    }

    /// Stores the index under `name` ([`IndexKeys::named`]).
    pub fn write_as(&self, w: &mut ModelWriter, name: &str) -> Result<(), Error> {
        let keys = IndexKeys::named(name);
        let t = Tensor::from_slice(&self.vectors, (self.len(), self.dim), &Device::Cpu)?;
        let dtype =
            if self.dim.is_multiple_of(GgmlDType::Q4_0.block_size()) { GgmlDType::Q4_0 } else { GgmlDType::F16 };
        w.add_tensor(&keys.vectors, QTensor::quantize(&t, dtype)?);
        w.add_f32(&keys.log_prices, &self.log_prices)?;
        w.set_u32(&keys.k, self.k as u32).set_f64(&keys.temperature, self.temperature as f64);
        // Older readers know only the softmax: its files stay as they were.
        if self.vote != Vote::Softmax {
            w.set_str(&keys.vote, self.vote.name());
        }
        if let Some(l) = &self.labels {
            w.set_str(&keys.titles, &l.titles.join("\n")).set_strs(&keys.category_names, &l.category_names);
            w.add_f32(&keys.categories, &l.categories.iter().map(|c| *c as f32).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    pub fn read(f: &ModelFile) -> Result<Self, Error> {
        Self::read_as(f, "knn")
    }

    /// Whether the file holds an index under `name`.
    pub fn in_file(f: &ModelFile, name: &str) -> bool {
        f.tensors.contains_key(&IndexKeys::named(name).vectors)
    }

    /// Reads the index stored under `name` ([`IndexKeys::named`]).
    pub fn read_as(f: &ModelFile, name: &str) -> Result<Self, Error> {
        let keys = IndexKeys::named(name);
        let t = f.tensor(&keys.vectors)?;
        let dims = t.shape().dims().to_vec();
        let [n, dim] = dims[..] else {
            return Err(Error::ModelFile(format!("{} has shape {dims:?}, not [items, width]", keys.vectors)));
        };
        let log_prices = f.tensor_f32(&keys.log_prices)?;
        if log_prices.len() != n {
            return Err(Error::ModelFile(format!(
                "{} vectors but {} prices in the neighbour index",
                n,
                log_prices.len()
            )));
        }
        let vectors = f.tensor_f32(&keys.vectors)?;
        let k = f.u32(&keys.k)? as usize;
        let temperature = f.f64(&keys.temperature)? as f32;
        let vote = f.opt_str(&keys.vote).map(Vote::parse).transpose().map_err(Error::ModelFile)?.unwrap_or_default();
        let knn = Knn::new(&vectors, log_prices, dim, k, temperature)
            .map_err(|e| Error::ModelFile(e.to_string()))?
            .with_vote(vote);
        let Some(text) = f.opt_str(&keys.titles) else { return Ok(knn) };
        let titles: Vec<String> = if n == 0 { vec![] } else { text.split('\n').map(str::to_string).collect() };
        let category_names = f.strs(&keys.category_names)?;
        let categories: Vec<u16> = f
            .tensor_f32(&keys.categories)?
            .into_iter()
            .map(|c| {
                let c = c as usize;
                if c <= category_names.len() { Ok(c as u16) } else { Err(c) }
            })
            .collect::<Result<_, _>>()
            .map_err(|c| {
                Error::ModelFile(format!("item category {c} is not one of the {} names", category_names.len()))
            })?;
        knn.with_labels(ItemLabels { titles, category_names, categories })
            .map_err(|e| Error::ModelFile(format!("neighbour index: {e}")))
    }

    /// The neighbours' prices in dollars, each with its similarity.
    pub fn price(&self, index: usize) -> f64 {
        (self.log_prices[index] as f64).exp_m1().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Knn {
        // Four items on the unit circle (scaled, to check normalisation).
        let v = [2.0, 0.0, 0.0, 3.0, -1.0, 0.0, 0.7, 0.7];
        Knn::new(&v, vec![1.0, 2.0, 3.0, 4.0], 2, 2, 0.1).unwrap()
    }

    #[test]
    fn nearest_are_ranked_by_cosine() {
        let knn = index();
        let near = knn.nearest(&[1.0, 0.1], 3);
        assert_eq!(near.iter().map(|n| n.index).collect::<Vec<_>>(), vec![0, 3, 1]);
        assert!((near[0].similarity - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert_eq!(knn.nearest(&[1.0, 0.0], 10).len(), 4);
        // A k read from a damaged file reserves no more than the index (found by tests/fuzz.rs).
        assert_eq!(knn.nearest(&[1.0, 0.0], usize::MAX).len(), 4);
    }

    #[test]
    fn the_screened_scan_finds_what_the_full_scan_finds_bit_for_bit() {
        // Rows as an encoder's: 384 wide, in clusters (many near ties), some
        // differing from another only in the last bits, a zero row, a row
        // that puts its length in one value (the coarsest codes).
        let (n, dim) = (3000, 384);
        let mut seed = 11u64;
        let mut uniform = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..dim).map(|_| uniform()).collect()).collect();
        let mut v: Vec<f32> = Vec::with_capacity(n * dim);
        for i in 0..n {
            let row: Vec<f32> = match i % 50 {
                7 => vec![0.0; dim],
                13 => (0..dim).map(|j| if j == 5 { 3.0 } else { 1e-3 * uniform() }).collect(),
                // The previous row, its values a few bits apart.
                21 | 22 => v[(i - 1) * dim..i * dim].iter().map(|x| f32::from_bits(x.to_bits() ^ 1)).collect(),
                _ => centres[i % 20].iter().map(|c| c + 0.05 * uniform()).collect(),
            };
            v.extend(row);
        }
        let knn = Knn::new(&v, vec![0.0; n], dim, 5, 0.1).unwrap();
        let bits = |near: Vec<Neighbour>| -> Vec<(usize, u32)> {
            near.iter().map(|n| (n.index, n.similarity.to_bits())).collect()
        };
        let mut queries: Vec<Vec<f32>> =
            (0..20).map(|c| centres[c].iter().map(|x| x + 0.02 * uniform()).collect()).collect();
        queries.push(v[21 * dim..22 * dim].to_vec()); // a row's own values: exact ties at the top
        queries.push((0..dim).map(|_| uniform()).collect());
        queries.push(vec![0.0; dim]);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut kept = 0;
        for query in &queries {
            let q = normalized(query);
            for k in [1, 6, 40, n] {
                assert_eq!(bits(knn.nearest_among(&q, 0..n, k)), bits(knn.scan_all(&q, 0..n, k)), "k {k}");
                assert_eq!(bits(knn.nearest_among(&q, 1000..2000, k)), bits(knn.scan_all(&q, 1000..2000, k)));
                // The whole index screened at once, its coarse pass in parts on threads.
                assert_eq!(bits(pool.install(|| knn.nearest(query, k))), bits(knn.scan_all(&q, 0..n, k)), "k {k}");
            }
            kept += knn.screen.as_ref().unwrap().candidates(&q, 0..n, 6).unwrap().len();
        }
        // The point of it: most rows never get the exact product.
        assert!(kept < queries.len() * n / 4, "{kept} rows compared exactly for {} queries", queries.len());
        // A query that is not finite, or an index that is not, is scanned in full.
        let nan = [vec![f32::NAN], vec![0.5; dim - 1]].concat();
        assert_eq!(bits(knn.nearest_among(&nan, 0..n, 6)), bits(knn.scan_all(&nan, 0..n, 6)));
        assert!(knn.screen.as_ref().unwrap().candidates(&nan, 0..n, 6).is_none());
        let mut bad = v.clone();
        bad[3] = f32::INFINITY;
        assert!(Knn::new(&bad, vec![0.0; n], dim, 5, 0.1).unwrap().screen.is_none());
    }

    #[test]
    fn a_scan_shared_by_threads_keeps_what_one_scan_keeps() {
        // Rows drawn from five directions, so that many similarities tie.
        let dirs = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.3, 0.3, 0.3], [-1.0, 0.2, 0.0], [0.0, 0.0, -2.0]];
        let n = 5 * SCAN_PART + 37;
        let mut seed = 7u32;
        let v: Vec<f32> = (0..n)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                dirs[(seed >> 16) as usize % dirs.len()]
            })
            .collect();
        let knn = Knn::new(&v, vec![0.0; n], 3, 5, 0.1).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for query in [[1.0, 0.1, 0.4], [0.0, 0.0, 0.0], [f32::NAN, 1.0, 0.0], [-0.5, 0.1, -0.2]] {
            for k in [1, 5, 300, SCAN_PART + 1, n, usize::MAX] {
                let bits = |near: Vec<Neighbour>| -> Vec<(usize, u32)> {
                    near.iter().map(|n| (n.index, n.similarity.to_bits())).collect()
                };
                let one_scan = bits(knn.scan_all(&normalized(&query), 0..n, k));
                let shared = bits(pool.install(|| knn.nearest(&query, k)));
                assert_eq!(shared, one_scan, "query {query:?}, k {k}");
            }
        }
        assert!(knn.nearest(&[1.0, 0.0, 0.0], 0).is_empty());
    }

    #[test]
    fn estimate_is_a_similarity_weighted_mean_of_the_k_nearest() {
        let knn = index();
        // Query along item 3 (0.7, 0.7): its neighbours 3 (cos 1) and 0 (cos 0.707).
        let got = knn.log_estimate(&[1.0, 1.0]);
        let w0 = ((0.5f64.sqrt() - 1.0) / 0.1).exp();
        let want = (4.0 + w0 * 1.0) / (1.0 + w0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // A very low temperature gives the nearest item's price.
        let sharp = Knn { temperature: 1e-4, ..index() };
        assert!((sharp.log_estimate(&[1.0, 1.0]) - 4.0).abs() < 1e-6);
    }

    /// `n` items spread over a quarter circle, priced 0, 1, 2, ...
    fn arc(n: usize, k: usize, vote: Vote) -> Knn {
        let v: Vec<f32> = (0..n)
            .flat_map(|i| {
                let (s, c) = (i as f32 / n as f32 * std::f32::consts::FRAC_PI_2).sin_cos();
                [s, c]
            })
            .collect();
        Knn::new(&v, (0..n).map(|i| i as f32).collect(), 2, k, 0.05).unwrap().with_vote(vote)
    }

    /// The largest change of the estimate between two queries a small step apart,
    /// sweeping over the arc (the k nearest change many times on the way).
    fn largest_step(knn: &Knn) -> f64 {
        let estimate = |a: f32| knn.log_estimate(&[a.sin(), a.cos()]);
        let steps = 4000;
        (0..steps)
            .map(|i| {
                let a = i as f32 / steps as f32 * std::f32::consts::FRAC_PI_2;
                (estimate(a + std::f32::consts::FRAC_PI_2 / steps as f32) - estimate(a)).abs()
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_fading_vote_moves_continuously_where_the_softmax_jumps() {
        let (soft, fade) = (arc(40, 3, Vote::Softmax), arc(40, 3, Vote::Fade));
        // Both follow the query: at item 20, both say about 20.
        let item20 = [soft.vectors[40], soft.vectors[41]];
        let (s20, f20) = (soft.log_estimate(&item20), fade.log_estimate(&item20));
        assert!((s20 - 20.0).abs() < 1.0 && (f20 - 20.0).abs() < 1.0, "{s20} {f20}");
        // A step of 1/4000 of the arc swaps the third neighbour now and then: the
        // softmax jumps by its weight times a price a few apart (about 1), the
        // fading vote by about as much as any step moves it (the estimate climbs
        // 40 over 4000 steps: 0.01 a step on average).
        let (s, f) = (largest_step(&soft), largest_step(&fade));
        assert!(s > 0.5, "softmax's largest step {s}");
        assert!(f < 0.05, "fading vote's largest step {f} (softmax {s})");
    }

    #[test]
    fn a_fading_vote_needs_the_next_item_and_keeps_its_weights_sound() {
        // With no item after the k-th, there is nothing to fade to: the softmax's vote.
        let (soft, fade) = (arc(3, 3, Vote::Softmax), arc(3, 3, Vote::Fade));
        assert_eq!(fade.reads(), 4);
        let q = [0.3f32, 0.9];
        assert!((soft.log_estimate(&q) - fade.log_estimate(&q)).abs() < 1e-12);
        // Equal similarities: the (k+1)-th weighs as much as the rest, so an even vote.
        let same = Knn::new(&[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], vec![1.0, 2.0, 6.0], 2, 2, 0.05).unwrap();
        let near = same.nearest(&[1.0, 0.0], 3);
        assert_eq!(same.with_vote(Vote::Fade).vote_weights(&near), vec![0.5, 0.5]);
        // Weights sum to 1 and the k-th weighs less under the fading vote.
        let fade = arc(40, 5, Vote::Fade);
        let near = fade.nearest(&[0.6, 0.8], fade.reads());
        let (wf, ws) = (fade.vote_weights(&near), arc(40, 5, Vote::Softmax).vote_weights(&near));
        assert_eq!(wf.len(), 5);
        assert!((wf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(wf[4] < ws[4] && wf[0] > ws[0], "{wf:?} vs {ws:?}");
    }

    #[test]
    fn the_vote_round_trips_and_an_unknown_one_is_refused() {
        let fade = arc(40, 3, Vote::Fade);
        let mut w = ModelWriter::new("test");
        fade.write(&mut w).unwrap();
        let f = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(f.opt_str(keys::VOTE), Some("fade"));
        assert_eq!(Knn::read(&f).unwrap().vote, Vote::Fade);
        // The softmax writes no key, so files read by older pages stay as they were.
        let mut w = ModelWriter::new("test");
        arc(40, 3, Vote::Softmax).write(&mut w).unwrap();
        let f = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!((f.opt_str(keys::VOTE), Knn::read(&f).unwrap().vote), (None, Vote::Softmax));
        let mut w = ModelWriter::from_file(&f).unwrap();
        w.set_str(keys::VOTE, "majority");
        let f = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        let err = Knn::read(&f).unwrap_err().to_string();
        assert!(err.contains("unknown neighbour vote \"majority\""), "{err}");
    }

    #[test]
    fn bad_shapes_and_settings_are_refused() {
        assert!(Knn::new(&[1.0, 2.0, 3.0], vec![1.0, 2.0], 2, 1, 0.1).is_err());
        assert!(Knn::new(&[1.0, 2.0], vec![1.0], 2, 0, 0.1).is_err());
        assert!(Knn::new(&[1.0, 2.0], vec![1.0], 2, 1, 0.0).is_err());
        assert!(Knn::new(&[], vec![], 2, 1, 0.1).is_err());
    }

    #[test]
    fn round_trip_through_a_model_file() {
        let dim = 64;
        let vectors: Vec<f32> = (0..10 * dim).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let knn = Knn::new(&vectors, (0..10).map(|i| i as f32).collect(), dim, 3, 0.05).unwrap();
        let mut w = ModelWriter::new("test");
        knn.write(&mut w).unwrap();
        let f = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        let back = Knn::read(&f).unwrap();
        assert_eq!((back.len(), back.k, back.temperature), (10, 3, 0.05));
        let q = &vectors[2 * dim..3 * dim];
        assert_eq!(back.nearest(q, 1)[0].index, 2);
        assert!((back.log_estimate(q) - knn.log_estimate(q)).abs() < 0.1);
    }

    #[test]
    fn titles_and_categories_round_trip_and_bad_ones_are_refused() {
        let items =
            [("Red <b>kettle</b>", Some("Appliances")), ("Blue\nmug", None), ("Green kettle", Some("Appliances"))];
        let labels = ItemLabels::new(items.iter().map(|(t, c)| (*t, *c)));
        assert_eq!(labels.titles, vec!["Red <b>kettle</b>", "Blue mug", "Green kettle"]);
        assert_eq!(
            (labels.category(0), labels.category(1), labels.category(2)),
            (Some("Appliances"), None, Some("Appliances"))
        );
        let v = [1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
        let knn = Knn::new(&v, vec![1.0, 2.0, 3.0], 2, 2, 0.1).unwrap();
        assert!(knn.clone().with_labels(ItemLabels::new([("one", None)])).is_err(), "one title for three items");
        let knn = knn.with_labels(labels.clone()).unwrap();
        let mut w = ModelWriter::new("test");
        knn.write(&mut w).unwrap();
        let back = Knn::read(&ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap()).unwrap();
        assert_eq!(back.labels.as_deref(), Some(&labels));
        // A category number past the names is a damaged file, not a panic later.
        let mut w = ModelWriter::new("test");
        knn.write(&mut w).unwrap();
        w.add_f32(keys::CATEGORIES, &[1.0, 0.0, 9.0]).unwrap();
        let err = Knn::read(&ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("category 9"), "{err}");
        // So is a title count that does not match the index.
        let mut w = ModelWriter::new("test");
        knn.write(&mut w).unwrap();
        w.set_str(keys::TITLES, "only one");
        let err = Knn::read(&ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("1 titles"), "{err}");
    }
}
