//! `pricer quant-error`: how far a file's 8-bit inference (integer kernels,
//! as the browser runs it) is from f32 inference of the same weights; and
//! `pricer smooth`: the int8 kernels' per-channel input smoothing,
//! calibrated on products' texts in f32.

use crate::eval::{load_model, priced_products};
use anyhow::{Result, bail};
use candle_core::Device;
use candle_core::Tensor;
use candle_core::quantized::{GgmlDType, QTensor};
use pricer::Estimator;
use pricer::Product;
use pricer::estimator::MemberValues;
use pricer::model_file::ModelWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct QuantErrorArgs {
    /// A model file with 8-bit (Q8_0) encoder weights.
    #[arg(long)]
    pub model: PathBuf,
    /// Products to estimate both ways (priced items of a data file).
    #[arg(long)]
    pub data: PathBuf,
    /// At most this many products.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The items the neighbour index was built from (its train.jsonl): the f32
    /// side then embeds them in f32 too, so each side's query meets an index
    /// computed as itself (by default both sides share the file's index, which
    /// export embedded with the 8-bit kernels).
    #[arg(long)]
    pub index_items: Option<PathBuf>,
    /// Also list the N products whose two estimates differ most, with what
    /// the neighbour member saw on each side.
    #[arg(long, default_value_t = 0)]
    pub worst: usize,
}

pub fn run(args: &QuantErrorArgs) -> Result<()> {
    let int8 = load_model(&args.model)?;
    let mut f32 = f32_twin(&int8, &args.model)?;
    if let Some(path) = &args.index_items {
        f32 = with_index_of(f32, &priced_products(path)?)
            .map_err(|e| anyhow::anyhow!("--index-items {}: {e}", path.display()))?;
        println!("the f32 side's neighbour index embedded in f32 from {}", path.display());
    }
    let mut items = priced_products(&args.data)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    // Each side's encoder runs once; the figures below all read these.
    let (a, b) = (Side::of(&int8, &items)?, Side::of(&f32, &items)?);
    println!(
        "{} products: 8-bit kernels vs f32 on the same weights: {}",
        items.len(),
        Gap::between(&a.prices, &b.prices)
    );
    let indexes = neighbour_indexes(&int8, &f32)?;
    let gaps = member_gaps(&int8, indexes.as_ref(), &a, &b);
    if !gaps.members.is_empty() {
        println!(
            "where it comes from: each member's weight x its difference (with its has-details interaction), in log price (mean / max)"
        );
        for (name, mean, max) in &gaps.members {
            println!("  {name:>24}: {:.3}% / {:.3}%", 100.0 * mean, 100.0 * max);
        }
    }
    if let Some(q) = gaps.query {
        println!(
            "the neighbour member's query, 8-bit vs f32: cosine mean {:.5} / lowest {:.5}; of its {} neighbours, shared: mean {:.1} / fewest {}; largest move of a neighbour's weight {:.3} (mean {:.3})",
            q.cosine_mean, q.cosine_min, q.k, q.shared_mean, q.shared_min, q.weight_move_max, q.weight_move_mean
        );
    }
    if args.worst > 0 {
        print_worst(&items, indexes.as_ref(), &a, &b, args.worst);
    }
    Ok(())
}

/// One side's member values and estimated price of each product.
pub struct Side {
    pub values: Vec<MemberValues>,
    pub prices: Vec<f64>,
}

impl Side {
    pub fn of(model: &Estimator, items: &[Product]) -> Result<Side> {
        let values = model.member_values(items).into_iter().collect::<Result<Vec<_>, _>>()?;
        let prices = items
            .iter()
            .zip(&values)
            .map(|(p, v)| Ok(model.estimate_from(p, v.clone())?.price))
            .collect::<Result<Vec<f64>>>()?;
        Ok(Side { values, prices })
    }
}

/// Both sides' neighbour indexes.
type Indexes = (pricer::knn::Knn, pricer::knn::Knn);

