//! `pricer export`: a training run's best weights into one self-describing
//! model file, quantized; alone, or stacked with other members (linear
//! models, the neighbour index) whose blend is fitted on validation items.

use crate::data::{DataSet, check_output, load_data_set, write_atomic};
use crate::linear::ridge::ridge;
use crate::model::calibrate::{calibrate, pooled_vectors};
use crate::model::card::{ValidationFit, finish, finish_with, quantile, report_written};
use crate::training::run_folder::{self, RunFile};
use anyhow::{Context, Result, bail};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use pricer::baselines::LinearModel;
use pricer::bert::QUANTILES;
use pricer::estimator::{Member, Predictor, Prep, Stack, keys};
use pricer::knn::{ItemLabels, Knn};
use pricer::metrics::Summary;
use pricer::model_file::{ModelFile, ModelWriter};
use pricer::{Estimator, Product};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// 8-bit blocks (GGML Q8_0) for matrices: about a quarter of f32's size.
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// A `pricer train --kind minilm` run directory.
    pub run: PathBuf,
    #[arg(long, value_enum, default_value = "q8_0")]
    pub quant: Quant,
    /// The model file to write (.gguf).
    #[arg(long)]
    pub out: PathBuf,
    /// A linear model file to stack with the encoder, as NAME=FILE (or FILE,
    /// named after the file). Repeat for several.
    #[arg(long = "with", value_parser = parse_member_file)]
    pub with: Vec<(String, PathBuf)>,
    /// Stack the prices of the K nearest training items in the encoder's
    /// embedding space (0: no neighbour member).
    #[arg(long, default_value_t = 0)]
    pub knn: usize,
    /// Softmax temperature over the neighbours' cosine similarities.
    #[arg(long, default_value_t = 0.05)]
    pub knn_temperature: f32,
    /// How the K neighbours share the vote: `softmax` of their similarities,
    /// or `fade` (less the next item's weight, so the estimate moves
    /// continuously with the query; the 8-bit page then follows f32 closer).
    #[arg(long, default_value = "softmax", value_parser = pricer::knn::Vote::parse)]
    pub knn_vote: pricer::knn::Vote,
    /// Stack a 0/1 input telling whether the product comes with `details`.
    #[arg(long)]
    pub has_details: bool,
    /// Also stack each member times the has-details input, so the blend can
    /// weigh members differently for products with and without details.
    #[arg(long, requires = "has_details")]
    pub interactions: bool,
    /// Leave the encoder's own price head out of the stack (its neighbours may stay).
    #[arg(long)]
    pub no_head: bool,
    /// Fit the blend on these validation splits only (comma-separated names;
    /// `validation.jsonl` is `validation`). Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub fit_on: Vec<String>,
    /// q8_0: calibrate the int8 kernels' per-channel input smoothing on
    /// validation texts, moving this share of a channel's range into the
    /// weights (0..=1; 0.5 is SmoothQuant's). Off by default: on the default
    /// model it helped one test split and not the other (docs/benchmarks.md).
    #[arg(long)]
    pub smooth_alpha: Option<f64>,
    /// Once the blend is fitted, index the validation items too: new products
    /// find their comparables among training and validation items (the blend
    /// was fitted with the training items' votes alone). The file's figures
    /// on the validation splits are then no longer out-of-sample.
    #[arg(long)]
    pub index_validation: bool,
    /// Once the blend is fitted, put this file in the place of the `--with`
    /// member NAME, as NAME=FILE: the same recipe trained on the training and
    /// validation items (the blend was fitted with the `--with` file, whose
    /// validation estimates are out-of-sample). Repeat for several.
    #[arg(long, value_parser = parse_member_file)]
    pub refit: Vec<(String, PathBuf)>,
    /// The recipe this export ends (`pricer build` passes it): its name,
    /// text and SHA-256 go into the file, and the card shows them.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

