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
use candle_core::Tensor;
use pricer::bert::{PriceModel, TrainableWeights};
use pricer::metrics::Summary;
use pricer::text::{Budget, model_input};
use pricer::tokenizer::Tokens;
use std::collections::HashMap;
use std::path::PathBuf;

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
    let dev = device(&args.device)?;
    let first = &runs[0].file;
    let ds = load_data_set(&first.config.data, first.config.holdout, first.config.seed, false)?;
    if ds.validation.is_empty() {
        bail!("no validation items in {}", first.config.data.display());
    }
    let tok = load_tokenizer(&runs[0].dir.join("tokenizer.json"))?;
    let max_len = (first.config.max_tokens + 2).min(first.bert.max_position_embeddings);
    let val_tokens = ds
        .validation
        .iter()
        .map(|p| {
            let text = model_input(p, Budget::Tokens(&tok, first.config.max_tokens))?;
            Ok(tok.encode(&text, max_len)?)
        })
        .collect::<Result<Vec<Tokens>>>()?;
    let (mean, std) = (first.state.target_mean, first.state.target_std);
    let validate = |weights: &HashMap<String, Tensor>| -> Result<Summary> {
        let varmap = candle_nn::VarMap::new();
        let on_dev = weights.iter().map(|(k, v)| Ok((k.clone(), v.to_device(&dev)?))).collect::<Result<_>>()?;
        let model = PriceModel::load(&TrainableWeights::new(&varmap, on_dev, 0, &dev), &first.bert)?;
        let logs = predict_logs(&model, &val_tokens, tok.pad_id(), &dev)?;
        let pairs: Vec<(f64, f64)> = logs
            .iter()
            .zip(&ds.validation)
            .map(|(z, p)| ((z * std + mean).exp_m1().max(0.0), p.price.unwrap_or(0.0)))
            .collect();
        Summary::of(&pairs).context("validation is not empty")
    };
    let own = |r: &Run| r.file.state.best_val_mae.unwrap_or(f64::INFINITY);
    println!("{} runs, {} validation items", runs.len(), ds.validation.len());
    for r in &runs {
        println!("  {}: validation MAE ${:.2} (its own best)", r.dir.display(), own(r));
    }

    let mut kept = vec![false; runs.len()];
    let (weights, summary) = if args.greedy {
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|&a, &b| own(&runs[a]).total_cmp(&own(&runs[b])));
        kept[order[0]] = true;
        let mut best: Option<(HashMap<String, Tensor>, Summary)> = None;
        let mut best_mae = own(&runs[order[0]]);
        for &i in &order[1..] {
            let chosen: Vec<&HashMap<String, Tensor>> =
                (0..runs.len()).filter(|&j| kept[j] || j == i).map(|j| &runs[j].weights).collect();
            let w = average(&chosen)?;
            let s = validate(&w)?;
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
            Some(b) => b,
            None => bail!(
                "no run improved on {} alone (${:.2}): no soup written; use that run itself",
                runs[order[0]].dir.display(),
                best_mae
            ),
        }
    } else {
        kept.iter_mut().for_each(|k| *k = true);
        let w = average(&runs.iter().map(|r| &r.weights).collect::<Vec<_>>())?;
        let s = validate(&w)?;
        (w, s)
    };
    println!(
        "soup of {}: validation MAE ${:.2} RMSLE {:.3} hits {:.1}% (best run alone ${:.2})",
        kept.iter().filter(|&&k| k).count(),
        summary.mae,
        summary.rmsle,
        summary.hits_pct,
        runs.iter().map(own).fold(f64::INFINITY, f64::min)
    );

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    save_tensors(&args.out.join(BEST), &weights)?;
    write_atomic(&args.out.join("tokenizer.json"), runs[0].tokenizer_json.as_bytes())?;
    let mut config = first.config.clone();
    config.command = std::env::args().collect::<Vec<_>>().join(" ");
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
    let file = RunFile {
        config,
        bert: first.bert.clone(),
        state: RunState {
            epoch: first.config.epochs,
            best_val_mae: Some(summary.mae),
            done: true,
            target_mean: mean,
            target_std: std,
            ..Default::default()
        },
        soup: Some(record),
    };
    write_atomic(&args.out.join(RUN_FILE), serde_json::to_string_pretty(&file)?.as_bytes())?;
    println!("wrote {}; export it with: pricer export {} --out model.gguf", args.out.display(), args.out.display());
    Ok(())
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