/// The `n` products whose 8-bit and f32 estimates differ most: both prices,
/// and for a model with a neighbour index the member's value on each side
/// (as a price), the nearest item's cosine and how many neighbours both find.
fn print_worst(items: &[Product], indexes: Option<&Indexes>, a: &Side, b: &Side, n: usize) {
    let mut rows: Vec<(f64, usize)> = (0..items.len()).map(|i| (relative(a.prices[i], b.prices[i]), i)).collect();
    rows.sort_by(|x, y| y.0.total_cmp(&x.0));
    println!("the {} products whose estimates differ most:", n.min(rows.len()));
    println!(
        "| product | price | 8-bit | f32 | difference | knn 8-bit / f32 | nearest cosine 8-bit / f32 | shared neighbours |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---:|");
    for &(diff, i) in rows.iter().take(n) {
        let title = pricer::knn::short_title(&items[i].title).chars().take(50).collect::<String>();
        let mut knn = String::new();
        let mut cosines = String::new();
        let mut shared = String::new();
        if let (Some((ka, kb)), Some(qa), Some(qb)) = (indexes, &a.values[i].pooled, &b.values[i].pooled) {
            let (na, nb) = (ka.nearest(qa, ka.reads()), kb.nearest(qb, kb.reads()));
            let value = |k: &pricer::knn::Knn, near: &[pricer::knn::Neighbour]| {
                k.log_estimate_among(near, |_| true).unwrap_or(0.0).exp_m1()
            };
            knn = format!("${:.2} / ${:.2}", value(ka, &na), value(kb, &nb));
            let top = |near: &[pricer::knn::Neighbour]| near.first().map_or(f32::NAN, |n| n.similarity);
            cosines = format!("{:.4} / {:.4}", top(&na), top(&nb));
            let (ia, ib): (Vec<usize>, Vec<usize>) =
                (na.iter().take(ka.k).map(|n| n.index).collect(), nb.iter().take(kb.k).map(|n| n.index).collect());
            shared = ia.iter().filter(|i| ib.contains(i)).count().to_string();
        }
        println!(
            "| {title} | ${:.2} | ${:.2} | ${:.2} | {:.2}% | {knn} | {cosines} | {shared} |",
            items[i].price.unwrap_or(f64::NAN),
            a.prices[i],
            b.prices[i],
            100.0 * diff
        );
    }
}

/// How the neighbour member's input moves between the two sides.
#[derive(Debug, Clone, Copy)]
pub struct QueryShift {
    /// Cosine between the 8-bit and the f32 pooled vector of a product.
    pub cosine_mean: f64,
    pub cosine_min: f64,
    /// The neighbours that vote (the index's k).
    pub k: usize,
    /// How many of the k neighbours both sides find.
    pub shared_mean: f64,
    pub shared_min: usize,
    /// Total variation between the two sides' neighbour weights (0: the same
    /// votes, 1: disjoint): how much of the vote moved.
    pub weight_move_mean: f64,
    pub weight_move_max: f64,
}

/// What [`member_gaps`] finds: each member's share, and for a model with a
/// neighbour index how its query moved.
pub struct MemberGaps {
    /// (member, mean, max) of `|weight x (value_8bit - value_f32)|`.
    pub members: Vec<(String, f64, f64)>,
    pub query: Option<QueryShift>,
}

/// Each side's neighbour index, for a model that has one.
fn neighbour_indexes(int8: &Estimator, f32: &Estimator) -> Result<Option<Indexes>> {
    if !pricer::knn::Knn::in_file(&int8.file, "knn") {
        return Ok(None);
    }
    Ok(Some((pricer::knn::Knn::read(&int8.file)?, pricer::knn::Knn::read(&f32.file)?)))
}

/// The share of the vote `knn` gives each of its neighbours of `query`, by item.
fn vote(knn: &pricer::knn::Knn, query: &[f32]) -> BTreeMap<usize, f64> {
    let near = knn.nearest(query, knn.reads());
    near.iter().map(|n| n.index).zip(knn.vote_weights(&near)).collect()
}

