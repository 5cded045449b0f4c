//! `pricer train`: the baselines here; the fine-tuned encoder in `finetune`.

use crate::data::{DataSet, load_data_set, sha256_files, write_atomic};
use crate::fit::ridge;
use anyhow::{Result, bail};
use pricer::baselines::{Featurizer, LinearModel, brand, details_text, mean_rank, terms, weight_lb};
use pricer::estimator::{Prep, keys};
use pricer::metrics::{Summary, coverage_pct, median};
use pricer::model_file::ModelWriter;
use pricer::text::model_input;
use pricer::{Estimator, Product};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The training median, whatever the product.
    Constant,
    /// Linear regression on hand features: length, weight, rank, brand, category.
    Features,
    /// Linear regression on counts of the 1000 most common words.
    Bow,
    /// Ridge regression (alpha 0.3) on word 1-2-gram TF-IDF, log price target.
    TfidfRidge,
    /// Ridge regression on the `details` fields kept apart (weight, volume,
    /// rank, year, brand, category), log price target.
    DetailsRidge,
    /// Fine-tune a pretrained BERT encoder (all-MiniLM-L6-v2) with a price head.
    Minilm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Constant => "constant",
            Kind::Features => "features",
            Kind::Bow => "bow",
            Kind::TfidfRidge => "tfidf-ridge",
            Kind::DetailsRidge => "details-ridge",
            Kind::Minilm => "minilm",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[arg(long, value_enum, required_unless_present = "resume")]
    pub kind: Option<Kind>,
    /// A `curate` output directory, or one curated JSONL file (a holdout share validates).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// The model file to write (.gguf); for `minilm`, the run directory
    /// (checkpoints, best weights; `pricer export` makes the model file).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the interrupted `minilm` run in this directory.
    #[arg(long, conflicts_with_all = ["kind", "data", "out"])]
    pub resume: Option<PathBuf>,
    /// minilm: the base model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// minilm: passes over the training set.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// minilm: peak learning rate of the encoder (and head).
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// minilm --frozen: peak learning rate of the head.
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f64,
    /// minilm: examples per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// minilm: token budget of the text (special tokens not counted).
    #[arg(long, default_value_t = pricer::text::DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// minilm: cpu or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// minilm: embed each text once and train only the head (fast on CPU).
    #[arg(long)]
    pub frozen: bool,
    /// minilm: share of steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// minilm: layer-wise learning-rate decay: the head trains at --lr, the
    /// top encoder layer at lr x d, the one below at lr x d^2, ..., the
    /// embeddings at lr x d^(layers + 1) (1: one rate for all).
    #[arg(long, default_value_t = 1.0)]
    pub layer_decay: f64,
    /// minilm: self-training: also learn from these items priced by a model
    /// (`pricer pseudo-label`), each weighing --pseudo-weight of a real one.
    /// Their titles that are in validation or test are left out.
    #[arg(long)]
    pub pseudo: Option<PathBuf>,
    #[arg(long, default_value_t = 0.3)]
    pub pseudo_weight: f64,
    /// minilm: weigh each real item's loss toward what the linear word member
    /// misses: 1 + F x (its out-of-fold miss in log price / the mean miss, at
    /// most 4), the weights then scaled to a mean of 1 (0: all weigh the same).
    #[arg(long, default_value_t = 0.0)]
    pub focus: f64,
    /// minilm: gradients are clipped to this global norm.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// minilm: stop after this many epochs without a better validation MAE.
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// minilm: write a checkpoint every N steps (0: only at epoch ends).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Share of a single data file held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Ridge strength of the tfidf-ridge and details-ridge models.
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// tfidf-ridge: also read every `details` entry (brand, weight, rank...).
    #[arg(long)]
    pub with_details: bool,
    /// tfidf-ridge: a term's count c weighs 1 + ln(c) (scikit-learn's `sublinear_tf`).
    #[arg(long)]
    pub sublinear: bool,
    /// Terms in fewer training texts than this are left out of the TF-IDF vocabulary.
    #[arg(long, default_value_t = 1)]
    pub min_df: usize,
    /// Stop at the first malformed record.
    #[arg(long)]
    pub strict: bool,
    /// Linear kinds and `constant`: fit on the training items, measure the
    /// likely range and validation figures, then fit again on the training
    /// and validation items: a member for `export --refit`, which blends it
    /// where the training-only fit was.
    #[arg(long)]
    pub with_validation: bool,
}

/// Products with their model input, computed once.
pub struct Prepared<'a> {
    pub products: &'a [Product],
    pub texts: Vec<String>,
}

