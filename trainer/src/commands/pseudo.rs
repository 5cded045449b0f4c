//! `pricer pseudo-label`: a model's estimates for products without prices,
//! written as priced items for self-training (`pricer train --pseudo FILE`).

use crate::data::write_atomic;
use crate::model::load_model;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PseudoLabelArgs {
    /// The model whose estimates become the prices.
    #[arg(long)]
    pub model: PathBuf,
    /// Products without prices, as `pricer mlm --texts` takes them (a curate
    /// directory's validation and test titles are kept out); priced ones are passed over.
    #[arg(long, num_args = 1.., required = true)]
    pub texts: Vec<PathBuf>,
    /// The JSONL file to write: one `{"title", "text", "price", "pseudo": true}` per product.
    #[arg(long)]
    pub out: PathBuf,
    /// At most this many products (spread evenly over the sources).
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(args: &PseudoLabelArgs) -> Result<()> {
    let est = load_model(&args.model)?;
    let mut products: Vec<pricer::Product> =
        crate::data::texts::read_sources(&args.texts)?.into_iter().filter(|p| p.price.is_none()).collect();
    if let Some(n) = args.limit {
        products = crate::data::spread(&products, n);
    }
    if products.is_empty() {
        bail!("no product without a price in {:?}", args.texts);
    }
    let bar = indicatif::ProgressBar::new(products.len() as u64);
    let (mut out, mut failed) = (String::new(), 0usize);
    for chunk in products.chunks(256) {
        for (p, e) in chunk.iter().zip(est.estimate_batch(chunk)) {
            let (Ok(e), Ok(text)) = (e, est.prepare(p)) else {
                failed += 1;
                continue;
            };
            let line = serde_json::json!({
                "title": p.title, "text": text.text, "price": (e.price * 100.0).round() / 100.0, "pseudo": true
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    write_atomic(&args.out, out.as_bytes())?;
    println!(
        "wrote {} ({} products priced by {}; {failed} without a usable text)",
        args.out.display(),
        products.len() - failed,
        args.model.display()
    );
    Ok(())
}
