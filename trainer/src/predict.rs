//! `pricer predict`: estimates for products given as text or JSONL on stdin.

use crate::eval::load_model;
use anyhow::Result;
use pricer::Product;
use pricer::readers::parse_json_record;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// A model file (.gguf).
    #[arg(long)]
    pub model: PathBuf,
    /// A product as text: title on the first line, then its description.
    /// Without it, products are read as JSON Lines from stdin.
    pub text: Option<String>,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut answer = |line: Option<u64>, product: Result<Product, String>| -> Result<bool> {
        let result = product.and_then(|p| model.estimate(&p).map_err(|e| e.to_string()));
        let ok = result.is_ok();
        let mut obj = match result {
            Ok(e) => serde_json::json!({"price": round2(e.price), "low": round2(e.low), "high": round2(e.high)}),
            Err(err) => serde_json::json!({"error": err}),
        };
        if let Some(n) = line {
            obj["line"] = n.into();
        }
        writeln!(out, "{obj}")?;
        Ok(ok)
    };
    if let Some(text) = &args.text {
        if !answer(None, Ok(Product::from_free_text(text)))? {
            std::process::exit(1);
        }
        return Ok(());
    }
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                answer(Some(i as u64 + 1), Err(format!("cannot read line: {e}")))?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        answer(Some(i as u64 + 1), parse_json_record(&line))?;
    }
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
