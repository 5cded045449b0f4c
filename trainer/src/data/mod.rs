//! Loading products from files: readers with per-line error reports, curated
//! data sets (a `curate` output directory or a single file with a holdout).

pub mod texts;

use anyhow::{Context, Result, bail};
use pricer::readers::{Format, Prices, read_products_as};
use pricer::{Product, SourceFormat, TextTokenizer};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One curated item: the line format of train/validation/test JSONL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CuratedItem {
    pub title: String,
    /// `None` when the source names no category (and no --category was given).
    pub category: Option<String>,
    pub price: f64,
    /// The prepared model input.
    pub text: String,
    pub details: String,
    /// How the source wrote the record, before preparation (`llm_summary`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<SourceFormat>,
    /// Tokens in `text`, known from its preparation (for the report; not written).
    #[serde(skip)]
    pub tokens: Option<usize>,
}

/// What happened to the records of a run, by reason.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tally {
    pub read: u64,
    pub kept: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl Tally {
    pub fn drop(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_default() += 1;
    }

    pub fn summary(&self) -> String {
        let mut s = format!("read {}, kept {}", self.read, self.kept);
        if !self.dropped.is_empty() {
            let parts: Vec<String> = self.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!(", dropped: {}", parts.join(", ")));
        }
        s
    }
}

/// Streams products from `path`, reporting malformed lines on stderr as
/// `file:line: reason` and counting them under "malformed" (fatal when `strict`).
pub fn for_each_product(
    path: &Path,
    strict: bool,
    tally: &mut Tally,
    f: impl FnMut(Product, &mut Tally) -> Result<()>,
) -> Result<()> {
    for_each_product_as(path, strict, Prices::DecimalPoint, tally, f)
}

/// [`for_each_product`], prices written as text read as `prices` says.
pub fn for_each_product_as(
    path: &Path,
    strict: bool,
    prices: Prices,
    tally: &mut Tally,
    mut f: impl FnMut(Product, &mut Tally) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let format = Format::from_name(&path.to_string_lossy());
    let records = read_products_as(file, format, prices).with_context(|| format!("cannot read {}", path.display()))?;
    for record in records {
        tally.read += 1;
        match record {
            Ok(p) => f(p, tally)?,
            Err(e) => {
                if strict {
                    bail!("{}:{}: {} (--strict)", path.display(), e.line, e.reason);
                }
                eprintln!("{}:{}: {}; skipped", path.display(), e.line, e.reason);
                tally.drop("malformed");
            }
        }
    }
    Ok(())
}

