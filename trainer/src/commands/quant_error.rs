//! `pricer lab quant-error`: how far a file's 8-bit inference (integer
//! kernels, as the browser runs it) is from f32 inference of the same
//! weights, per member, and the products that differ most.

use crate::data::priced_products;
use crate::model::calibrate::{Gap, Side, f32_twin, relative, with_index_of};
use crate::model::load_model;
use anyhow::Result;
use pricer::Estimator;
use pricer::Product;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
        f32 = with_index_of(f32, &priced_products(path, false)?.0)
            .map_err(|e| anyhow::anyhow!("--index-items {}: {e}", path.display()))?;
        println!("the f32 side's neighbour index embedded in f32 from {}", path.display());
    }
    let mut items = priced_products(&args.data, false)?.0;
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