fn parse_member_file(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = match s.split_once('=') {
        Some((n, p)) => (n.trim().to_string(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(s);
            let stem = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            (stem.split('.').next().unwrap_or_default().replace('-', "_"), p)
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("member name {name:?} must be letters, digits or '_' (give NAME=FILE)"));
    }
    if name.contains('*') || !matches!(Member::from_name(&name), Member::Linear(_)) {
        return Err(format!("{name:?} is a reserved member name; give another with NAME=FILE"));
    }
    Ok((name, path))
}

/// Which storage type a tensor gets: matrices are quantized when their rows
/// split into whole blocks; vectors (biases, norms) stay f32.
fn storage_type(t: &Tensor, quant: Quant) -> GgmlDType {
    match (quant, t.rank()) {
        (_, r) if r < 2 => GgmlDType::F32,
        (Quant::F32, _) => GgmlDType::F32,
        (Quant::F16, _) => GgmlDType::F16,
        (Quant::Q8_0, _) => {
            let cols = t.dims()[t.rank() - 1];
            if cols.is_multiple_of(GgmlDType::Q8_0.block_size()) { GgmlDType::Q8_0 } else { GgmlDType::F16 }
        }
    }
}

/// A run's best weights (`run_folder::RunWeights`) with the 8-bit
/// encoder's input smoothing, once calibrated.
struct RunWeights {
    run: RunFile,
    weights: HashMap<String, Tensor>,
    tok_json: String,
    /// The int8 kernels' input smoothing per linear layer (8-bit exports).
    smoothing: Vec<(String, Vec<f32>)>,
    /// The calibration's migration strength and number of texts.
    smoothed_on: (f64, usize),
}

impl RunWeights {
    fn load(run_dir: &Path) -> Result<Self> {
        let run_folder::RunWeights { file: run, weights, tokenizer_json: tok_json, .. } =
            run_folder::RunWeights::load(run_dir)?;
        Ok(Self { run, weights, tok_json, smoothing: Vec::new(), smoothed_on: (0.0, 0) })
    }

    /// Calibrates the input smoothing of the 8-bit encoder on up to
    /// [`CALIBRATION_PRODUCTS`] validation products spread over all validation splits.
    fn calibrate_smoothing(&mut self, validation: &[Product], alpha: f64) -> Result<()> {
        let items = crate::data::spread(validation, CALIBRATION_PRODUCTS);
        if items.is_empty() {
            return Ok(());
        }
        let exact = Estimator::from_bytes(&model_bytes(self, Quant::F32, None)?)?;
        self.smoothing = calibrate(&exact, &items, alpha)?;
        self.smoothed_on = (alpha, items.len());
        println!("int8 input smoothing: alpha {alpha}, calibrated on {} validation products", items.len());
        Ok(())
    }
}

/// Validation products the int8 input smoothing is calibrated on.
const CALIBRATION_PRODUCTS: usize = 512;

/// A writer holding a run's encoder and head (kind `minilm`), quantized.
fn encoder_writer(rw: &RunWeights, quant: Quant) -> Result<ModelWriter> {
    let RunWeights { run, weights, tok_json, .. } = rw;
    let mut w = ModelWriter::new("minilm");
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for name in names {
        let t = weights[name].to_dtype(DType::F32)?;
        w.add_tensor(name, QTensor::quantize(&t, storage_type(&t, quant))?);
    }
    if quant == Quant::Q8_0 {
        for (name, s) in &rw.smoothing {
            w.add_f32(&pricer::bert::smoothing_name(name), s)?;
        }
        if !rw.smoothing.is_empty() {
            w.set_f64(keys::SMOOTH_ALPHA, rw.smoothed_on.0).set_u32(keys::SMOOTH_TEXTS, rw.smoothed_on.1 as u32);
        }
    }
    w.set_str(keys::BERT_CONFIG, &serde_json::to_string(&run.bert)?)
        .set_f64(keys::TARGET_MEAN, run.state.target_mean)
        .set_f64(keys::TARGET_STD, run.state.target_std)
        .set_f32s(keys::QUANTILES, &QUANTILES.map(|q| q as f32))
        .set_str(keys::QUANT, &format!("{quant:?}").to_lowercase())
        .set_str(keys::TRAIN_COMMAND, &run.config.command)
        .set_str(keys::BASE, &run.config.base.display().to_string())
        .set_f64(keys::BEST_EPOCH, run.state.best_epoch.unwrap_or(0) as f64)
        .set_f64(keys::BEST_VAL_MAE, run.state.best_val_mae.unwrap_or(f64::NAN));
    if let Some(soup) = &run.soup {
        let kept: Vec<String> =
            soup.ingredients.iter().filter(|i| i.kept).map(|i| i.run.display().to_string()).collect();
        w.set_str(keys::SOUP_OF, &kept.join(" "));
    }
    Prep { max_tokens: run.config.max_tokens, tokenizer: Some(pricer::TextTokenizer::from_json(tok_json)?) }
        .write(&mut w);
    Ok(w)
}

/// The encoder's file bytes with `stack` (if any) added.
fn model_bytes(rw: &RunWeights, quant: Quant, stack: Option<&Stack>) -> Result<Vec<u8>> {
    let mut w = encoder_writer(rw, quant)?;
    if let Some(stack) = stack {
        w.set_str(pricer::model_file::keys::KIND, "stack");
        stack.write(&mut w)?;
    }
    Ok(w.to_bytes()?)
}

pub fn run(args: &ExportArgs) -> Result<()> {
    check_output(&args.out)?;
    // Read first: a missing recipe is refused before minutes of work.
    let recipe = match &args.recipe {
        Some(p) => Some((
            p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read recipe {}", p.display()))?,
        )),
        None => None,
    };
    let mut rw = RunWeights::load(&args.run)?;
    let ds = load_data_set(&rw.run.config.data, rw.run.config.holdout, rw.run.config.seed, false)?;
    if let Some(alpha) = args.smooth_alpha {
        if !(0.0..=1.0).contains(&alpha) {
            bail!("--smooth-alpha {alpha}: must lie in 0..=1");
        }
        if args.quant != Quant::Q8_0 {
            bail!("--smooth-alpha is for q8_0 exports (the int8 kernels)");
        }
        rw.calibrate_smoothing(&ds.validation, alpha)?;
    }
    let members = Members::of(args)?;
    let stacked = members.members != [Member::Encoder];
    let (stack, fitted) = if stacked {
        let (stack, fitted) = build_stack(&rw, args, &ds, members)?;
        (Some(stack), fitted)
    } else {
        (None, Fitted::default())
    };

    // Provenance, range and test metrics come from the exported file itself.
    let mut w = ModelWriter::from_file(&ModelFile::from_bytes(&model_bytes(&rw, args.quant, stack.as_ref())?)?)?;
    match &fitted.validation_fit {
        Some(fit) => finish_with(&mut w, &ds, rw.run.config.seed, fit)?,
        None => finish(&mut w, &ds, rw.run.config.seed)?,
    }
    if fitted.validation_indexed > 0 {
        w.set_u32(keys::VALIDATION_INDEXED, fitted.validation_indexed as u32);
    }
    if !args.refit.is_empty() {
        w.set_str(keys::REFITTED, &args.refit.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "));
    }
    if let Some((name, text)) = &recipe {
        w.set_str(keys::RECIPE, name).set_str(keys::RECIPE_TEXT, text).set_str(keys::RECIPE_SHA256, &sha256_hex(text));
    }
    let mut w_bytes = w.to_bytes()?;
    let test_items: Vec<Product> = ds.tests.iter().flat_map(|s| s.products.iter().cloned()).collect();
    if args.quant != Quant::F32 && !test_items.is_empty() {
        w_bytes = with_quant_gap(&rw, args.quant, &w_bytes, &test_items)?;
    }
    write_atomic(&args.out, &w_bytes)?;
    report_written(&args.out, &w_bytes)
}

/// The stack's members as the arguments name them, with the linear members'
/// models and their refitted replacements, checked.
struct Members {
    members: Vec<Member>,
    linear: Vec<(String, LinearModel)>,
    refits: Vec<(String, LinearModel)>,
}

impl Members {
    fn of(args: &ExportArgs) -> Result<Self> {
        let mut members: Vec<Member> = Vec::new();
        if !args.no_head {
            members.push(Member::Encoder);
        }
        if args.knn > 0 {
            members.push(Member::Neighbours);
        }
        let mut linear = Vec::new();
        for (name, path) in &args.with {
            if linear.iter().any(|(n, _)| n == name) {
                bail!("--with {name}=...: the name is used twice");
            }
            members.push(Member::Linear(name.clone()));
            linear.push((name.clone(), read_linear(path)?.0));
        }
        let mut refits = Vec::new();
        for (name, path) in &args.refit {
            if !args.with.iter().any(|(n, _)| n == name) {
                bail!("--refit {name}=...: no --with member is named {name:?}");
            }
            if refits.iter().any(|(n, _)| n == name) {
                bail!("--refit {name}=...: the name is used twice");
            }
            let (lin, file) = read_linear(path)?;
            if file.u32(keys::VALIDATION_LEARNT).is_err() {
                println!("note: --refit {name}={}: not made by `train --with-validation`", path.display());
            }
            refits.push((name.clone(), lin));
        }
        if args.interactions {
            let gated: Vec<Member> = members.iter().map(|m| Member::WithDetails(Box::new(m.clone()))).collect();
            members.extend(gated);
        }
        if args.has_details {
            members.push(Member::HasDetails);
        }
        if members.is_empty() || members == [Member::HasDetails] {
            bail!("--no-head leaves nothing to estimate with: add --knn K or --with FILE");
        }
        if args.index_validation && args.knn == 0 {
            bail!("--index-validation adds to the neighbour index: give --knn K too");
        }
        Ok(Self { members, linear, refits })
    }
}

/// What the validation items did once the blend was fitted.
#[derive(Default)]
struct Fitted {
    /// The range and validation figures, measured before the validation
    /// items were indexed or learnt from.
    validation_fit: Option<ValidationFit>,
    /// Validation items added to the neighbour index.
    validation_indexed: usize,
}

/// The stack: the neighbour index, the blend fitted on validation items, the
/// likely range's scale; then the validation items indexed and the refits
/// put in place, as asked.
fn build_stack(rw: &RunWeights, args: &ExportArgs, ds: &DataSet, m: Members) -> Result<(Stack, Fitted)> {
    let mut index_items = None;
    let knn = if args.knn > 0 {
        let (vectors, log_prices, dim) = neighbour_vectors(rw, args, ds)?;
        let knn = neighbour_index(args, &vectors, log_prices.clone(), dim, &ds.train)?;
        index_items = Some((vectors, log_prices, dim));
        Some(knn)
    } else {
        None
    };
    let mut stack = Stack {
        neural: None,
        knn,
        own: None,
        linear: m.linear,
        weights: vec![0.0; m.members.len() + 1],
        members: m.members,
        band_scale: 1.0,
    };
    let validation_vectors = fit_stack(&mut stack, rw, args, ds)?;
    let est = Estimator::from_bytes(&model_bytes(rw, args.quant, Some(&stack))?)?;
    // Before the index holds the validation items, which would find themselves.
    stack.band_scale = fit_band_scale(&est, &ds.validation, &stack)?;
    println!(
        "likely range: the encoder's 10-90% band scaled by {:.3} (80% of validation prices inside)",
        stack.band_scale
    );
    let mut fitted = Fitted::default();
    if args.index_validation || !m.refits.is_empty() {
        // The band scale moves no estimate, so the file the scale was fitted with serves.
        fitted.validation_fit = Some(ValidationFit::of(&mut ModelWriter::from_file(&est.file)?, &ds.validation)?);
    }
    if args.index_validation
        && let Some((mut vectors, mut log_prices, dim)) = index_items
    {
        let validation: Vec<Product> = ds.validation_splits.iter().flat_map(|s| s.products.iter().cloned()).collect();
        vectors.extend(validation_vectors);
        log_prices.extend(validation.iter().map(|p| p.price.unwrap_or(0.0).ln_1p() as f32));
        let products: Vec<Product> = ds.train.iter().chain(&validation).cloned().collect();
        stack.knn = Some(neighbour_index(args, &vectors, log_prices, dim, &products)?);
        fitted.validation_indexed = validation.len();
        println!("neighbour index: {} training and {} validation items", ds.train.len(), validation.len());
    }
    for (name, lin) in m.refits {
        let Some(slot) = stack.linear.iter_mut().find(|(n, _)| *n == name) else {
            bail!("--refit {name}: no --with member is named so")
        };
        println!("member {name}: refitted on training and validation items");
        slot.1 = lin;
    }
    Ok((stack, fitted))
}

/// The file with its 8-bit vs f32 difference on the test items recorded
/// (the same file with an f32 encoder as the reference; blend and index unchanged).
fn with_quant_gap(rw: &RunWeights, quant: Quant, bytes: &[u8], test_items: &[Product]) -> Result<Vec<u8>> {
    let quantized = Estimator::from_bytes(bytes)?;
    let mut exact_w = ModelWriter::from_file(&ModelFile::from_bytes(&model_bytes(rw, Quant::F32, None)?)?)?;
    for (k, v) in &quantized.file.metadata {
        exact_w.set(k, v.clone());
    }
    for (name, t) in &quantized.file.tensors {
        if !name.starts_with("embeddings.") && !name.starts_with("encoder.") && !name.starts_with("head.") {
            exact_w.add_tensor(name, pricer::model_file::copy_tensor(t)?);
        }
    }
    let exact = Estimator::from_bytes(&exact_w.to_bytes()?)?;
    let (mean, max) = relative_difference(&exact, &quantized, test_items)?;
    println!("{quant:?} vs f32 estimates on the test splits: mean {:.3}%, max {:.3}%", 100.0 * mean, 100.0 * max);
    let mut w = ModelWriter::from_file(&quantized.file)?;
    w.set_f64(keys::QUANT_MEAN_REL_DIFF, mean).set_f64(keys::QUANT_MAX_REL_DIFF, max);
    Ok(w.to_bytes()?)
}

/// The quantized encoder's pooled vectors of the training items (what the
/// neighbour index holds), with their log prices and width. Embedding every
/// training item is most of an export's time, so the vectors are kept in the
/// run directory, keyed by the weights, the quantization and the data, and
/// reused by the next export of the same run.
fn neighbour_vectors(rw: &RunWeights, args: &ExportArgs, ds: &DataSet) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let key = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut names: Vec<&String> = rw.weights.keys().collect();
        names.sort();
        for name in names {
            h.update(name.as_bytes());
            for v in rw.weights[name].flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                h.update(v.to_le_bytes());
            }
        }
        h.update(format!("{:?}", args.quant).as_bytes());
        for (name, s) in &rw.smoothing {
            h.update(name.as_bytes());
            s.iter().for_each(|v| h.update(v.to_le_bytes()));
        }
        h.update(crate::data::sha256_files(&ds.sources)?.as_bytes());
        format!("{:x}", h.finalize())
    };
    let cache = args.run.join(format!("neighbours-{}.safetensors", format!("{:?}", args.quant).to_lowercase()));
    if let Ok(t) = candle_core::safetensors::load(&cache, &Device::Cpu)
        && t.get("key").and_then(|k| k.to_vec1::<u8>().ok()).is_some_and(|k| k == key.as_bytes())
        && let (Some(v), Some(p)) = (t.get("vectors"), t.get("log_prices"))
    {
        println!("neighbour index: the training items' vectors from {}", cache.display());
        let dim = v.dim(1)?;
        return Ok((v.flatten_all()?.to_vec1()?, p.to_vec1()?, dim));
    }
    println!("embedding {} training items for the neighbour index", ds.train.len());
    let encoder = Estimator::from_bytes(&model_bytes(rw, args.quant, None)?)?;
    let (vectors, dim) = pooled_vectors(&encoder, &ds.train)?;
    let log_prices: Vec<f32> = ds.train.iter().map(|p| p.price.unwrap_or(0.0).ln_1p() as f32).collect();
    let n = log_prices.len();
    let tensors: HashMap<String, Tensor> = [
        ("vectors".to_string(), Tensor::from_slice(&vectors, (n, dim), &Device::Cpu)?),
        ("log_prices".to_string(), Tensor::from_slice(&log_prices, n, &Device::Cpu)?),
        ("key".to_string(), Tensor::from_slice(key.as_bytes(), key.len(), &Device::Cpu)?),
    ]
    .into_iter()
    .collect();
    // A cache: failing to keep it costs the next export time, nothing else.
    let tmp = cache.with_extension("tmp");
    if candle_core::safetensors::save(&tensors, &tmp).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    Ok((vectors, log_prices, dim))
}

