//! `pricer curate`: raw files in, a curated data set directory out.
//!
//! The course's rules, each a flag: price range, minimum content, the shared
//! text preparation with a token budget, de-duplication, optional balancing,
//! then a seeded train / validation / test split and a data report.

use crate::data::{CuratedItem, PrepSettings, Tally, for_each_product_as, load_tokenizer, prices, write_atomic};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::text::{Budget, prepare};
use pricer::{Product, SourceFormat, TextTokenizer};
use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct CurateArgs {
    /// Raw files: Amazon 2023 `meta_<Category>.jsonl[.gz]`, curated JSONL, or CSV.
    #[arg(long = "input", short, required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Output directory (train/validation/test JSONL, curation.json, report/).
    #[arg(long, short)]
    pub out: PathBuf,
    /// The model's `tokenizer.json`, which counts the token budget (else words are counted).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Token budget of the prepared text.
    #[arg(long, default_value_t = pricer::text::DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0.5)]
    pub min_price: f64,
    #[arg(long, default_value_t = 999.49)]
    pub max_price: f64,
    /// Minimum characters of description + features + details.
    #[arg(long, default_value_t = pricer::text::DEFAULT_MIN_CHARS)]
    pub min_chars: usize,
    /// Keep items whose title or text repeats an earlier item's.
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Category for items whose record names none (e.g. from the file name).
    #[arg(long)]
    pub category: Option<String>,
    /// Balance prices: cap items per rounded-dollar slot below --balance-below.
    #[arg(long)]
    pub balance: bool,
    #[arg(long, default_value_t = 1200)]
    pub slot_cap: usize,
    #[arg(long, default_value_t = 240.0)]
    pub balance_below: f64,
    /// Category sampled 5x less often when a slot is capped (the course's Automotive).
    #[arg(long, default_value = "Automotive")]
    pub downweight_category: String,
    /// Shares of train, validation and test (of each test group; items in no
    /// group give their test share to train).
    #[arg(long, default_value = "0.8,0.1,0.1", value_parser = parse_split)]
    pub split: (f64, f64, f64),
    /// A named test split of one distribution, `NAME=SELECTOR`: SELECTOR is an
    /// input file (as given to --input, or its file name) or `format:FORMAT`
    /// (e.g. `course=format:curated_scrubbed_title`). Repeat for several; each
    /// writes test-NAME.jsonl and validation-NAME.jsonl. Without any, one
    /// test.jsonl is drawn from all items.
    #[arg(long = "test", value_parser = parse_test_group)]
    pub tests: Vec<TestGroup>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop at the first malformed record instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Prices written as text use a decimal comma (`12,99`, `1.299,00`);
    /// without it such a price is refused as ambiguous.
    #[arg(long)]
    pub decimal_comma: bool,
    /// Threads preparing texts (default: every core). The output is the same for any number.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Products prepared at once, in parallel, before de-duplication takes them in order.
    #[arg(long, default_value_t = 4096, hide = true)]
    pub batch: usize,
}

fn parse_split(s: &str) -> Result<(f64, f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| format!("not a number: {x:?}")))
        .collect::<Result<_, _>>()?;
    if v.len() != 3 || v.iter().any(|x| *x < 0.0) || (v.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err("expected three non-negative shares summing to 1, e.g. 0.8,0.1,0.1".into());
    }
    Ok((v[0], v[1], v[2]))
}

/// Which items a named test split is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every item (the one test split when none is named).
    All,
    /// Items read from this input file (its path as given, or its file name).
    Input(String),
    /// Items whose source wrote them in this format.
    Format(SourceFormat),
}

/// `--test NAME=SELECTOR`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestGroup {
    pub name: String,
    pub selector: Selector,
}

fn parse_test_group(s: &str) -> Result<TestGroup, String> {
    let (name, sel) = s.split_once('=').ok_or("expected NAME=SELECTOR, e.g. catalog=items.jsonl.gz")?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("test split name {name:?} must be letters, digits, '-' or '_'"));
    }
    let selector = match sel.trim().strip_prefix("format:") {
        Some(f) => Selector::Format(SourceFormat::from_name(f.trim()).ok_or_else(|| {
            let names: Vec<&str> = SourceFormat::ALL.iter().map(|f| f.name()).collect();
            format!("unknown format {f:?} (one of: {})", names.join(", "))
        })?),
        None if sel.trim().is_empty() => return Err(format!("test split {name:?} selects nothing")),
        None => Selector::Input(sel.trim().to_string()),
    };
    Ok(TestGroup { name: name.to_string(), selector })
}

