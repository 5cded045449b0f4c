//! `pricer soup`: average the weights of fine-tuning runs into one run (a
//! "model soup", Wortsman et al. 2022). Runs fine-tuned from the same base on
//! the same data, differing in seed or recipe, often sit in one basin of the
//! loss, so their mean predicts better than each, at one model's size and speed.

use crate::data::{load_data_set, load_tokenizer, write_atomic};
use crate::training::finetune::predict_logs;
use crate::training::run_folder::{
    BEST, Ingredient, RUN_FILE, RunFile, RunState, RunWeights as Run, SoupRecord, device, save_tensors,
};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use pricer::bert::{PriceModel, TrainableWeights};
use pricer::metrics::Summary;
use pricer::text::{Budget, model_input};
use pricer::tokenizer::Tokens;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct SoupArgs {
    /// Finished `pricer train --kind minilm` runs (two or more) on the same data, tokens and encoder shape.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// The run directory to write (best.safetensors, run.json, tokenizer.json): export it as any run.
    #[arg(long)]
    pub out: PathBuf,
    /// Add the runs best-first and keep each only if the soup's validation MAE improves
    /// (the greedy soup); by default every run is averaged with equal weight.
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Why `b` cannot be averaged with `a`, if it cannot.
fn mismatch(a: &Run, b: &Run) -> Option<String> {
    let (ca, cb) = (&a.file.config, &b.file.config);
    if a.file.bert != b.file.bert {
        return Some("a different encoder shape".into());
    }
    if ca.data != cb.data {
        return Some(format!("other data ({} vs {})", cb.data.display(), ca.data.display()));
    }
    if ca.max_tokens != cb.max_tokens {
        return Some(format!("{} tokens, not {}", cb.max_tokens, ca.max_tokens));
    }
    let (sa, sb) = (&a.file.state, &b.file.state);
    if (sa.target_mean - sb.target_mean).abs() > 1e-9 || (sa.target_std - sb.target_std).abs() > 1e-9 {
        return Some("another price scaling (other training items)".into());
    }
    if a.tokenizer_json != b.tokenizer_json {
        return Some("another tokenizer".into());
    }
    for (name, t) in &a.weights {
        match b.weights.get(name) {
            None => return Some(format!("no tensor {name}")),
            Some(u) if u.dims() != t.dims() => {
                return Some(format!("{name} shaped {:?}, not {:?}", u.dims(), t.dims()));
            }
            _ => {}
        }
    }
    if a.weights.len() != b.weights.len() {
        return Some(format!("{} tensors, not {}", b.weights.len(), a.weights.len()));
    }
    None
}

/// The element-wise mean of the runs' weights.
pub fn average(weights: &[&HashMap<String, Tensor>]) -> Result<HashMap<String, Tensor>> {
    let first = weights.first().context("nothing to average")?;
    let n = weights.len() as f64;
    first
        .keys()
        .map(|name| {
            let mut sum = first[name].clone();
            for w in &weights[1..] {
                sum = (sum + &w[name])?;
            }
            Ok((name.clone(), (sum / n)?))
        })
        .collect()
}

pub fn run(args: &SoupArgs) -> Result<()> {
    let runs = load_runs(args)?;
    let dev = device(&args.device)?;
    let validation = Validation::of(&runs[0], dev)?;
    let own = |r: &Run| r.file.state.best_val_mae.unwrap_or(f64::INFINITY);
    println!("{} runs, {} validation items", runs.len(), validation.items.len());
    for r in &runs {
        println!("  {}: validation MAE ${:.2} (its own best)", r.dir.display(), own(r));
    }
    let (weights, summary, kept) = if args.greedy {
        greedy(&runs, &validation)?
    } else {
        let w = average(&runs.iter().map(|r| &r.weights).collect::<Vec<_>>())?;
        let s = validation.summary(&w)?;
        (w, s, vec![true; runs.len()])
    };
    println!(
        "soup of {}: validation MAE ${:.2} RMSLE {:.3} hits {:.1}% (best run alone ${:.2})",
        kept.iter().filter(|&&k| k).count(),
        summary.mae,
        summary.rmsle,
        summary.hits_pct,
        runs.iter().map(own).fold(f64::INFINITY, f64::min)
    );
    let record = SoupRecord {
        greedy: args.greedy,
        ingredients: runs
            .iter()
            .zip(&kept)
            .map(|(r, &kept)| Ingredient { run: r.dir.clone(), val_mae: own(r), kept })
            .collect(),
        val_mae: summary.mae,
        val_rmsle: summary.rmsle,
        val_hits_pct: summary.hits_pct,
    };
    write_soup(&args.out, &runs[0], &weights, record)?;
    println!("wrote {}; export it with: pricer export {} --out model.gguf", args.out.display(), args.out.display());
    Ok(())
}

/// The runs, checked: a new output, and every run averageable with the first.
fn load_runs(args: &SoupArgs) -> Result<Vec<Run>> {
    if args.runs.iter().any(|r| r == &args.out) {
        bail!("--out {} is one of the runs: write the soup to a new directory", args.out.display());
    }
    if args.out.join(RUN_FILE).exists() {
        bail!("{} already holds a run: choose another --out", args.out.display());
    }
    let runs = args.runs.iter().map(|d| Run::load(d)).collect::<Result<Vec<_>>>()?;
    for r in &runs[1..] {
        if let Some(why) = mismatch(&runs[0], r) {
            bail!("{} cannot join {}: it has {why}", r.dir.display(), runs[0].dir.display());
        }
    }
    if runs.iter().any(|r| r.file.config.seed != runs[0].file.config.seed) {
        // Measured on data/all2: two seeds of the same recipe, $70.23 and $70.17 alone, $86.79 averaged.
        println!(
            "note: the runs have different seeds, so their price heads started from different random weights \
             and learned in another order; such averages usually do worse than each run (--greedy leaves them out)"
        );
    }
    Ok(runs)
}

/// The first run's validation items, tokenized once, to score weights on.
struct Validation {
    items: Vec<pricer::Product>,
    tokens: Vec<Tokens>,
    pad: u32,
    first: RunFile,
    dev: Device,
}

impl Validation {
    fn of(run: &Run, dev: Device) -> Result<Self> {
        let first = run.file.clone();
        let ds = load_data_set(&first.config.data, first.config.holdout, first.config.seed, false)?;
        if ds.validation.is_empty() {
            bail!("no validation items in {}", first.config.data.display());
        }
        let tok = load_tokenizer(&run.dir.join("tokenizer.json"))?;
        let max_len = (first.config.max_tokens + 2).min(first.bert.max_position_embeddings);
        let tokens = ds
            .validation
            .iter()
            .map(|p| {
                let text = model_input(p, Budget::Tokens(&tok, first.config.max_tokens))?;
                Ok(tok.encode(&text, max_len)?)
            })
            .collect::<Result<Vec<Tokens>>>()?;
        Ok(Self { items: ds.validation, tokens, pad: tok.pad_id(), first, dev })
    }

    /// The validation summary of a price model with these weights.
    fn summary(&self, weights: &HashMap<String, Tensor>) -> Result<Summary> {
        let (mean, std) = (self.first.state.target_mean, self.first.state.target_std);
        let varmap = candle_nn::VarMap::new();
        let on_dev = weights.iter().map(|(k, v)| Ok((k.clone(), v.to_device(&self.dev)?))).collect::<Result<_>>()?;
        let model = PriceModel::load(&TrainableWeights::new(&varmap, on_dev, 0, &self.dev), &self.first.bert)?;
        let logs = predict_logs(&model, &self.tokens, self.pad, &self.dev)?;
        let pairs: Vec<(f64, f64)> = logs
            .iter()
            .zip(&self.items)
            .map(|(z, p)| ((z * std + mean).exp_m1().max(0.0), p.price.unwrap_or(0.0)))
            .collect();
        Summary::of(&pairs).context("validation is not empty")
    }
}

/// The greedy soup: the runs best-first, each kept only if the soup's
/// validation MAE improves. Returns the weights, their summary and which runs were kept.
fn greedy(runs: &[Run], validation: &Validation) -> Result<(HashMap<String, Tensor>, Summary, Vec<bool>)> {
    let own = |r: &Run| r.file.state.best_val_mae.unwrap_or(f64::INFINITY);
    let mut kept = vec![false; runs.len()];
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| own(&runs[a]).total_cmp(&own(&runs[b])));
    kept[order[0]] = true;
    let mut best: Option<(HashMap<String, Tensor>, Summary)> = None;
    let mut best_mae = own(&runs[order[0]]);
    for &i in &order[1..] {
        let chosen: Vec<&HashMap<String, Tensor>> =
            (0..runs.len()).filter(|&j| kept[j] || j == i).map(|j| &runs[j].weights).collect();
        let w = average(&chosen)?;
        let s = validation.summary(&w)?;
        let better = s.mae < best_mae;
        println!(
            "  + {}: soup of {} validation MAE ${:.2} ({})",
            runs[i].dir.display(),
            chosen.len(),
            s.mae,
            if better { "kept" } else { "left out" }
        );
        if better {
            kept[i] = true;
            best_mae = s.mae;
            best = Some((w, s));
        }
    }
    match best {
        Some((w, s)) => Ok((w, s, kept)),
        None => bail!(
            "no run improved on {} alone (${:.2}): no soup written; use that run itself",
            runs[order[0]].dir.display(),
            best_mae
        ),
    }
}