/// For a stack, each member's share of the 8-bit vs f32 difference of the
/// blended log price: `|weight x (value_8bit - value_f32)|`, a member and its
/// has-details interaction summed first (they move together), mean and max
/// over the products. Members the kernels do not touch come out 0.
pub fn member_gaps(int8: &Estimator, indexes: Option<&Indexes>, a: &Side, b: &Side) -> MemberGaps {
    use pricer::estimator::Member;
    let pricer::estimator::Predictor::Stack(stack) = &int8.predictor else {
        return MemberGaps { members: Vec::new(), query: None };
    };
    let mut cosines = Vec::new();
    let mut shared = Vec::new();
    let mut moved = Vec::new();
    let base = |m: &Member| match m {
        Member::WithDetails(inner) => inner.name(),
        other => other.name(),
    };
    let mut names: Vec<String> = Vec::new();
    for m in &stack.members {
        if !names.contains(&base(m)) {
            names.push(base(m));
        }
    }
    let mut sums = vec![(0.0f64, 0.0f64); names.len()];
    let mut n = 0usize;
    for (a, b) in a.values.iter().zip(&b.values) {
        if let (Some((ka, kb)), Some(qa), Some(qb)) = (indexes, &a.pooled, &b.pooled) {
            let (na, nb) = (pricer::knn::normalized(qa), pricer::knn::normalized(qb));
            cosines.push(na.iter().zip(&nb).map(|(x, y)| (x * y) as f64).sum::<f64>());
            let (va, vb) = (vote(ka, qa), vote(kb, qb));
            shared.push(va.keys().filter(|i| vb.contains_key(i)).count());
            let keys: std::collections::BTreeSet<_> = va.keys().chain(vb.keys()).collect();
            let tv = keys.iter().map(|i| (va.get(i).unwrap_or(&0.0) - vb.get(i).unwrap_or(&0.0)).abs()).sum::<f64>();
            moved.push(tv / 2.0);
        }
        let mut signed = vec![0.0f64; names.len()];
        for (i, m) in stack.members.iter().enumerate() {
            let at = names.iter().position(|x| *x == base(m)).expect("every member's name is listed");
            signed[at] += stack.weights[i] * (a.values[i] - b.values[i]);
        }
        for (s, d) in sums.iter_mut().zip(signed) {
            s.0 += d.abs();
            s.1 = s.1.max(d.abs());
        }
        n += 1;
    }
    let query = match (indexes, cosines.len()) {
        (Some((ka, _)), m) if m > 0 => Some(QueryShift {
            cosine_mean: cosines.iter().sum::<f64>() / m as f64,
            cosine_min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
            k: ka.k.min(ka.len()),
            shared_mean: shared.iter().sum::<usize>() as f64 / m as f64,
            shared_min: shared.iter().copied().min().unwrap_or(0),
            weight_move_mean: moved.iter().sum::<f64>() / m as f64,
            weight_move_max: moved.iter().copied().fold(0.0, f64::max),
        }),
        _ => None,
    };
    let members = names.into_iter().zip(sums).map(|(name, (sum, max))| (name, sum / n.max(1) as f64, max)).collect();
    MemberGaps { members, query }
}

/// The same model with every Q8_0 tensor dequantized to F32: the encoder
/// then multiplies in f32 (candle), the rest is unchanged.
fn f32_twin(int8: &Estimator, path: &Path) -> Result<Estimator> {
    let mut w = ModelWriter::from_file(&int8.file)?;
    let mut converted = 0;
    for (name, t) in &int8.file.tensors {
        if t.dtype() == GgmlDType::Q8_0 {
            w.add_tensor(name, QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::F32)?);
            converted += 1;
        }
    }
    if converted == 0 {
        bail!("{} holds no 8-bit tensors", path.display());
    }
    Ok(Estimator::from_bytes(&w.to_bytes()?)?)
}