pub fn run(args: &CurateArgs) -> Result<()> {
    if args.min_price > args.max_price {
        bail!("--min-price {} is above --max-price {}", args.min_price, args.max_price);
    }
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("cannot start the worker threads")?;
    }
    let tokenizer: Option<TextTokenizer> = args.tokenizer.as_deref().map(load_tokenizer).transpose()?;
    let start = Instant::now();
    let groups = resolve_groups(args)?;
    let (mut items, mut tally) = read_and_judge(args, &tokenizer, &groups)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    if args.balance {
        let before = items.len();
        items = balance(items, args, &mut rng);
        for _ in items.len()..before {
            tally.drop("balanced out");
        }
    }
    tally.kept = items.len() as u64;
    if items.is_empty() {
        bail!("no item survived curation ({})", tally.summary());
    }
    let splits = split(items, &groups, args, &mut rng)?;
    write_splits(args, &splits, &groups, &tally, &tokenizer)?;

    let secs = start.elapsed().as_secs_f64();
    println!("{}", tally.summary());
    let sizes: Vec<String> = splits
        .validations
        .iter()
        .chain(&splits.tests)
        .map(|(n, s)| format!("{} {}", n.trim_end_matches(".jsonl"), s.len()))
        .collect();
    println!("split: train {}, {} -> {}", splits.train.len(), sizes.join(", "), args.out.display());
    println!("report: {}", args.out.join("report/report.md").display());
    let peak = peak_memory_mb().map(|mb| format!(", peak memory {mb:.0} MB")).unwrap_or_default();
    println!(
        "{:.0} items/s ({} records in {:.1} s, {} threads{peak})",
        tally.read as f64 / secs.max(1e-9),
        tally.read,
        secs,
        rayon::current_num_threads()
    );
    Ok(())
}

/// A kept item with the index of its test group (None: train and validation only).
type Judged = (CuratedItem, Option<usize>);

/// Every input read, each product judged and prepared: the kept items with
/// the index of their test group (None: train and validation only), and the tally.
fn read_and_judge(
    args: &CurateArgs,
    tokenizer: &Option<TextTokenizer>,
    groups: &[TestGroup],
) -> Result<(Vec<Judged>, Tally)> {
    let budget = match tokenizer {
        Some(t) => Budget::Tokens(t, args.max_tokens),
        None => Budget::Words(args.max_tokens),
    };
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {pos} records ({per_sec})").expect("valid template"),
    );
    bar.set_message("curating");
    let mut tally = Tally::default();
    // Each kept item with the index of its test group (None: train and validation only).
    let mut items: Vec<(CuratedItem, Option<usize>)> = Vec::new();
    let mut curator = Curator { args, budget, titles: HashSet::new(), texts: HashSet::new() };
    for input in &args.inputs {
        // Products are read in order on this thread and prepared in parallel a
        // batch at a time; de-duplication then takes them in reading order, so
        // the output is the same for any number of threads.
        let batch_size = args.batch.max(1);
        let mut batch: Vec<Product> = Vec::with_capacity(batch_size);
        let mut judge_batch = |batch: &mut Vec<Product>, t: &mut Tally| -> Result<()> {
            let assessed: Vec<Result<Result<Prepared, &'static str>>> =
                batch.par_iter().map(|p| curator.assess(p)).collect();
            for (p, a) in batch.drain(..).zip(assessed) {
                match a?.and_then(|prep| curator.admit(&p, prep)) {
                    Ok(item) => {
                        let group = groups.iter().position(|g| g.selects(input, &p));
                        items.push((item, group));
                    }
                    Err(reason) => t.drop(reason),
                }
            }
            bar.set_message(format!("curating: kept {}, dropped {}", items.len(), t.dropped.values().sum::<u64>()));
            Ok(())
        };
        for_each_product_as(
            input,
            args.strict,
            prices(args.decimal_comma),
            &mut tally,
            |p: Product, t: &mut Tally| {
                bar.inc(1);
                batch.push(p);
                if batch.len() >= batch_size { judge_batch(&mut batch, t) } else { Ok(()) }
            },
        )?;
        judge_batch(&mut batch, &mut tally)?;
    }
    bar.finish_and_clear();
    Ok((items, tally))
}