/// The soup as a run folder: its weights, the first run's tokenizer, and
/// `run.json` (written last: a folder with it is a finished soup).
fn write_soup(out: &Path, first: &Run, weights: &HashMap<String, Tensor>, record: SoupRecord) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    save_tensors(&out.join(BEST), weights)?;
    write_atomic(&out.join("tokenizer.json"), first.tokenizer_json.as_bytes())?;
    let mut config = first.file.config.clone();
    config.command = std::env::args().collect::<Vec<_>>().join(" ");
    let file = RunFile {
        config,
        bert: first.file.bert.clone(),
        state: RunState {
            epoch: first.file.config.epochs,
            best_val_mae: Some(record.val_mae),
            done: true,
            target_mean: first.file.state.target_mean,
            target_std: first.file.state.target_std,
            ..Default::default()
        },
        soup: Some(record),
    };
    write_atomic(&out.join(RUN_FILE), serde_json::to_string_pretty(&file)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_is_the_element_wise_mean() {
        let t = |v: &[f32]| Tensor::new(v, &candle_core::Device::Cpu).unwrap();
        let a = HashMap::from([("w".to_string(), t(&[1.0, 2.0])), ("b".to_string(), t(&[0.0]))]);
        let b = HashMap::from([("w".to_string(), t(&[3.0, -2.0])), ("b".to_string(), t(&[1.5]))]);
        let c = HashMap::from([("w".to_string(), t(&[2.0, 3.0])), ("b".to_string(), t(&[3.0]))]);
        let m = average(&[&a, &b, &c]).unwrap();
        assert_eq!(m["w"].to_vec1::<f32>().unwrap(), vec![2.0, 1.0]);
        assert_eq!(m["b"].to_vec1::<f32>().unwrap(), vec![1.5]);
        assert!(average(&[]).is_err());
    }
}
