//! Loading products from files: readers with per-line error reports, curated
//! data sets (a `curate` output directory or a single file with a holdout).

use anyhow::{Context, Result, bail};
use pricer::readers::{Format, read_products};
use pricer::{Product, TextTokenizer};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

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
    mut f: impl FnMut(Product, &mut Tally) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let format = Format::from_name(&path.to_string_lossy());
    let records = read_products(file, format).with_context(|| format!("cannot read {}", path.display()))?;
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

/// Reads every product of `path` that has a price.
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

/// Train, validation and (when there is one) test products.
pub struct DataSet {
    pub train: Vec<Product>,
    pub validation: Vec<Product>,
    pub test: Vec<Product>,
    /// Files the data came from, hashed into provenance.
    pub sources: Vec<PathBuf>,
    pub prep: PrepSettings,
    pub tokenizer: Option<TextTokenizer>,
}

/// Loads a `curate` directory, or splits a single file with a seeded holdout
/// share for validation.
pub fn load_data_set(path: &Path, holdout: f64, seed: u64, strict: bool) -> Result<DataSet> {
    if path.is_dir() {
        let read = |name: &str| -> Result<Vec<Product>> {
            let p = path.join(name);
            if p.exists() { Ok(priced_products(&p, strict)?.0) } else { Ok(vec![]) }
        };
        let train = read("train.jsonl")?;
        if train.is_empty() {
            bail!("{} has no train.jsonl with priced items (make one with `pricer curate`)", path.display());
        }
        let validation = read("validation.jsonl")?;
        let test = read("test.jsonl")?;
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
        let sources = ["train.jsonl", "validation.jsonl", "test.jsonl"]
            .iter()
            .map(|n| path.join(n))
            .filter(|p| p.exists())
            .collect();
        Ok(DataSet { train, validation, test, sources, prep, tokenizer })
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
            validation,
            test: vec![],
            sources: vec![path.to_path_buf()],
            prep: PrepSettings { max_tokens: pricer::text::DEFAULT_MAX_TOKENS, tokenizer: false },
            tokenizer: None,
        })
    }
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

/// Writes `bytes` to `path` atomically: a temporary file, then a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}