/// The curated splits: training items, and each validation and test split's
/// file name with its items, in order.
struct Splits {
    train: Vec<CuratedItem>,
    validations: Vec<(String, Vec<CuratedItem>)>,
    tests: Vec<(String, Vec<CuratedItem>)>,
}

fn split(
    mut items: Vec<Judged>,
    groups: &[TestGroup],
    args: &CurateArgs,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Splits> {
    // Each item's place comes from a seeded hash of its own text, not from its
    // position among the others: adding an input file never moves an item of
    // another file between splits (so `catalog` is the same split whether
    // or not more data is curated beside it).
    items.sort_by_cached_key(|(i, _)| (split_hash(args.seed, i), i.title.clone()));
    let (train_share, val_share, _) = args.split;
    let mut train = Vec::new();
    // (file name, items) of each validation and test split, in order.
    let mut validations: Vec<(String, Vec<CuratedItem>)> = Vec::new();
    let mut tests: Vec<(String, Vec<CuratedItem>)> = Vec::new();
    for (gi, group) in groups.iter().map(Some).chain([None]).enumerate() {
        let gi = group.map(|_| gi);
        let mut members: Vec<CuratedItem> = items.iter().filter(|(_, g)| *g == gi).map(|(i, _)| i.clone()).collect();
        let n = members.len();
        // Items in no test group give their test share to training.
        let train_share = if group.is_some() { train_share } else { 1.0 - val_share };
        let n_train = (n as f64 * train_share).round() as usize;
        let n_val = ((n as f64 * val_share).round() as usize).min(n - n_train);
        let test = members.split_off(n_train + n_val);
        let validation = members.split_off(n_train);
        train.extend(members);
        let suffix = |kind: &str| match group {
            Some(g) if !g.name.is_empty() => format!("{kind}-{}.jsonl", g.name),
            _ => format!("{kind}.jsonl"),
        };
        if n > 0 || group.is_some() {
            validations.push((suffix("validation"), validation));
        }
        if let Some(g) = group {
            if test.is_empty() {
                bail!("test split {:?} is empty: its selector matched {n} kept items", g.name);
            }
            tests.push((suffix("test"), test));
        }
    }
    // Training order must not depend on which group an item came from.
    train.shuffle(rng);

    Ok(Splits { train, validations, tests })
}

/// The splits, the curation record and the data report, written to a
/// staging folder beside the output and moved in at the end: an
/// interrupted run leaves the last output whole.
fn write_splits(
    args: &CurateArgs,
    splits: &Splits,
    groups: &[TestGroup],
    tally: &Tally,
    tokenizer: &Option<TextTokenizer>,
) -> Result<()> {
    let Splits { train, validations, tests } = splits;
    let stage = staging_dir(&args.out)?;
    let mut counts = serde_json::Map::new();
    for (name, split) in std::iter::once(("train.jsonl".to_string(), train))
        .chain(validations.iter().map(|(n, s)| (n.clone(), s)))
        .chain(tests.iter().map(|(n, s)| (n.clone(), s)))
    {
        let mut buf = Vec::new();
        for item in split.iter() {
            serde_json::to_writer(&mut buf, item)?;
            buf.push(b'\n');
        }
        write_atomic(&stage.join(&name), &buf)?;
        counts.insert(name.trim_end_matches(".jsonl").to_string(), split.len().into());
    }
    if let Some(t) = tokenizer {
        write_atomic(&stage.join("tokenizer.json"), t.json().as_bytes())?;
    }
    let curation = serde_json::json!({
        "prep": PrepSettings { max_tokens: args.max_tokens, tokenizer: tokenizer.is_some() },
        "inputs": args.inputs,
        "rules": {"min_price": args.min_price, "max_price": args.max_price, "min_chars": args.min_chars,
                   "dedup": !args.keep_duplicates, "balance": args.balance, "seed": args.seed},
        "tests": groups.iter().filter(|g| !g.name.is_empty()).map(|g| serde_json::json!({
            "name": g.name,
            "selector": match &g.selector {
                Selector::All => "all".to_string(),
                Selector::Input(i) => i.clone(),
                Selector::Format(f) => format!("format:{}", f.name()),
            },
        })).collect::<Vec<_>>(),
        "tally": tally,
        "splits": counts,
    });
    write_atomic(&stage.join("curation.json"), serde_json::to_string_pretty(&curation)?.as_bytes())?;

    let all: Vec<&CuratedItem> =
        train.iter().chain(validations.iter().flat_map(|(_, s)| s)).chain(tests.iter().flat_map(|(_, s)| s)).collect();
    let token_lengths: Vec<usize> = all
        .par_iter()
        .map(|i| match (tokenizer, i.tokens) {
            (Some(_), Some(n)) => Ok(n),
            (Some(t), None) => t.count(&i.text).map_err(anyhow::Error::from),
            (None, _) => Ok(i.text.split_whitespace().count()),
        })
        .collect::<Result<_>>()?;
    report::write_data_report(&stage.join("report"), &all, &token_lengths, tally, tokenizer.is_some())?;
    publish(&stage, &args.out)?;

    Ok(())
}

/// A fresh directory beside `out` for this run's files.
fn staging_dir(out: &std::path::Path) -> Result<PathBuf> {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "curated".into());
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let stage = parent.join(format!(".{name}.curating-{}", std::process::id()));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    Ok(stage)
}

