//! `pricer comparables`: how useful a model's comparable products are, per
//! test split: how often the true price lies within the comparables' price
//! range, how far their similarity-weighted median price is from the truth,
//! what the lookup costs, and what the index adds to the file.

use crate::data::{priced_products, split_files};
use crate::model::load_model;
use anyhow::{Context, Result, bail};
use pricer::estimator::Predictor;
use pricer::explain::{ExplainOptions, comparables, weighted_median_price};
use pricer::knn::keys;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct ComparablesArgs {
    /// A stack model file with a neighbour index (`pricer export --knn K`).
    #[arg(long)]
    pub model: PathBuf,
    /// A `curate` directory: each test split (or, with --validation, each validation split) is measured.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub validation: bool,
    /// Comparables per product (the page shows 5).
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Also time a full explanation (comparables and occlusion) on the first N items of each split.
    #[arg(long, default_value_t = 50)]
    pub explain_items: usize,
}

pub fn run(args: &ComparablesArgs) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    let est = load_model(&args.model)?;
    let Predictor::Stack(stack) = &est.predictor else {
        bail!("{} is a {} model: only a stack exported with --knn has comparables", args.model.display(), est.kind)
    };
    let knn = stack.knn.as_ref().context("the model has no neighbour index (export with --knn K)")?;
    if knn.labels.is_none() {
        bail!("the model's neighbour index has no titles (exported before comparables were stored)");
    }
    // What the index adds to the file: vectors, prices, titles, categories.
    let tensor_bytes = |name: &str| est.file.tensor(name).map(|t| t.storage_size_in_bytes()).unwrap_or(0);
    let titles = est.file.opt_str(keys::TITLES).map_or(0, str::len);
    let names: usize = est.file.strs(keys::CATEGORY_NAMES).unwrap_or_default().iter().map(|n| n.len() + 8).sum();
    let vectors = tensor_bytes(keys::VECTORS);
    let labels = titles + names + tensor_bytes(keys::CATEGORIES);
    println!(
        "index: {} items | vectors {:.2} MB | prices {:.2} MB | titles and categories {:.2} MB | total {:.2} MB",
        knn.len(),
        vectors as f64 / 1e6,
        tensor_bytes(keys::LOG_PRICES) as f64 / 1e6,
        labels as f64 / 1e6,
        (vectors + tensor_bytes(keys::LOG_PRICES) + labels) as f64 / 1e6
    );
    println!(
        "| split | items | truth within the {k} comparables' price range | MAE of their similarity-weighted median | model MAE | lookup per product | explanation per product |",
        k = args.k
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (split, path) in split_files(&args.data, args.validation)? {
        let products = priced_products(&path, false)?.0;
        let (mut within, mut median_err, mut model_err, mut n) = (0usize, 0.0f64, 0.0f64, 0usize);
        let mut lookup = std::time::Duration::ZERO;
        for chunk in products.chunks(pricer::estimator::BATCH) {
            // One encoder pass per product: the estimate from the same member values.
            for (p, v) in chunk.iter().zip(est.member_values(chunk)) {
                let Ok(v) = v else { continue };
                let pooled = v.pooled.clone().context("the encoder gave no pooled vector")?;
                let Ok(e) = est.estimate_from(p, v) else { continue };
                let start = Instant::now();
                let near = comparables(knn, &pooled, args.k);
                lookup += start.elapsed();
                let truth = p.price.unwrap_or(0.0);
                let lo = near.iter().map(|c| c.price).fold(f64::INFINITY, f64::min);
                let hi = near.iter().map(|c| c.price).fold(f64::NEG_INFINITY, f64::max);
                within += (lo <= truth && truth <= hi) as usize;
                median_err += (weighted_median_price(&near).unwrap_or(0.0) - truth).abs();
                model_err += (e.price - truth).abs();
                n += 1;
            }
        }
        if n == 0 {
            println!("| {split} | 0 | | | | | |");
            continue;
        }
        let sample = &products[..products.len().min(args.explain_items)];
        let start = Instant::now();
        for p in sample {
            est.explain(p, ExplainOptions::default())?;
        }
        let explain = match sample.len() {
            0 => "not timed".to_string(),
            len => format!(
                "{:.0} ms ({} words occluded)",
                1e3 * start.elapsed().as_secs_f64() / len as f64,
                ExplainOptions::default().occlude
            ),
        };
        println!(
            "| {split} | {n} | {:.1}% | ${:.2} | ${:.2} | {:.2} ms | {explain} |",
            100.0 * within as f64 / n as f64,
            median_err / n as f64,
            model_err / n as f64,
            1e3 * lookup.as_secs_f64() / n as f64,
        );
    }
    Ok(())
}