/// The model with its neighbour index's vectors computed by its own encoder
/// from `items`, which must be the items the index holds (same count, same
/// prices, in order). Stored as export stores them.
pub fn with_index_of(model: Estimator, items: &[Product]) -> Result<Estimator> {
    let old = pricer::knn::Knn::read(&model.file)?;
    if old.len() != items.len() {
        bail!("{} items, but the neighbour index holds {}", items.len(), old.len());
    }
    if let Some(i) = (0..items.len()).find(|&i| {
        ((items[i].price.unwrap_or(0.0).ln_1p() as f32) - old.log_price(i)).abs()
            > 1e-4 * (1.0 + old.log_price(i).abs())
    }) {
        bail!(
            "item {} is priced {:?}, the index's item {} ${:.2}: not the items it was built from",
            i + 1,
            items[i].price,
            i + 1,
            old.price(i)
        );
    }
    let (vectors, dim) = crate::export::pooled_vectors(&model, items)?;
    let log_prices = (0..old.len()).map(|i| old.log_price(i)).collect();
    let mut knn = pricer::knn::Knn::new(&vectors, log_prices, dim, old.k, old.temperature)?.with_vote(old.vote);
    knn.labels = old.labels;
    let mut w = ModelWriter::from_file(&model.file)?;
    knn.write(&mut w)?;
    Ok(Estimator::from_bytes(&w.to_bytes()?)?)
}

/// Relative price differences of the 8-bit kernels from f32 compute.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub mean: f64,
    pub p99: f64,
    pub max: f64,
}