/// Moves a finished run's files from `stage` into `out` (renames, on the
/// same file system), dropping split files (and a tokenizer) of an earlier
/// run that this one did not write: they would be read as part of it.
fn publish(stage: &std::path::Path, out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for entry in std::fs::read_dir(out)? {
        let name = entry?.file_name();
        let ours = crate::data::split_kind(&name.to_string_lossy()).is_some() || name == "tokenizer.json";
        if ours && !stage.join(&name).exists() {
            std::fs::remove_file(out.join(&name))?;
        }
    }
    for entry in std::fs::read_dir(stage)? {
        let entry = entry?;
        let target = out.join(entry.file_name());
        if entry.file_type()?.is_dir() && target.is_dir() {
            std::fs::remove_dir_all(&target).with_context(|| format!("cannot replace {}", target.display()))?;
        }
        std::fs::rename(entry.path(), &target).with_context(|| format!("cannot move into {}", target.display()))?;
    }
    std::fs::remove_dir(stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    Ok(())
}

/// The process's peak resident memory (Linux), in MB.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl TestGroup {
    fn selects(&self, input: &std::path::Path, p: &Product) -> bool {
        match &self.selector {
            Selector::All => true,
            Selector::Format(f) => p.format == Some(*f),
            Selector::Input(name) => {
                input.as_os_str() == name.as_str() || input.file_name().is_some_and(|n| n == name.as_str())
            }
        }
    }
}

/// The test groups of a run: those asked for (checked against the inputs),
/// or one unnamed group of every item.
fn resolve_groups(args: &CurateArgs) -> Result<Vec<TestGroup>> {
    if args.tests.is_empty() {
        return Ok(vec![TestGroup { name: String::new(), selector: Selector::All }]);
    }
    let mut seen = HashSet::new();
    for g in &args.tests {
        if !seen.insert(g.name.as_str()) {
            bail!("--test {}: the name is used twice", g.name);
        }
        if let Selector::Input(name) = &g.selector {
            let matches = args
                .inputs
                .iter()
                .any(|i| i.as_os_str() == name.as_str() || i.file_name().is_some_and(|n| n == name.as_str()));
            if !matches {
                bail!("--test {}={name}: no --input is {name:?}", g.name);
            }
        }
    }
    Ok(args.tests.clone())
}

/// FNV-1a of the item's title and text, mixed with the seed.
fn split_hash(seed: u64, item: &CuratedItem) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in item.title.bytes().chain([b'\n']).chain(item.text.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::data::splitmix64(seed, h)
}

/// Applies the per-item rules in order; remembers titles and texts for de-duplication.
struct Curator<'a> {
    args: &'a CurateArgs,
    budget: Budget<'a>,
    titles: HashSet<String>,
    texts: HashSet<String>,
}

/// A product that passed the rules that need no other item.
struct Prepared {
    title_key: String,
    text: String,
    tokens: Option<usize>,
}