/// A curate directory's test (or validation) split files, by split name.
pub fn split_files(dir: &Path, validation: bool) -> Result<Vec<(String, PathBuf)>> {
    let want = if validation { "validation" } else { "test" };
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().to_string();
            let (kind, split) = split_kind(&file)?;
            (kind == want).then(|| (if split.is_empty() { want.to_string() } else { split }, e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no {want} split ({want}.jsonl or {want}-NAME.jsonl)", dir.display());
    }
    Ok(files)
}

/// Mixes a seed and a counter into a new seed (splitmix64).
pub fn splitmix64(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads every product of `path` that has a price (malformed lines skipped
/// and reported unless `strict`).
pub fn priced_products(path: &Path, strict: bool) -> Result<(Vec<Product>, Tally)> {
    let mut tally = Tally::default();
    let mut out = Vec::new();
    for_each_product(path, strict, &mut tally, |p, t| {
        if p.price.is_some() {
            t.kept += 1;
            out.push(p);
        } else {
            t.drop("no price");
        }
        Ok(())
    })?;
    Ok((out, tally))
}

/// The preparation a data set was curated with (`curation.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PrepSettings {
    pub max_tokens: usize,
    /// True when a `tokenizer.json` sits beside the data and counted the budget.
    pub tokenizer: bool,
}

/// A named part of a data set (`catalog`, `course`; empty for the one unnamed split).
#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    pub products: Vec<Product>,
}

/// Which split a file of a `curate` directory holds, from its name:
/// `train.jsonl`, `validation[-NAME].jsonl`, `test[-NAME].jsonl`.
pub fn split_kind(file_name: &str) -> Option<(&'static str, String)> {
    let stem = file_name.strip_suffix(".jsonl")?;
    if stem == "train" {
        return Some(("train", String::new()));
    }
    for kind in ["validation", "test"] {
        if stem == kind {
            return Some((kind, String::new()));
        }
        if let Some(name) = stem.strip_prefix(kind).and_then(|r| r.strip_prefix('-')) {
            return Some((kind, name.to_string()));
        }
    }
    None
}

/// Train, validation and (when there are any) test products. Validation and
/// test may come in named splits, one per distribution (`pricer curate --test`).
pub struct DataSet {
    pub train: Vec<Product>,
    /// Every validation item, of all splits.
    pub validation: Vec<Product>,
    /// The validation items again, by split.
    pub validation_splits: Vec<Split>,
    pub tests: Vec<Split>,
    /// Files the data came from, hashed into provenance.
    pub sources: Vec<PathBuf>,
    /// The data set's name for the model card: the directory's or the file's
    /// name, never the machine's path.
    pub name: String,
    pub prep: PrepSettings,
    pub tokenizer: Option<TextTokenizer>,
}

/// Loads a `curate` directory, or splits a single file with a seeded holdout
/// share for validation.
pub fn load_data_set(path: &Path, holdout: f64, seed: u64, strict: bool) -> Result<DataSet> {
    if path.is_dir() {
        let mut files: Vec<(&'static str, String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))? {
            let file_name = entry?.file_name().to_string_lossy().to_string();
            if let Some((kind, name)) = split_kind(&file_name) {
                files.push((kind, name, path.join(file_name)));
            }
        }
        files.sort();
        let mut train = Vec::new();
        let mut validation_splits = Vec::new();
        let mut tests = Vec::new();
        for (kind, name, file) in &files {
            let products = priced_products(file, strict)?.0;
            match *kind {
                "train" => train = products,
                "validation" => validation_splits.push(Split { name: name.clone(), products }),
                _ => tests.push(Split { name: name.clone(), products }),
            }
        }
        if train.is_empty() {
            bail!("{} has no train.jsonl with priced items (make one with `pricer curate`)", path.display());
        }
        let validation = validation_splits.iter().flat_map(|s| s.products.iter().cloned()).collect();
        let curation = path.join("curation.json");
        let prep: PrepSettings = if curation.exists() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&curation)?)
                .with_context(|| format!("{} is not JSON", curation.display()))?;
            serde_json::from_value(v["prep"].clone())
                .with_context(|| format!("{} has no valid `prep` section", curation.display()))?
        } else {
            PrepSettings { max_tokens: pricer::text::DEFAULT_MAX_TOKENS, tokenizer: false }
        };
        let tokenizer = if prep.tokenizer { Some(load_tokenizer(&path.join("tokenizer.json"))?) } else { None };
        let sources = files.into_iter().map(|(_, _, p)| p).collect();
        Ok(DataSet { train, validation, validation_splits, tests, sources, name: file_name(path), prep, tokenizer })
    } else {
        let (mut all, _) = priced_products(path, strict)?;
        if all.len() < 2 {
            bail!("{} holds fewer than 2 priced items", path.display());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        all.shuffle(&mut rng);
        let n_val = ((all.len() as f64 * holdout).round() as usize).clamp(1, all.len() - 1);
        let validation = all.split_off(all.len() - n_val);
        Ok(DataSet {
            train: all,
            validation_splits: vec![Split { name: String::new(), products: validation.clone() }],
            validation,
            tests: vec![],
            sources: vec![path.to_path_buf()],
            name: file_name(path),
            prep: PrepSettings { max_tokens: pricer::text::DEFAULT_MAX_TOKENS, tokenizer: false },
            tokenizer: None,
        })
    }
}

/// The last part of `path` (`data/all/` gives `all`).
fn file_name(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    abs.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
}

pub fn load_tokenizer(path: &Path) -> Result<TextTokenizer> {
    let json = std::fs::read_to_string(path).with_context(|| format!("cannot read tokenizer {}", path.display()))?;
    TextTokenizer::from_json(&json).with_context(|| format!("in {}", path.display()))
}

/// SHA-256 of the files' bytes, in order, as hex.
pub fn sha256_files(paths: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in paths {
        let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        std::io::copy(&mut f, &mut h)?;
    }
    Ok(format!("{:x}", h.finalize()))
}

/// At most `n` of `items` at an even stride over them, so that a file of
/// several splits, catalogues or sources keeps each one's share.
pub fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    items.iter().step_by(items.len().div_ceil(n.max(1)).max(1)).cloned().collect()
}

/// Writes `bytes` to `path` atomically: a temporary file, then a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = temp_beside(path);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        std::fs::remove_file(&tmp).ok();
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// How a command's `--decimal-comma` flag reads prices.
pub fn prices(decimal_comma: bool) -> Prices {
    if decimal_comma { Prices::DecimalComma } else { Prices::DecimalPoint }
}

/// A temporary name in the target's folder (a rename stays on one file system).
fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Checks, before any work, that `path` can be written as [`write_atomic`]
/// will: its folder is made if missing, and a file is written there and
/// removed. A mistyped or read-only output is then said in a second, not
/// after minutes of work.
pub fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a folder", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    }
    let probe = temp_beside(path);
    std::fs::write(&probe, b"").with_context(|| format!("cannot write beside {}", path.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_files_are_told_apart_by_name() {
        assert_eq!(split_kind("train.jsonl"), Some(("train", String::new())));
        assert_eq!(split_kind("validation.jsonl"), Some(("validation", String::new())));
        assert_eq!(split_kind("test-course.jsonl"), Some(("test", "course".into())));
        assert_eq!(split_kind("validation-catalog.jsonl"), Some(("validation", "catalog".into())));
        assert_eq!(split_kind("testing.jsonl"), None);
        assert_eq!(split_kind("curation.json"), None);
        assert_eq!(split_kind("train.jsonl.tmp"), None);
    }
}
