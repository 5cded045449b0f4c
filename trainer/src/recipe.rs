//! Recipes: one TOML file naming every step of a model (masked-word reading,
//! fine-tunes, their soup, the linear members, the export), and the plan
//! made from it: each step as the exact `pricer` command line it equals,
//! its output in the work folder keyed by a hash of its settings and inputs.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A recipe file, as written (`recipes/*.toml`). Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What the recipe is for, shown by `--plan`.
    #[serde(default)]
    pub description: String,
    /// The base encoder's folder (config.json, model.safetensors,
    /// tokenizer.json); `pricer build --base` overrides it.
    pub base: Spanned<String>,
    /// Masked-word reading of product texts before the fine-tunes (optional).
    pub mlm: Option<Mlm>,
    /// Fine-tunes of the encoder with a price head (at least one).
    #[serde(default)]
    pub finetune: Vec<Finetune>,
    /// The fine-tunes' weights averaged into one encoder (optional).
    pub soup: Option<Soup>,
    /// Linear members of the stack (and baselines).
    #[serde(default)]
    pub linear: Vec<Linear>,
    pub export: Export,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mlm {
    /// Unpriced text files, by file name, given to `build --texts`; the data
    /// set's training items are read too (after them).
    #[serde(default)]
    pub texts: Vec<Spanned<String>>,
    pub epochs: usize,
    /// Read at most this many distinct texts (an even stride over all).
    pub limit: Option<usize>,
    pub max_tokens: usize,
    pub lr: Option<f64>,
    pub batch: Option<usize>,
    pub seed: Option<u64>,
    pub checkpoint_every: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finetune {
    pub name: Spanned<String>,
    /// `"base"` (the base encoder) or `"mlm"` (after masked-word reading).
    pub base: Spanned<String>,
    pub seed: Option<u64>,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub max_tokens: usize,
    pub checkpoint_every: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soup {
    /// Fine-tune names (two or more).
    pub of: Vec<Spanned<String>>,
    #[serde(default)]
    pub greedy: bool,
}

/// `train --kind` of a linear member.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LinearKind {
    Constant,
    Features,
    Bow,
    TfidfRidge,
    DetailsRidge,
}

impl LinearKind {
    fn name(self) -> &'static str {
        match self {
            LinearKind::Constant => "constant",
            LinearKind::Features => "features",
            LinearKind::Bow => "bow",
            LinearKind::TfidfRidge => "tfidf-ridge",
            LinearKind::DetailsRidge => "details-ridge",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    pub name: Spanned<String>,
    pub kind: LinearKind,
    pub alpha: Option<f64>,
    #[serde(default)]
    pub with_details: bool,
    #[serde(default)]
    pub sublinear: bool,
    pub min_df: Option<usize>,
    /// Also train its twin on the training and validation items
    /// (`train --with-validation`), for `export.refit`.
    #[serde(default)]
    pub with_validation: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    Softmax,
    Fade,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    Q8_0,
    F16,
    F32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// `"soup"` or a fine-tune's name: the encoder of the file.
    pub encoder: Spanned<String>,
    /// Linear members stacked with the encoder, by name.
    #[serde(default)]
    pub with: Vec<Spanned<String>>,
    /// Neighbours voting in the neighbour member (none without).
    pub knn: Option<usize>,
    pub vote: Option<Vote>,
    #[serde(default)]
    pub has_details: bool,
    #[serde(default)]
    pub interactions: bool,
    #[serde(default)]
    pub index_validation: bool,
    /// Members replaced by their with-validation twins once the blend is fitted.
    #[serde(default)]
    pub refit: Vec<Spanned<String>>,
    pub quant: Option<Quant>,
}

/// A recipe file read and checked: its text (recorded in the model file),
/// and its name (the file's stem).
pub struct RecipeFile {
    pub path: PathBuf,
    pub name: String,
    pub text: String,
    pub recipe: Recipe,
}

impl RecipeFile {
    /// Reads, parses and checks a recipe; every error names `file:line:column`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read recipe {}", path.display()))?;
        let recipe: Recipe = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| location(&text, s.start)).unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message().trim())
        })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let file = Self { path: path.to_path_buf(), name, text, recipe };
        file.check()?;
        Ok(file)
    }

    /// An error at a spanned value.
    fn at<T>(&self, value: &Spanned<T>, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}{}: {msg}", self.path.display(), location(&self.text, value.span().start))
    }

    /// What serde cannot check: names that refer to steps, and counts.
    fn check(&self) -> Result<()> {
        let r = &self.recipe;
        if r.finetune.is_empty() {
            bail!("{}: no [[finetune]]: a recipe fine-tunes the encoder at least once", self.path.display());
        }
        let mut names = HashSet::new();
        for f in &r.finetune {
            let n = f.name.get_ref();
            if !valid_name(n) {
                return Err(self.at(&f.name, format!("finetune name {n:?}: letters, digits, - and _ only")));
            }
            if !names.insert(n.clone()) {
                return Err(self.at(&f.name, format!("a second finetune named {n:?}")));
            }
            match f.base.get_ref().as_str() {
                "base" => {}
                "mlm" if r.mlm.is_some() => {}
                "mlm" => return Err(self.at(&f.base, "base = \"mlm\" needs an [mlm] table")),
                other => return Err(self.at(&f.base, format!("base {other:?}: expected \"base\" or \"mlm\""))),
            }
            if f.epochs == 0 || f.batch == 0 || f.max_tokens == 0 || f.lr.is_nan() || f.lr <= 0.0 {
                return Err(self.at(&f.name, "epochs, batch and max_tokens must be at least 1, lr above 0"));
            }
        }
        if let Some(m) = &r.mlm
            && (m.epochs == 0 || m.max_tokens == 0 || m.limit == Some(0) || m.batch == Some(0))
        {
            bail!("{}: [mlm]: epochs, max_tokens, limit and batch must be at least 1", self.path.display());
        }
        if let Some(s) = &r.soup {
            if s.of.len() < 2 {
                bail!("{}: [soup] of: two or more fine-tunes", self.path.display());
            }
            for n in &s.of {
                if !names.contains(n.get_ref()) {
                    return Err(self.at(n, format!("soup of {:?}: no [[finetune]] has that name", n.get_ref())));
                }
            }
        }
        let mut linear = HashMap::new();
        for l in &r.linear {
            let n = l.name.get_ref();
            if !valid_name(n) {
                return Err(self.at(&l.name, format!("linear name {n:?}: letters, digits, - and _ only")));
            }
            if linear.insert(n.clone(), l).is_some() || names.contains(n) {
                return Err(self.at(&l.name, format!("a second step named {n:?}")));
            }
        }
        let e = &r.export;
        match e.encoder.get_ref().as_str() {
            "soup" if r.soup.is_some() => {}
            "soup" => return Err(self.at(&e.encoder, "encoder = \"soup\" needs a [soup] table")),
            n if names.contains(n) => {}
            n => return Err(self.at(&e.encoder, format!("encoder {n:?}: expected \"soup\" or a finetune name"))),
        }
        for w in &e.with {
            match linear.get(w.get_ref()) {
                Some(l) if l.kind != LinearKind::Constant => {}
                Some(_) => return Err(self.at(w, "a constant is no stack member")),
                None => return Err(self.at(w, format!("with {:?}: no [[linear]] has that name", w.get_ref()))),
            }
        }
        for f in &e.refit {
            if !e.with.iter().any(|w| w.get_ref() == f.get_ref()) {
                return Err(self.at(f, format!("refit {:?}: not one of export.with", f.get_ref())));
            }
            if !linear.get(f.get_ref()).is_some_and(|l| l.with_validation) {
                return Err(self.at(f, format!("refit {:?}: its [[linear]] needs with_validation = true", f.get_ref())));
            }
        }
        if e.index_validation && e.knn.is_none() {
            bail!("{}: [export] index_validation needs knn", self.path.display());
        }
        Ok(())
    }

    /// SHA-256 of the recipe's text.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(self.text.as_bytes()))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `:line:column` (1-based) of a byte offset.
