//! `pricer lab speed`: inference speed of a model file on real products, at
//! each batch size: the whole stack (text preparation, tokenizer, encoder,
//! head, members) and the encoder alone. scripts/bench-native.sh runs it
//! beside ONNX Runtime on the same texts.

use crate::data::priced_products;
use crate::model::load_model;
use anyhow::{Context, Result, bail};
use pricer::Product;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct SpeedArgs {
    /// A model file (.gguf) with an encoder.
    #[arg(long)]
    pub model: PathBuf,
    /// Products: curated JSONL, raw Amazon JSONL, or CSV (priced items).
    #[arg(long)]
    pub data: PathBuf,
    /// Measure on the first N products.
    #[arg(long, default_value_t = 600)]
    pub limit: usize,
    /// Batch sizes to measure (products per encoder pass).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub batch: Vec<usize>,
    /// Timed passes over the products per batch size (after one warm-up
    /// pass over the first batches); the best pass is reported.
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// Write what a peer needs to encode the same texts into this folder:
    /// texts.jsonl (the encoder's input texts, after text preparation),
    /// ids.jsonl (their token ids as this model cuts them) and tokenizer.json.
    #[arg(long, value_name = "DIR")]
    pub write_peer_inputs: Option<PathBuf>,
    /// Print one JSON object per batch size instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time each int8 kernel this CPU runs on one core (a 256 x 384
    /// by 384 x 1536 product, the encoder's largest shape), in GOP/s and
    /// operations per cycle at the clock /proc/cpuinfo reports.
    #[arg(long)]
    pub kernels: bool,
}

pub fn run(args: &SpeedArgs) -> Result<()> {
    if args.kernels {
        kernels(args.json);
    }
    if args.batch.contains(&0) || args.passes == 0 || args.limit == 0 {
        bail!("--batch, --passes and --limit must be at least 1");
    }
    let est = load_model(&args.model)?;
    let Some(neural) = est.neural() else { bail!("{} has no encoder to measure", args.model.display()) };
    let tok = est.prep.tokenizer.as_ref().context("an encoder model carries its tokenizer")?;
    let (mut products, _) = priced_products(&args.data, false)?;
    products.truncate(args.limit);
    if products.is_empty() {
        bail!("{} holds no priced products", args.data.display());
    }
    let texts: Vec<String> =
        products.iter().map(|p| pricer::text::model_input(p, est.prep.budget())).collect::<Result<_, _>>()?;
    let max_len = (est.prep.max_tokens + 2).min(neural.model.encoder.config.max_position_embeddings);
    if let Some(dir) = &args.write_peer_inputs {
        write_peer_inputs(dir, &texts, tok, max_len)?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !args.json {
        println!(
            "{} products of {} on {threads} threads (best of {} passes)",
            products.len(),
            args.data.display(),
            args.passes
        );
        println!("{:>6} {:>16} {:>18} {:>12}", "batch", "stack products/s", "encoder products/s", "mean tokens");
    }
    let tokens: usize = texts.iter().map(|t| tok.encode(t, max_len).map(|r| r.ids.len())).sum::<Result<_, _>>()?;
    for &batch in &args.batch {
        let stack = |ps: &[Product]| -> Result<()> {
            for chunk in ps.chunks(batch) {
                for r in est.estimate_batch(chunk) {
                    r?;
                }
            }
            Ok(())
        };
        let encoder = |ts: &[String]| -> Result<()> {
            for chunk in ts.chunks(batch) {
                let rows: Vec<_> = chunk.iter().map(|t| tok.encode(t, max_len)).collect::<Result<_, _>>()?;
                neural.run(&rows, tok.pad_id())?;
            }
            Ok(())
        };
        let warm = (4 * batch).min(products.len());
        stack(&products[..warm])?;
        let (mut best_stack, mut best_encoder) = (f64::MAX, f64::MAX);
        for _ in 0..args.passes {
            let t = Instant::now();
            stack(&products)?;
            best_stack = best_stack.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            encoder(&texts)?;
            best_encoder = best_encoder.min(t.elapsed().as_secs_f64());
        }
        let n = products.len() as f64;
        let (stack_ps, encoder_ps) = (n / best_stack, n / best_encoder);
        let mean_tokens = tokens as f64 / n;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"batch": batch, "products": products.len(), "threads": threads,
                                   "stack_products_s": stack_ps, "encoder_products_s": encoder_ps,
                                   "mean_tokens": mean_tokens})
            );
        } else {
            println!("{batch:>6} {stack_ps:>16.1} {encoder_ps:>18.1} {mean_tokens:>12.1}");
        }
    }
    Ok(())
}

/// texts.jsonl, ids.jsonl and tokenizer.json in `dir`.
fn write_peer_inputs(
    dir: &std::path::Path,
    texts: &[String],
    tok: &pricer::TextTokenizer,
    max_len: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = |name: &str| -> Result<std::io::BufWriter<std::fs::File>> {
        let path = dir.join(name);
        Ok(std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
        ))
    };
    let (mut t_out, mut i_out) = (file("texts.jsonl")?, file("ids.jsonl")?);
    for t in texts {
        writeln!(t_out, "{}", serde_json::to_string(t)?)?;
        writeln!(i_out, "{}", serde_json::to_string(&tok.encode(t, max_len)?.ids)?)?;
    }
    t_out.flush()?;
    i_out.flush()?;
    std::fs::write(dir.join("tokenizer.json"), tok.json())
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    Ok(())
}

/// Each kernel's integer sums on one core: GOP/s (a multiply and an add
/// are two operations) and operations per cycle.
fn kernels(json: bool) {
    use pricer::int8_native::{Kernel, PANEL, pack};
    let (rows, width, out) = (256, 384, 1536);
    let x: Vec<u8> = (0..rows * width).map(|i| (i * 7 % 128) as u8).collect();
    let w: Vec<i8> = (0..out * width).map(|i| (i * 13 % 255) as i8).collect();
    let packed = pack(&w, out, width);
    let panels = out.div_ceil(PANEL);
    let mut sums = vec![0i32; rows * panels * PANEL];
    // The clock the kernel reports for core 0 (turbo may run higher).
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("cpu MHz")?.split(':').nth(1)?.trim().parse::<f64>().ok()));
    if !json {
        println!(
            "{:>12} {:>10} {:>14}   (256 x 384 x 1536, one core, {} MHz)",
            "kernel",
            "GOP/s",
            "ops/cycle",
            mhz.map_or("?".into(), |m| format!("{m:.0}"))
        );
    }
    for k in Kernel::available() {
        let reps = if k == Kernel::Scalar { 2 } else { 40 };
        k.sums(&x, rows, width, &packed, panels, &mut sums);
        let t = Instant::now();
        for _ in 0..reps {
            k.sums(&x, rows, width, &packed, panels, &mut sums);
        }
        let gops = (2 * rows * width * out * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let per_cycle = mhz.map(|m| gops * 1e3 / m);
        if json {
            println!(
                "{}",
                serde_json::json!({"kernel": k.name(), "gop_s": gops, "ops_per_cycle": per_cycle, "mhz": mhz})
            );
        } else {
            println!("{:>12} {gops:>10.1} {:>14}", k.name(), per_cycle.map_or("?".into(), |c| format!("{c:.1}")));
        }
    }
}
