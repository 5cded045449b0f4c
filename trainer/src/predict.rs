//! `pricer predict`: estimates for products given as text or JSONL on stdin.

use crate::chat::ChatArgs;
use crate::eval::Pricer;
use anyhow::Result;
use pricer::readers::parse_json_record;
use pricer::{Estimate, Product};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// A model file (.gguf), or `chat:MODEL` (a chat model behind an
    /// OpenAI-compatible endpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// A product as text: title on the first line, then its description.
    /// Without it, products are read as JSON Lines from stdin.
    pub text: Option<String>,
    #[command(flatten)]
    pub chat: ChatArgs,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let mut model = Pricer::open(&args.model, &args.chat)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(text) = &args.text {
        let answer = model.estimate_all(&[Product::from_free_text(text)])?.remove(0);
        let ok = answer.is_ok();
        writeln!(out, "{}", answer_json(None, answer))?;
        if !ok {
            std::process::exit(1);
        }
        return Ok(());
    }
    // Products in batches: a file model answers line by line as they come;
    // a chat model gets the whole input at once, asked concurrently.
    let batch = if matches!(model, Pricer::Chat(_)) { usize::MAX } else { 1 };
    let mut pending: Vec<(u64, Result<Product, String>)> = Vec::new();
    let mut flush = |pending: &mut Vec<(u64, Result<Product, String>)>, out: &mut dyn Write| -> Result<()> {
        let products: Vec<Product> = pending.iter().filter_map(|(_, p)| p.as_ref().ok().cloned()).collect();
        let mut answers = model.estimate_all(&products)?.into_iter();
        for (line, p) in pending.drain(..) {
            let answer = match p {
                Ok(_) => answers.next().unwrap_or_else(|| Err("no estimate".into())),
                Err(e) => Err(e),
            };
            writeln!(out, "{}", answer_json(Some(line), answer))?;
        }
        Ok(())
    };
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let n = i as u64 + 1;
        match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => pending.push((n, parse_json_record(&l))),
            Err(e) => pending.push((n, Err(format!("cannot read line: {e}")))),
        }
        if pending.len() >= batch {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)
}

fn answer_json(line: Option<u64>, answer: Result<Estimate, String>) -> serde_json::Value {
    let mut obj = match answer {
        Ok(e) => serde_json::json!({"price": round2(e.price), "low": round2(e.low), "high": round2(e.high)}),
        Err(err) => serde_json::json!({"error": err}),
    };
    if let Some(n) = line {
        obj["line"] = n.into();
    }
    obj
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