pub fn prepared<'a>(products: &'a [Product], prep: &Prep) -> Result<Prepared<'a>> {
    let texts = products.iter().map(|p| model_input(p, prep.budget())).collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { products, texts })
}

pub fn run(args: &TrainArgs) -> Result<()> {
    if let Some(dir) = &args.resume {
        return crate::finetune::run(None, dir, true);
    }
    let (Some(kind), Some(data), Some(out)) = (args.kind, args.data.as_ref(), args.out.as_ref()) else {
        bail!("--kind, --data and --out are required (or --resume RUN_DIR)");
    };
    if kind == Kind::Minilm {
        if args.with_validation {
            bail!(
                "--with-validation is for the linear kinds and constant (an encoder's validation items pick its epoch)"
            );
        }
        let Some(base) = &args.base else {
            bail!("--kind minilm needs --base DIR, a model folder (scripts/fetch-minilm.sh makes one)");
        };
        if args.batch == 0 || args.epochs == 0 {
            bail!("--batch and --epochs must be at least 1");
        }
        let config = crate::finetune::RunConfig {
            base: base.clone(),
            data: data.clone(),
            epochs: args.epochs,
            lr: args.lr,
            head_lr: args.head_lr,
            batch: args.batch,
            max_tokens: args.max_tokens,
            seed: args.seed,
            device: args.device.clone(),
            frozen: args.frozen,
            warmup: args.warmup,
            weight_decay: args.weight_decay,
            layer_decay: args.layer_decay,
            pseudo: args.pseudo.clone(),
            pseudo_weight: args.pseudo_weight,
            focus: args.focus,
            clip: args.clip,
            patience: args.patience.max(1),
            checkpoint_every: args.checkpoint_every,
            holdout: args.holdout,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        };
        return crate::finetune::run(Some(config), out, false);
    }
    let args = &TrainArgs { kind: Some(kind), ..args.clone() };
    let ds = load_data_set(data, args.holdout, args.seed, args.strict)?;
    let prep = Prep { max_tokens: ds.prep.max_tokens, tokenizer: ds.tokenizer.clone() };
    println!("training {} on {} items ({} validation)", kind.name(), ds.train.len(), ds.validation.len());
    let fitted = |products: &[Product]| -> Result<ModelWriter> {
        let mut w = ModelWriter::new(kind.name());
        match kind {
            Kind::Constant => {
                let mut prices: Vec<f64> = products.iter().filter_map(|p| p.price).collect();
                w.set_f64("pricer.constant.price", median(&mut prices));
            }
            kind => fit_linear(kind, &prepared(products, &prep)?, args)?.write(&mut w, "")?,
        }
        prep.write(&mut w);
        Ok(w)
    };
    let mut w = fitted(&ds.train)?;
    if args.with_validation {
        let fit = ValidationFit::of(&mut w, &ds.validation)?;
        let all: Vec<Product> = ds.train.iter().chain(&ds.validation).cloned().collect();
        println!("fitting again on the {} training and validation items", all.len());
        w = fitted(&all)?;
        finish_with(&mut w, &ds, args.seed, &fit)?;
        w.set_f64(keys::TRAIN_ITEMS, all.len() as f64).set_u32(keys::VALIDATION_LEARNT, ds.validation.len() as u32);
    } else {
        finish(&mut w, &ds, args.seed)?;
    }
    let bytes = w.to_bytes()?;
    write_atomic(out, &bytes)?;
    report_written(out, &bytes)
}

/// The stack's word member recipe (`tfidf-ridge --with-details --sublinear --min-df 2`).
fn word_member_args() -> TrainArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }
    // --data and --out are required by the parser and never read by `fit_linear`.
    let argv = [
        "train",
        "--kind",
        "tfidf-ridge",
        "--with-details",
        "--sublinear",
        "--min-df",
        "2",
        "--data",
        "-",
        "--out",
        "-",
    ];
    <Cli as clap::Parser>::try_parse_from(argv).expect("valid arguments").args
}

/// How far the word member misses each product, in log(1 + price), each
/// estimated by a fit on the other `folds - 1` folds (every `folds`-th
/// product is one fold): what `train --focus` weighs the loss toward.
pub fn word_member_misses(products: &[Product], prep: &Prep, folds: usize) -> Result<Vec<f64>> {
    if products.len() < 2 * folds {
        bail!("{} products: too few for {folds} folds", products.len());
    }
    let all = prepared(products, prep)?;
    let args = word_member_args();
    let mut misses = vec![0.0; products.len()];
    for k in 0..folds {
        let (fit, held): (Vec<usize>, Vec<usize>) = (0..products.len()).partition(|i| i % folds != k);
        let fit_products: Vec<Product> = fit.iter().map(|&i| products[i].clone()).collect();
        let texts = fit.iter().map(|&i| all.texts[i].clone()).collect();
        let model = fit_linear(Kind::TfidfRidge, &Prepared { products: &fit_products, texts }, &args)?;
        for i in held {
            let p = &products[i];
            misses[i] = (model.log_price(p, &all.texts[i]) - p.price.unwrap_or(0.0).ln_1p()).abs();
        }
    }
    Ok(misses)
}