impl Curator<'_> {
    /// The rules of one product alone: price, text, content. Errors only when
    /// the tokenizer itself fails. Runs on any thread.
    fn assess(&self, p: &Product) -> Result<Result<Prepared, &'static str>> {
        let args = self.args;
        let Some(price) = p.price else { return Ok(Err("no price")) };
        if price < args.min_price || price > args.max_price {
            return Ok(Err("price out of range"));
        }
        let prep = match prepare(p, self.budget) {
            Ok(prep) => prep,
            Err(pricer::Error::EmptyProduct) => return Ok(Err("empty text")),
            Err(e) => return Err(e.into()),
        };
        // The course's published samples were selected by its rules already
        // (their LLM summaries are short by design); the rule is for raw records.
        let sampled = p.format.is_some_and(SourceFormat::is_curated_sample);
        if !sampled && prep.content_chars < args.min_chars {
            return Ok(Err("too little content"));
        }
        Ok(Ok(Prepared { title_key: p.title.trim().to_lowercase(), text: prep.text, tokens: prep.tokens }))
    }

    /// The curated item, or why it repeats an earlier one. Products must come in reading order.
    fn admit(&mut self, p: &Product, prep: Prepared) -> Result<CuratedItem, &'static str> {
        let args = self.args;
        if !args.keep_duplicates {
            if !self.titles.insert(prep.title_key) {
                return Err("duplicate title");
            }
            if !self.texts.insert(prep.text.clone()) {
                return Err("duplicate text");
            }
        }
        Ok(CuratedItem {
            title: p.title.clone(),
            category: p.category.clone().or_else(|| args.category.clone()),
            price: p.price.unwrap_or_default(),
            text: prep.text,
            details: p.details_json(),
            source_format: p.format,
            tokens: prep.tokens,
        })
    }
}