fn location(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    format!(":{line}:{column}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a build reads from and writes to.
pub struct Inputs {
    pub data: PathBuf,
    pub base: PathBuf,
    /// Text files for masked-word reading, as given to `--texts`.
    pub texts: Vec<PathBuf>,
    pub work: PathBuf,
    pub device: String,
}

/// What a step makes, and how to tell it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A masked-word run folder (`mlm.json`).
    MlmFolder,
    /// A fine-tuning run folder (`run.json`).
    RunFolder,
    /// A soup's run folder (`run.json`, written last).
    SoupFolder,
    /// A model file, written atomically.
    ModelFile,
}

/// One step of a plan.
pub struct Step {
    /// `mlm`, `finetune plain`, `soup`, `linear word`, `export`...
    pub label: String,
    /// The `pricer` arguments that make its output from scratch.
    pub args: Vec<String>,
    /// The hash of its settings and inputs (hex, 64 digits).
    pub key: String,
    pub out: PathBuf,
    pub output: Output,
}

impl Step {
    /// The command line, quoted for a POSIX shell where needed.
    pub fn command(&self) -> String {
        std::iter::once("pricer".to_string())
            .chain(self.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A fingerprint of files' contents (SHA-256 over names and bytes, hex).
pub fn fingerprint(paths: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        h.update(p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(&h.finalize()))
}

/// The files of a folder (not recursive), sorted: what its fingerprint covers.
fn folder_files(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the {what} folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("the {what} folder {} is empty", dir.display());
    }
    Ok(files)
}

/// Builds the plan: every step in order with its command, key and output.
/// Keys chain: a step's key covers its arguments with each input replaced by
/// that input's fingerprint (the data set's files, the base folder's files,
/// the texts) or by the key of the step that makes it, so a change anywhere
/// upstream changes every key below it.
pub fn plan(file: &RecipeFile, inputs: &Inputs) -> Result<Vec<Step>> {
    let r = &file.recipe;
    let p = Planner::new(file, inputs)?;
    // Masked-word reading is made first (the fine-tunes after it need its
    // output) and listed after the fine-tunes of the base encoder: the
    // card's order, and a first encoder sooner.
    let mut mlm = r.mlm.as_ref().map(|m| p.mlm(m)).transpose()?;
    let mlm_input = mlm.as_ref().map(|s| p.made_by(s));
    let mut steps = Vec::new();
    let mut runs: HashMap<String, Arg> = HashMap::new();
    let (from_base, from_mlm): (Vec<&Finetune>, Vec<&Finetune>) =
        r.finetune.iter().partition(|f| f.base.get_ref() != "mlm");
    for f in from_base.into_iter().chain(from_mlm) {
        let base = match (f.base.get_ref().as_str(), &mlm_input) {
            ("mlm", Some(made)) => {
                steps.extend(mlm.take());
                made.clone()
            }
            _ => p.base_arg(),
        };
        let step = p.finetune(f, base);
        runs.insert(f.name.get_ref().clone(), p.made_by(&step));
        steps.push(step);
    }
    // An mlm step that no fine-tune starts from still runs (its own figure).
    steps.extend(mlm);
    if let Some(s) = &r.soup {
        let step = p.soup(s, &runs);
        runs.insert("soup".into(), p.made_by(&step));
        steps.push(step);
    }
    let (mut members, mut twins) = (HashMap::new(), HashMap::new());
    for l in &r.linear {
        let step = p.linear(l, false);
        members.insert(l.name.get_ref().clone(), p.made_by(&step));
        steps.push(step);
        if l.with_validation {
            let step = p.linear(l, true);
            twins.insert(l.name.get_ref().clone(), p.made_by(&step));
            steps.push(step);
        }
    }
    steps.push(p.export(&r.export, &runs, &members, &twins));
    Ok(steps)
}

/// One argument of a step: as written, and as its key sees it (an input's
/// fingerprint or the key of the step that makes it; `None`: as written).
type Arg = (String, Option<String>);

fn lit(s: &str) -> Arg {
    (s.to_string(), None)
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// What every step of one plan shares: the recipe, the inputs and their fingerprints.
struct Planner<'a> {
    file: &'a RecipeFile,
    inputs: &'a Inputs,
    data_fp: String,
    base_fp: String,
}

impl<'a> Planner<'a> {
    fn new(file: &'a RecipeFile, inputs: &'a Inputs) -> Result<Self> {
        if !inputs.data.join("train.jsonl").is_file() {
            bail!(
                "{} is not a curate output folder (no train.jsonl): make one with `pricer curate`",
                inputs.data.display()
            );
        }
        let data_fp = fingerprint(&folder_files(&inputs.data, "data")?)?;
        let base_files: Vec<PathBuf> =
            ["config.json", "model.safetensors", "tokenizer.json"].iter().map(|f| inputs.base.join(f)).collect();
        if let Some(f) = base_files.iter().find(|f| !f.is_file()) {
            bail!(
                "the base encoder folder {} has no {} (scripts/fetch-minilm.sh makes one)",
                inputs.base.display(),
                f.display()
            );
        }
        Ok(Self { file, inputs, data_fp, base_fp: fingerprint(&base_files)? })
    }

    /// A step from its arguments (the output marked [`OUT`]): its key, and its
    /// output named `STEM-KEY.EXT` in the work folder.
    fn step(&self, label: String, out_name: &str, output: Output, args: Vec<Arg>) -> Step {
        let mut h = Sha256::new();
        h.update(label.as_bytes());
        for (arg, seen_as) in &args {
            h.update(b"\0");
            h.update(seen_as.as_deref().unwrap_or(arg).as_bytes());
        }
        let key = hex(&h.finalize());
        let (stem, ext) = match out_name.rsplit_once('.') {
            Some((s, e)) => (s, format!(".{e}")),
            None => (out_name, String::new()),
        };
        let out = self.inputs.work.join(format!("{stem}-{}{ext}", &key[..12]));
        let args = args.into_iter().map(|(a, _)| if a == OUT { show(&out) } else { a }).collect();
        Step { label, args, key, out, output }
    }

    /// The output of `step`, as a later step's input.
    fn made_by(&self, step: &Step) -> Arg {
        (show(&step.out), Some(format!("step:{}", step.key)))
    }

    fn data_arg(&self) -> Arg {
        (show(&self.inputs.data), Some(format!("data:{}", self.data_fp)))
    }

    fn base_arg(&self) -> Arg {
        (show(&self.inputs.base), Some(format!("base:{}", self.base_fp)))
    }

    fn device_args(&self) -> Vec<Arg> {
        if self.inputs.device == "cpu" { vec![] } else { vec![lit("--device"), lit(&self.inputs.device)] }
    }

    fn mlm(&self, m: &Mlm) -> Result<Step> {
        let mut args = vec![lit("lab"), lit("mlm"), lit("--base"), self.base_arg(), lit("--texts")];
        for t in &m.texts {
            let given = self
                .inputs
                .texts
                .iter()
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == *t.get_ref()))
                .ok_or_else(|| self.file.at(t, format!("mlm text {:?}: give its path with --texts", t.get_ref())))?;
            args.push((show(given), Some(format!("text:{}", fingerprint(std::slice::from_ref(given))?))));
        }
        args.extend([self.data_arg(), lit("--out"), lit(OUT)]);
        args.extend([lit("--epochs"), lit(&m.epochs.to_string()), lit("--max-tokens"), lit(&m.max_tokens.to_string())]);
        let optional = [
            ("--limit", m.limit.map(|v| v.to_string())),
            ("--lr", m.lr.map(format_float)),
            ("--batch", m.batch.map(|v| v.to_string())),
            ("--seed", m.seed.map(|v| v.to_string())),
            ("--checkpoint-every", m.checkpoint_every.map(|v| v.to_string())),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.extend([lit(flag), lit(&v)]);
            }
        }
        args.extend(self.device_args());
        Ok(self.step("mlm".into(), "mlm", Output::MlmFolder, args))
    }

    fn finetune(&self, f: &Finetune, base: Arg) -> Step {
        let mut args = vec![lit("train"), lit("--kind"), lit("minilm"), lit("--base"), base];
        args.extend([lit("--data"), self.data_arg(), lit("--out"), lit(OUT)]);
        if let Some(s) = f.seed {
            args.extend([lit("--seed"), lit(&s.to_string())]);
        }
        args.extend([
            lit("--epochs"),
            lit(&f.epochs.to_string()),
            lit("--lr"),
            lit(&format_float(f.lr)),
            lit("--batch"),
            lit(&f.batch.to_string()),
            lit("--max-tokens"),
            lit(&f.max_tokens.to_string()),
        ]);
        if let Some(v) = f.checkpoint_every {
            args.extend([lit("--checkpoint-every"), lit(&v.to_string())]);
        }
        args.extend(self.device_args());
        let name = f.name.get_ref();
        self.step(format!("finetune {name}"), &format!("ft-{name}"), Output::RunFolder, args)
    }

    fn soup(&self, s: &Soup, runs: &HashMap<String, Arg>) -> Step {
        let mut args = vec![lit("lab"), lit("soup")];
        args.extend(s.of.iter().map(|n| runs[n.get_ref()].clone()));
        args.extend([lit("--out"), lit(OUT)]);
        if s.greedy {
            args.push(lit("--greedy"));
        }
        args.extend(self.device_args());
        self.step("soup".into(), "soup", Output::SoupFolder, args)
    }

    /// A linear member, or (`twin`) the same trained on training and validation items.
    fn linear(&self, l: &Linear, twin: bool) -> Step {
        let mut args = vec![lit("train"), lit("--kind"), lit(l.kind.name())];
        if l.with_details {
            args.push(lit("--with-details"));
        }
        if l.sublinear {
            args.push(lit("--sublinear"));
        }
        if let Some(v) = l.min_df {
            args.extend([lit("--min-df"), lit(&v.to_string())]);
        }
        if let Some(v) = l.alpha {
            args.extend([lit("--alpha"), lit(&format_float(v))]);
        }
        args.extend([lit("--data"), self.data_arg()]);
        if twin {
            args.push(lit("--with-validation"));
        }
        args.extend([lit("--out"), lit(OUT)]);
        let name = if twin { format!("{}-tv", l.name.get_ref()) } else { l.name.get_ref().clone() };
        self.step(format!("linear {name}"), &format!("{name}.gguf"), Output::ModelFile, args)
    }

    fn export(
        &self,
        e: &Export,
        runs: &HashMap<String, Arg>,
        members: &HashMap<String, Arg>,
        twins: &HashMap<String, Arg>,
    ) -> Step {
        let mut args = vec![lit("export"), runs[e.encoder.get_ref()].clone()];
        if let Some(q) = e.quant {
            let q = match q {
                Quant::Q8_0 => "q8_0",
                Quant::F16 => "f16",
                Quant::F32 => "f32",
            };
            args.extend([lit("--quant"), lit(q)]);
        }
        // NAME=FILE arguments: the key sees NAME=KEY.
        let named = |name: &str, (path, key): &Arg| -> Arg {
            (format!("{name}={path}"), key.as_ref().map(|k| format!("{name}={k}")))
        };
        for w in &e.with {
            args.extend([lit("--with"), named(w.get_ref(), &members[w.get_ref()])]);
        }
        if let Some(k) = e.knn {
            args.extend([lit("--knn"), lit(&k.to_string())]);
        }
        if e.has_details {
            args.push(lit("--has-details"));
        }
        if e.interactions {
            args.push(lit("--interactions"));
        }
        if let Some(v) = e.vote {
            let v = match v {
                Vote::Softmax => "softmax",
                Vote::Fade => "fade",
            };
            args.extend([lit("--knn-vote"), lit(v)]);
        }
        if e.index_validation {
            args.push(lit("--index-validation"));
        }
        for f in &e.refit {
            args.extend([lit("--refit"), named(f.get_ref(), &twins[f.get_ref()])]);
        }
        args.extend([lit("--recipe"), (show(&self.file.path), Some(format!("recipe:{}", self.file.sha256())))]);
        args.extend([lit("--out"), lit(OUT)]);
        self.step("export".into(), "export.gguf", Output::ModelFile, args)
    }
}

/// Marks the output path among a step's arguments until the key is known.
const OUT: &str = "\0out";

/// A float as the command line takes it, shortest first (8e-5, 0.1, 10).
fn format_float(v: f64) -> String {
    let plain = format!("{v}");
    let sci = format!("{v:e}");
    if sci.len() < plain.len() { sci } else { plain }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_written() {
        assert_eq!(format_float(8e-5), "8e-5");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(10.0), "10");
        assert_eq!(format_float(5e-5), "5e-5");
    }

    #[test]
    fn locations_are_one_based() {
        assert_eq!(location("a\nbc\n", 3), ":2:2");
        assert_eq!(location("x", 0), ":1:1");
    }

    #[test]
    fn quoting_leaves_plain_paths_alone() {
        assert_eq!(shell_quote("runs/a-b_c.gguf"), "runs/a-b_c.gguf");
        assert_eq!(shell_quote("my file"), "'my file'");
    }
}