/// Loss weights from misses: `1 + focus * min(miss / mean, 4)`, scaled to a mean of 1.
pub fn focus_weights(misses: &[f64], focus: f64) -> Vec<f32> {
    let mean = misses.iter().sum::<f64>() / misses.len().max(1) as f64;
    let raw: Vec<f64> = misses.iter().map(|m| 1.0 + focus * (m / mean.max(1e-12)).min(4.0)).collect();
    let scale = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
    raw.iter().map(|w| (w / scale) as f32).collect()
}

/// Prints what was written and its test metrics.
pub fn report_written(out: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let est = Estimator::from_bytes(bytes)?;
    println!("wrote {} ({:.1} MiB)", out.display(), bytes.len() as f64 / (1 << 20) as f64);
    for split in keys::test_splits(&est.file) {
        let f = |k: &str| est.file.f64(&keys::test_key(&split, k)).unwrap_or(f64::NAN);
        println!(
            "test{}: n {} | MAE ${:.2} | RMSLE {:.3} | hits {:.1}% | range coverage {:.1}%",
            if split.is_empty() { String::new() } else { format!(" {split}") },
            f("n"),
            f("mae"),
            f("rmsle"),
            f("hits_pct"),
            f("coverage_pct"),
        );
    }
    Ok(())
}

pub fn fit_linear(kind: Kind, train: &Prepared, args: &TrainArgs) -> Result<LinearModel> {
    let (featurizer, alpha, log_target) = match kind {
        Kind::Features => (hand_featurizer(train.products), 1e-3, false),
        Kind::Bow => (Featurizer::Bow { vocab: top_words(&train.texts, 1000) }, 1.0, false),
        Kind::TfidfRidge => {
            let texts: Vec<String> = if args.with_details {
                train.products.iter().zip(&train.texts).map(|(p, t)| format!("{t}\n{}", details_text(p))).collect()
            } else {
                train.texts.clone()
            };
            let mut f = tfidf_featurizer(&texts, args.min_df);
            if let Featurizer::Tfidf { details, sublinear, .. } = &mut f {
                *details = args.with_details;
                *sublinear = args.sublinear;
            }
            (f, args.alpha, true)
        }
        Kind::DetailsRidge => (details_featurizer(train.products), args.alpha, true),
        Kind::Constant | Kind::Minilm => unreachable!("not a linear kind"),
    };
    let index = featurizer.index();
    let rows: Vec<_> =
        train.products.iter().zip(&train.texts).map(|(p, t)| featurizer.features(p, t, &index)).collect();
    let y: Vec<f64> = train
        .products
        .iter()
        .map(|p| {
            let price = p.price.unwrap_or(0.0);
            if log_target { price.ln_1p() } else { price }
        })
        .collect();
    let (weights, bias) = ridge(&rows, featurizer.dim(), &y, alpha);
    Ok(LinearModel::new(featurizer, weights.iter().map(|&x| x as f32).collect(), bias as f32, log_target)?)
}

fn hand_featurizer(products: &[Product]) -> Featurizer {
    let mean = |xs: Vec<f64>| if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let weight_mean = mean(products.iter().filter_map(weight_lb).map(f64::ln_1p).collect()) as f32;
    let log_rank_mean = mean(products.iter().filter_map(mean_rank).map(f64::ln_1p).collect()) as f32;
    let mut brands: Vec<(String, usize)> = brand_counts(products).into_iter().filter(|(_, c)| *c >= 3).collect();
    brands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    brands.truncate(40);
    let brands = brands.into_iter().map(|b| b.0).collect();
    Featurizer::Hand { brands, categories: categories(products), weight_mean, log_rank_mean }
}

/// How many training products name each brand (lowercased).
fn brand_counts(products: &[Product]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for b in products.iter().filter_map(brand) {
        *counts.entry(b.to_lowercase()).or_default() += 1;
    }
    counts
}