/// The course's balancing: below `balance_below` dollars, a rounded-dollar
/// slot holding more than `slot_cap` items keeps a weighted sample of them.
fn balance<G: Clone>(
    items: Vec<(CuratedItem, G)>,
    args: &CurateArgs,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<(CuratedItem, G)> {
    let mut slots: BTreeMap<i64, Vec<(CuratedItem, G)>> = BTreeMap::new();
    for item in items {
        slots.entry(item.0.price.round() as i64).or_default().push(item);
    }
    let mut out = Vec::new();
    for (dollars, slot) in slots {
        if dollars as f64 >= args.balance_below || slot.len() <= args.slot_cap {
            out.extend(slot);
            continue;
        }
        let weight =
            |i: &(CuratedItem, G)| if i.0.category.as_deref() == Some(&args.downweight_category) { 1.0 } else { 5.0 };
        let chosen =
            slot.choose_multiple_weighted(rng, args.slot_cap, weight).expect("weights are positive and finite");
        out.extend(chosen.cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> CurateArgs {
        CurateArgs {
            inputs: vec![],
            out: PathBuf::new(),
            tokenizer: None,
            max_tokens: 160,
            min_price: 0.5,
            max_price: 999.49,
            min_chars: 300,
            keep_duplicates: false,
            category: None,
            balance: true,
            slot_cap: 3,
            balance_below: 240.0,
            downweight_category: "Automotive".into(),
            split: (0.8, 0.1, 0.1),
            tests: vec![],
            seed: 1,
            strict: false,
            decimal_comma: false,
            threads: None,
            batch: 4096,
        }
    }

    fn item(price: f64, category: &str) -> (CuratedItem, ()) {
        let item = CuratedItem {
            title: String::new(),
            category: Some(category.into()),
            price,
            text: String::new(),
            details: String::new(),
            source_format: None,
            tokens: None,
        };
        (item, ())
    }

    #[test]
    fn balancing_caps_cheap_slots_only_and_prefers_other_categories() {
        let mut items: Vec<(CuratedItem, ())> = (0..10).map(|_| item(10.2, "Toys")).collect();
        items.extend((0..10).map(|_| item(10.4, "Automotive")));
        items.extend((0..10).map(|_| item(500.0, "Toys")));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let out = balance(items, &args(), &mut rng);
        let cheap: Vec<_> = out.iter().filter(|i| i.0.price < 100.0).collect();
        assert_eq!(cheap.len(), 3);
        assert_eq!(out.iter().filter(|i| i.0.price == 500.0).count(), 10);
    }

    impl Curator<'_> {
        /// Both steps for one product, as `run` takes them.
        fn judge(&mut self, p: &Product) -> Result<Result<CuratedItem, &'static str>> {
            Ok(self.assess(p)?.and_then(|prep| self.admit(p, prep)))
        }
    }

    fn product(title: &str, price: Option<f64>, chars: usize) -> Product {
        Product { title: title.into(), price, description: vec!["word ".repeat(chars / 5)], ..Default::default() }
    }

    #[test]
    fn each_rule_drops_with_its_reason() {
        let a = CurateArgs { max_tokens: 20, ..args() };
        let mut c = Curator { args: &a, budget: Budget::Words(20), titles: HashSet::new(), texts: HashSet::new() };
        let mut judge = |p: Product| c.judge(&p).unwrap().map(|i| i.text).map_err(|r| r.to_string());
        assert_eq!(judge(product("A", None, 400)), Err("no price".into()));
        assert_eq!(judge(product("A", Some(0.49), 400)), Err("price out of range".into()));
        assert_eq!(judge(product("A", Some(999.5), 400)), Err("price out of range".into()));
        assert_eq!(judge(product("A", Some(5.0), 250)), Err("too little content".into()));
        assert_eq!(judge(product(" ", Some(5.0), 0)), Err("empty text".into()));
        let kept = judge(product("Lamp XL", Some(0.5), 400)).unwrap();
        assert_eq!(kept.split_whitespace().count(), 20, "cut to the budget: {kept}");
        assert_eq!(judge(product("lamp xl ", Some(9.0), 400)), Err("duplicate title".into()));
        assert_eq!(judge(product("Lamp XL", Some(9.0), 400)), Err("duplicate title".into()));
    }

    #[test]
    fn duplicate_text_under_another_title_is_dropped() {
        let a = CurateArgs { max_tokens: 3, ..args() };
        let mut c = Curator { args: &a, budget: Budget::Words(3), titles: HashSet::new(), texts: HashSet::new() };
        assert!(c.judge(&product("Red mug big", Some(5.0), 400)).unwrap().is_ok());
        // A different title whose first three words, all the budget keeps, are the same.
        assert_eq!(c.judge(&product("Red mug big:", Some(5.0), 400)).unwrap().unwrap_err(), "duplicate text");
        let keep = CurateArgs { keep_duplicates: true, ..a.clone() };
        let mut c = Curator { args: &keep, budget: Budget::Words(3), titles: HashSet::new(), texts: HashSet::new() };
        assert!(c.judge(&product("Red mug big", Some(5.0), 400)).unwrap().is_ok());
        assert!(c.judge(&product("Red mug big", Some(5.0), 400)).unwrap().is_ok());
    }

    #[test]
    fn curated_samples_skip_the_content_rule_raw_records_do_not() {
        let a = args();
        let mut c = Curator { args: &a, budget: Budget::Words(160), titles: HashSet::new(), texts: HashSet::new() };
        let mut short = product("Air duster", Some(79.0), 100);
        assert_eq!(c.judge(&short).unwrap().unwrap_err(), "too little content");
        short.format = Some(SourceFormat::LlmSummary);
        let kept = c.judge(&short).unwrap().unwrap();
        assert_eq!(kept.source_format, Some(SourceFormat::LlmSummary));
        assert_eq!(kept.category, None);
    }

    #[test]
    fn test_groups_parse_and_are_checked() {
        let g = parse_test_group("course=format:curated_scrubbed_title").unwrap();
        assert_eq!(g.selector, Selector::Format(SourceFormat::CuratedScrubbedTitle));
        assert_eq!(
            parse_test_group("catalog=items.jsonl.gz").unwrap().selector,
            Selector::Input("items.jsonl.gz".into())
        );
        assert!(parse_test_group("x=format:poem").unwrap_err().contains("unknown format"));
        assert!(parse_test_group("no selector").is_err());
        assert!(parse_test_group("a b=x").unwrap_err().contains("must be"));
        let mut a = args();
        a.inputs = vec![PathBuf::from("/data/items.jsonl.gz")];
        a.tests = vec![parse_test_group("catalog=items.jsonl.gz").unwrap()];
        assert_eq!(resolve_groups(&a).unwrap().len(), 1);
        a.tests.push(parse_test_group("catalog=format:curated").unwrap());
        assert!(resolve_groups(&a).unwrap_err().to_string().contains("used twice"));
        a.tests = vec![parse_test_group("course=more.jsonl.gz").unwrap()];
        assert!(resolve_groups(&a).unwrap_err().to_string().contains("no --input"));
    }

    #[test]
    fn split_shares_are_validated() {
        assert_eq!(parse_split("0.8,0.1,0.1").unwrap(), (0.8, 0.1, 0.1));
        assert!(parse_split("0.8,0.1").is_err());
        assert!(parse_split("0.9,0.2,0.1").is_err());
        assert!(parse_split("a,b,c").is_err());
    }
}