impl Gap {
    /// The gap of `prices` from `reference`, item by item.
    pub fn between(prices: &[f64], reference: &[f64]) -> Gap {
        let mut diffs: Vec<f64> = prices.iter().zip(reference).map(|(a, b)| relative(*a, *b)).collect();
        diffs.sort_by(f64::total_cmp);
        let n = diffs.len();
        let at = |q: f64| diffs.get(((n as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
        Gap { mean: diffs.iter().sum::<f64>() / n.max(1) as f64, p99: at(0.99), max: at(1.0) }
    }
}

/// `|price - reference|` relative to the reference.
fn relative(price: f64, reference: f64) -> f64 {
    (price - reference).abs() / reference.abs().max(1e-9)
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mean {:.3}%, p99 {:.3}%, max {:.3}%", 100.0 * self.mean, 100.0 * self.p99, 100.0 * self.max)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct SmoothArgs {
    /// A model file with 8-bit (Q8_0) encoder weights.
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration products (a validation split: their texts, prices unused).
    #[arg(long)]
    pub data: PathBuf,
    /// The model file to write: the same weights with smoothing factors added.
    #[arg(long)]
    pub out: PathBuf,
    /// Migration strength: 0 leaves the inputs as they are, 1 moves all of a
    /// channel's range into the weights.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Calibrate on at most this many products (spread evenly over the file).
    #[arg(long, default_value_t = 512)]
    pub limit: usize,
    /// Take the smoothing out instead (the kernels then quantize inputs as they come).
    #[arg(long)]
    pub remove: bool,
}

pub fn run_smooth(args: &SmoothArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha {}: must lie in 0..=1", args.alpha);
    }
    let int8 = load_model(&args.model)?;
    let f32 = f32_twin(&int8, &args.model)?;
    let items = crate::data::spread(&priced_products(&args.data)?, args.limit);
    if items.is_empty() {
        bail!("{}: no priced product to calibrate on", args.data.display());
    }
    // The file without any smoothing, then (unless removing it) the new factors.
    let mut w = ModelWriter::new(int8.file.kind()?);
    for (k, v) in &int8.file.metadata {
        if k != pricer::model_file::keys::CRC && k != SMOOTH_ALPHA && k != SMOOTH_TEXTS {
            w.set(k, v.clone());
        }
    }
    for (name, t) in &int8.file.tensors {
        if !name.ends_with(pricer::bert::SMOOTHING_SUFFIX) {
            w.add_tensor(name, pricer::model_file::copy_tensor(t)?);
        }
    }
    let factors = if args.remove { Vec::new() } else { calibrate(&f32, &items, args.alpha)? };
    for (name, s) in &factors {
        w.add_f32(&pricer::bert::smoothing_name(name), s)?;
    }
    if !args.remove {
        w.set_f64(SMOOTH_ALPHA, args.alpha).set_u32(SMOOTH_TEXTS, items.len() as u32);
    }
    let bytes = w.to_bytes()?;
    let smoothed = Estimator::from_bytes(&bytes)?;
    let reference = Side::of(&f32, &items)?.prices;
    println!(
        "{} calibration products, {}: 8-bit vs f32 before {}; after {}",
        items.len(),
        if args.remove { "smoothing removed".to_string() } else { format!("alpha {}", args.alpha) },
        Gap::between(&Side::of(&int8, &items)?.prices, &reference),
        Gap::between(&Side::of(&smoothed, &items)?.prices, &reference)
    );
    crate::data::write_atomic(&args.out, &bytes)?;
    println!("wrote {} ({} linear layers smoothed)", args.out.display(), factors.len());
    Ok(())
}

/// Metadata: the calibration's migration strength and number of texts.
pub const SMOOTH_ALPHA: &str = "pricer.quant.smooth_alpha";
pub const SMOOTH_TEXTS: &str = "pricer.quant.smooth_texts";

/// Per linear layer of the encoder, the factor of each input channel
/// (SmoothQuant): `peak(x_j)^alpha / peak(W_.j)^(1 - alpha)`, the input peaks
/// over the products' tokens in f32 compute, the weight peaks over every
/// output (query, key and value together: they share one quantized input).
pub fn calibrate(f32: &Estimator, items: &[Product], alpha: f64) -> Result<Vec<(String, Vec<f32>)>> {
    let n = f32.neural().ok_or_else(|| anyhow::anyhow!("the model has no encoder to smooth"))?;
    let tok = f32.prep.tokenizer.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no tokenizer"))?;
    let max_len = (f32.prep.max_tokens + 2).min(n.model.encoder.config.max_position_embeddings);
    let mut peaks: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for p in items {
        let Ok(text) = f32.prepare(p) else { continue };
        let t = tok.encode(&text.text, max_len)?;
        let ids = Tensor::new(t.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        for (name, v) in n.model.encoder.linear_input_peaks(&ids)? {
            let e = peaks.entry(name).or_insert_with(|| vec![0.0; v.len()]);
            e.iter_mut().zip(&v).for_each(|(a, b)| *a = a.max(*b));
        }
    }
    // Weight peaks per input channel, pooled over layers that share an input.
    let shared =
        |name: &str| name.rsplit_once('.').filter(|(p, _)| p.ends_with("attention.self")).map(|(p, _)| p.to_string());
    let mut weight_peaks: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for name in peaks.keys() {
        let w = f32.file.tensor(&format!("{name}.weight"))?;
        let (_, d_in) = w.shape().dims2()?;
        let w = w.dequantize(&Device::Cpu)?.abs()?.max(0)?.to_vec1::<f32>()?;
        let key = shared(name).unwrap_or_else(|| name.clone());
        let e = weight_peaks.entry(key).or_insert_with(|| vec![0.0; d_in]);
        e.iter_mut().zip(&w).for_each(|(a, b)| *a = a.max(*b));
    }
    Ok(peaks
        .into_iter()
        .map(|(name, x)| {
            let w = &weight_peaks[&shared(&name).unwrap_or_else(|| name.clone())];
            let s = x
                .iter()
                .zip(w)
                .map(|(&x, &w)| {
                    if x > 0.0 && w > 0.0 {
                        ((x as f64).powf(alpha) / (w as f64).powf(1.0 - alpha)).clamp(1e-3, 1e3) as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            (name, s)
        })
        .collect())
}