/// A `pricer train` linear model file (a `--with` member), and the file.
fn read_linear(path: &Path) -> Result<(LinearModel, ModelFile)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ModelFile::from_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))?;
    let lin = LinearModel::read(&file, "").with_context(|| format!("{} is not a linear model", path.display()))?;
    Ok((lin, file))
}

/// The neighbour member's index of `products` (their pooled `vectors`, rows
/// of `dim`, and log prices), with titles and categories so an estimate can
/// show its comparables.
fn neighbour_index(
    args: &ExportArgs,
    vectors: &[f32],
    log_prices: Vec<f32>,
    dim: usize,
    products: &[Product],
) -> Result<Knn> {
    let labels = ItemLabels::new(products.iter().map(|p| (p.title.as_str(), p.category.as_deref())));
    Ok(Knn::new(vectors, log_prices, dim, args.knn, args.knn_temperature)?
        .with_vote(args.knn_vote)
        .with_labels(labels)?)
}

/// Member values of the validation items (in the stack's member order) and
/// their log prices, for the items the blend is fitted on.
struct Design {
    rows: Vec<Vec<f64>>,
    y: Vec<f64>,
    /// The validation split of each row.
    split: Vec<String>,
}

/// Fits the blend weights by least squares on validation items and prints
/// each member alone and the blend without it (both 5-fold cross-validated).
/// Returns the validation items' pooled vectors (in `validation_splits`
/// order), what an index of them holds.
fn fit_stack(stack: &mut Stack, rw: &RunWeights, args: &ExportArgs, ds: &DataSet) -> Result<Vec<f32>> {
    let bytes = model_bytes(rw, args.quant, Some(stack))?;
    let est = Estimator::from_bytes(&bytes)?;
    let Predictor::Stack(s) = &est.predictor else { unreachable!("written as a stack") };
    let mut design = Design { rows: vec![], y: vec![], split: vec![] };
    let mut pooled = Vec::new();
    for split in &ds.validation_splits {
        let name = if split.name.is_empty() { "validation".to_string() } else { split.name.clone() };
        for (p, v) in split.products.iter().zip(est.member_values(&split.products)) {
            let v = v?;
            pooled.extend(v.pooled.unwrap_or_default());
            design.rows.push(v.values);
            design.y.push(p.price.unwrap_or(0.0).ln_1p());
            design.split.push(name.clone());
        }
    }
    let fit_rows: Vec<usize> =
        (0..design.rows.len()).filter(|&i| args.fit_on.is_empty() || args.fit_on.contains(&design.split[i])).collect();
    if fit_rows.len() < 3 * (s.members.len() + 1) {
        bail!(
            "{} validation items to fit {} blend weights on: too few (check --fit-on {:?})",
            fit_rows.len(),
            s.members.len() + 1,
            args.fit_on
        );
    }
    let all: Vec<usize> = (0..s.members.len()).collect();
    stack.weights = least_squares(&design, &fit_rows, &all);
    let names: Vec<String> = s.members.iter().map(Member::name).collect();
    let shown: Vec<String> = names
        .iter()
        .zip(&stack.weights)
        .map(|(n, w)| format!("{w:.3} x {n}"))
        .chain([format!("{:.3}", stack.weights[names.len()])])
        .collect();
    println!("blend in log space: {}", shown.join(" + "));

    // Each member alone, the blend without it, the whole blend; cross-validated.
    let mut splits: Vec<String> = design.split.clone();
    splits.dedup();
    let header: Vec<String> = splits.iter().map(|s| format!("{s} MAE / RMSLE")).collect();
    println!("| members (5-fold on validation) | {} |", header.join(" | "));
    println!("| --- |{}", " ---: |".repeat(splits.len()));
    let row = |label: String, cols: &[usize]| {
        let pred = cross_validated(&design, &fit_rows, cols);
        let cells: Vec<String> = splits
            .iter()
            .map(|sp| {
                let pairs: Vec<(f64, f64)> = (0..design.y.len())
                    .filter(|&i| &design.split[i] == sp)
                    .map(|i| (pred[i].exp_m1().max(0.0), design.y[i].exp_m1()))
                    .collect();
                Summary::of(&pairs).map(|s| format!("${:.2} / {:.3}", s.mae, s.rmsle)).unwrap_or_default()
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    // A member and its gated copy come and go together.
    let of = |base: &Member| -> Vec<usize> { (0..names.len()).filter(|&j| s.members[j].base() == base).collect() };
    let bases: Vec<&Member> = s.members.iter().filter(|m| !matches!(m, Member::WithDetails(_))).collect();
    for base in &bases {
        if **base != Member::HasDetails {
            row(format!("{} alone", base.name()), &of(base));
        }
    }
    if bases.len() > 1 {
        for base in &bases {
            let rest: Vec<usize> = all.iter().copied().filter(|&j| s.members[j].base() != *base).collect();
            row(format!("all but {}", base.name()), &rest);
        }
    }
    if s.members.iter().any(|m| matches!(m, Member::WithDetails(_))) {
        let plain: Vec<usize> =
            all.iter().copied().filter(|&j| !matches!(s.members[j], Member::WithDetails(_))).collect();
        row("all, without the has-details interactions".into(), &plain);
    }
    row("all".into(), &all);
    Ok(pooled)
}

/// Least-squares weights of the columns `cols` (others get 0) and the bias,
/// over the rows `rows`.
fn least_squares(d: &Design, rows: &[usize], cols: &[usize]) -> Vec<f64> {
    let x: Vec<Vec<(u32, f32)>> = rows
        .iter()
        .map(|&i| cols.iter().enumerate().map(|(j, &c)| (j as u32, d.rows[i][c] as f32)).collect())
        .collect();
    let y: Vec<f64> = rows.iter().map(|&i| d.y[i]).collect();
    let (w, b) = ridge(&x, cols.len(), &y, 1e-6);
    let mut out = vec![0.0; d.rows.first().map_or(0, |r| r.len()) + 1];
    for (j, &c) in cols.iter().enumerate() {
        out[c] = w[j];
    }
    *out.last_mut().expect("bias slot") = b;
    out
}

/// Predictions for every row, each from a blend fitted on the fit rows of the
/// other four folds (rows outside `fit_rows` use all five).
fn cross_validated(d: &Design, fit_rows: &[usize], cols: &[usize]) -> Vec<f64> {
    let folds: Vec<Vec<f64>> = (0..5)
        .map(|k| {
            let train: Vec<usize> = fit_rows.iter().copied().filter(|&i| i % 5 != k).collect();
            least_squares(d, &train, cols)
        })
        .collect();
    let full = least_squares(d, fit_rows, cols);
    (0..d.rows.len())
        .map(|i| {
            let w = if fit_rows.contains(&i) { &folds[i % 5] } else { &full };
            let n = d.rows[i].len();
            d.rows[i].iter().zip(w).map(|(x, w)| x * w).sum::<f64>() + w[n]
        })
        .collect()
}

/// The factor on the encoder's quantile band that puts 80% of validation
/// prices inside the likely range (1 when the stack has no encoder).
fn fit_band_scale(est: &Estimator, validation: &[Product], stack: &Stack) -> Result<f64> {
    let mut ratios = Vec::new();
    for (p, v) in validation.iter().zip(est.member_values(validation)) {
        let v = v?;
        let Some(o) = v.head else { return Ok(1.0) };
        let point = stack.blend(&v.values);
        let truth = p.price.unwrap_or(0.0).ln_1p();
        // The smallest scale that puts this price inside the band.
        let half = if truth < point { o[0] - o[1].min(o[3]) } else { o[1].max(o[3]) - o[0] };
        ratios.push((truth - point).abs() / half.max(1e-6));
    }
    if ratios.is_empty() {
        return Ok(1.0);
    }
    Ok(quantile(&mut ratios, 0.8))
}

/// Mean and largest |a - b| / a between two models' estimates.
fn relative_difference(a: &Estimator, b: &Estimator, items: &[Product]) -> Result<(f64, f64)> {
    let (mut sum, mut max) = (0.0, 0.0f64);
    for (x, y) in a.estimate_batch(items).into_iter().zip(b.estimate_batch(items)) {
        let (x, y) = (x?.price, y?.price);
        let d = (x - y).abs() / x.abs().max(1e-9);
        sum += d;
        max = max.max(d);
    }
    Ok((sum / items.len().max(1) as f64, max))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