/// Every category of the training products, sorted.
fn categories(products: &[Product]) -> Vec<String> {
    products.iter().filter_map(|p| p.category.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// Brands seen at least twice in training (sorted) and every category.
fn details_featurizer(products: &[Product]) -> Featurizer {
    let mut brands: Vec<String> = brand_counts(products).into_iter().filter(|(_, c)| *c >= 2).map(|(b, _)| b).collect();
    brands.sort();
    Featurizer::Details { brands, categories: categories(products) }
}

/// Document frequency of each term.
fn doc_freq(texts: &[String], bigrams: bool) -> BTreeMap<String, usize> {
    let mut df = BTreeMap::new();
    for t in texts {
        for term in terms(t, bigrams).into_iter().collect::<HashSet<_>>() {
            *df.entry(term).or_insert(0) += 1;
        }
    }
    df
}

fn top_words(texts: &[String], n: usize) -> Vec<String> {
    let mut df: Vec<(String, usize)> = doc_freq(texts, false).into_iter().collect();
    df.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    df.into_iter().take(n).map(|(t, _)| t).collect()
}

/// scikit-learn's TfidfVectorizer(ngram_range=(1, 2)) vocabulary and smooth idf.
fn tfidf_featurizer(texts: &[String], min_df: usize) -> Featurizer {
    let n = texts.len() as f64;
    let (vocab, idf): (Vec<String>, Vec<f32>) = doc_freq(texts, true)
        .into_iter()
        .filter(|(_, df)| *df >= min_df)
        .map(|(t, df)| (t, (((1.0 + n) / (1.0 + df as f64)).ln() + 1.0) as f32))
        .unzip();
    Featurizer::Tfidf { vocab, idf, bigrams: true, details: false, sublinear: false }
}

/// The likely range (10% and 90% quantiles of the log residuals) and the
/// summary of a model's estimates on validation items: what its file says
/// of validation.
pub struct ValidationFit {
    range: (f64, f64),
    summary: Option<Summary>,
}

impl ValidationFit {
    /// Measures the model in `w` (weights and preparation already there) on
    /// `validation`.
    pub fn of(w: &mut ModelWriter, validation: &[Product]) -> Result<Self> {
        if validation.is_empty() {
            bail!("no validation items: the likely range is fitted on them");
        }
        // Provisional range so the file loads.
        w.set_f64(keys::RANGE_LOW, 0.0).set_f64(keys::RANGE_HIGH, 0.0);
        let est = Estimator::from_bytes(&w.to_bytes()?)?;
        let val: Vec<(f64, f64)> = validation
            .iter()
            .zip(est.estimate_batch(validation))
            .map(|(p, e)| Ok((e?.price, p.price.unwrap_or(0.0))))
            .collect::<Result<_>>()?;
        let mut residuals: Vec<f64> = val.iter().map(|(e, t)| t.ln_1p() - e.max(0.0).ln_1p()).collect();
        let range = (quantile(&mut residuals, 0.1), quantile(&mut residuals, 0.9));
        Ok(Self { range, summary: Summary::of(&val) })
    }
}

/// Adds what every model file carries after its weights: the likely range
/// (from validation residuals), provenance, and metrics on the test split.
/// Needs the weights and preparation already in `w`.
pub fn finish(w: &mut ModelWriter, ds: &DataSet, seed: u64) -> Result<()> {
    let fit = ValidationFit::of(w, &ds.validation)?;
    finish_with(w, ds, seed, &fit)
}

/// [`finish`] with the range and validation figures measured on another
/// model (the same one before it saw the validation items).
pub fn finish_with(w: &mut ModelWriter, ds: &DataSet, seed: u64, fit: &ValidationFit) -> Result<()> {
    w.set_f64(keys::RANGE_LOW, fit.range.0).set_f64(keys::RANGE_HIGH, fit.range.1);
    if let Some(s) = &fit.summary {
        w.set_f64("pricer.validation.mae", s.mae).set_f64("pricer.validation.rmsle", s.rmsle);
    }
    let argv: Vec<String> = std::env::args().collect();
    w.set_str("pricer.provenance.data_sha256", &sha256_files(&ds.sources)?)
        .set_str(keys::DATA_SET, &ds.name)
        // File names only: the card must not show the training machine's paths.
        .set_str(
            keys::DATA_FILES,
            &ds.sources
                .iter()
                .map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set_u32("pricer.provenance.seed", seed as u32)
        .set_str("pricer.provenance.command", &argv.join(" "))
        .set_str("pricer.provenance.date", &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .set_str("pricer.provenance.version", env!("CARGO_PKG_VERSION"))
        .set_f64(keys::TRAIN_ITEMS, ds.train.len() as f64);
    let est = Estimator::from_bytes(&w.to_bytes()?)?;
    write_test_metrics(w, &est, &ds.tests)
}

/// The model card's test metrics (each split's summary, coverage, and its
/// estimates for the scatter) of `est` on `tests`, written into `w`.
pub fn write_test_metrics(w: &mut ModelWriter, est: &Estimator, tests: &[crate::data::Split]) -> Result<()> {
    let mut names = Vec::new();
    for split in tests {
        let estimates = est.estimate_batch(&split.products);
        let mut pairs = Vec::new();
        let mut ranges = Vec::new();
        for (p, e) in split.products.iter().zip(estimates) {
            let e = e?;
            let t = p.price.unwrap_or(0.0);
            pairs.push((e.price, t));
            ranges.push((e.low, e.high, t));
        }
        let Some(s) = Summary::of(&pairs) else { continue };
        let key = |k: &str| keys::test_key(&split.name, k);
        w.set_f64(&key("n"), s.n as f64)
            .set_f64(&key("mae"), s.mae)
            .set_f64(&key("rmsle"), s.rmsle)
            .set_f64(&key("hits_pct"), s.hits_pct)
            .set_f64(&key("median_abs_error"), s.median_abs_error)
            .set_f64(&key("coverage_pct"), coverage_pct(&ranges));
        let (est_v, truth_v): (Vec<f32>, Vec<f32>) = pairs.iter().map(|(e, t)| (*e as f32, *t as f32)).unzip();
        w.set_f32s(&key("estimate"), &est_v).set_f32s(&key("truth"), &truth_v);
        names.push(split.name.clone());
    }
    if !names.is_empty() {
        w.set_strs(keys::TEST_SPLITS, &names);
    }
    Ok(())
}

/// The q-quantile (linear interpolation) of `xs`.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let pos = q * (xs.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    if i + 1 < xs.len() { xs[i] * (1.0 - frac) + xs[i + 1] * frac } else { xs[i] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_vocabulary_and_idf_follow_sklearn() {
        let texts = vec!["red car".to_string(), "red bike".to_string()];
        let Featurizer::Tfidf { vocab, idf, .. } = tfidf_featurizer(&texts, 1) else { panic!() };
        assert_eq!(vocab, vec!["bike", "car", "red", "red bike", "red car"]);
        // idf = ln((1 + n) / (1 + df)) + 1
        assert!((idf[2] - 1.0).abs() < 1e-6);
        assert!((idf[0] - ((3.0f32 / 2.0).ln() + 1.0)).abs() < 1e-6);
        let Featurizer::Tfidf { vocab, .. } = tfidf_featurizer(&texts, 2) else { panic!() };
        assert_eq!(vocab, vec!["red"]);
    }

    #[test]
    fn focus_weights_lean_toward_misses_and_keep_a_mean_of_one() {
        let mut misses = vec![0.1; 8];
        misses.extend([0.4, 40.0]);
        let w = focus_weights(&misses, 1.0);
        assert!((w.iter().sum::<f32>() / 10.0 - 1.0).abs() < 1e-6, "{w:?}");
        assert!(w[0] == w[1] && w[8] > w[0] && w[9] > w[8], "{w:?}");
        // The outlier is capped at 4 mean misses (mean 4.12): weight 1 + 4 against 1 + 0.1 / 4.12.
        assert!((w[9] / w[0] - 5.0 / (1.0 + 0.1 / 4.12)).abs() < 1e-4, "{w:?}");
        assert!(focus_weights(&[0.1, 0.3, 2.0], 0.0).iter().all(|&x| x == 1.0));
    }

    #[test]
    fn the_word_member_misses_the_odd_price_out_of_fold() {
        // Kettles cost about $20, drills about $80; one kettle is priced $2,000.
        let mut items: Vec<Product> = (0..40)
            .map(|i| {
                let (name, price) = if i % 2 == 0 { ("kettle steel", 20.0) } else { ("cordless drill", 80.0) };
                Product { title: format!("{name} {i}"), price: Some(price + (i % 5) as f64), ..Default::default() }
            })
            .collect();
        items[12].price = Some(2000.0);
        let prep = Prep { max_tokens: 64, tokenizer: None };
        let m = word_member_misses(&items, &prep, 5).unwrap();
        assert_eq!(m.len(), 40);
        let worst = (0..40).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
        assert_eq!(worst, 12, "{m:?}");
        assert!(m[12] > 3.0 && m.iter().enumerate().all(|(i, &x)| i == 12 || x < 1.0), "{m:?}");
        assert!(word_member_misses(&items[..9], &prep, 5).unwrap_err().to_string().contains("too few"));
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0, 5.0], 0.5), 3.0);
        assert!((quantile(&mut [0.0, 10.0], 0.1) - 1.0).abs() < 1e-12);
    }
}
