//! `pricer curate`: raw files in, a curated data set directory out.
//!
//! The course's rules, each a flag: price range, minimum content, the shared
//! text preparation with a token budget, de-duplication, optional balancing,
//! then a seeded train / validation / test split and a data report.

use crate::data::{PrepSettings, Tally, for_each_product, load_tokenizer, write_atomic};
use crate::report;
use anyhow::{Context, Result, bail};
use pricer::text::{Budget, prepare};
use pricer::{Product, TextTokenizer};
use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
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
    /// Shares of train, validation and test.
    #[arg(long, default_value = "0.8,0.1,0.1", value_parser = parse_split)]
    pub split: (f64, f64, f64),
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop at the first malformed record instead of skipping it.
    #[arg(long)]
    pub strict: bool,
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

/// One curated item: the line format of train/validation/test JSONL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CuratedItem {
    pub title: String,
    pub category: String,
    pub price: f64,
    pub text: String,
    pub details: String,
}

pub fn run(args: &CurateArgs) -> Result<()> {
    if args.min_price > args.max_price {
        bail!("--min-price {} is above --max-price {}", args.min_price, args.max_price);
    }
    let tokenizer: Option<TextTokenizer> = args.tokenizer.as_deref().map(load_tokenizer).transpose()?;
    let budget = match &tokenizer {
        Some(t) => Budget::Tokens(t, args.max_tokens),
        None => Budget::Words(args.max_tokens),
    };
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {pos} records ({per_sec})").expect("valid template"),
    );
    bar.set_message("curating");
    let mut tally = Tally::default();
    let mut items: Vec<CuratedItem> = Vec::new();
    let mut curator = Curator { args, budget, titles: HashSet::new(), texts: HashSet::new() };
    for input in &args.inputs {
        for_each_product(input, args.strict, &mut tally, |p: Product, t: &mut Tally| {
            bar.inc(1);
            match curator.judge(&p)? {
                Ok(item) => items.push(item),
                Err(reason) => t.drop(reason),
            }
            Ok(())
        })?;
    }
    bar.finish_and_clear();
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
    items.shuffle(&mut rng);
    let n = items.len();
    let n_train = (n as f64 * args.split.0).round() as usize;
    let n_val = ((n as f64 * args.split.1).round() as usize).min(n - n_train);
    let test = items.split_off(n_train + n_val);
    let validation = items.split_off(n_train);
    let train = items;

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, split) in [("train", &train), ("validation", &validation), ("test", &test)] {
        let mut buf = Vec::new();
        for item in split.iter() {
            serde_json::to_writer(&mut buf, item)?;
            buf.push(b'\n');
        }
        write_atomic(&args.out.join(format!("{name}.jsonl")), &buf)?;
    }
    if let Some(t) = &tokenizer {
        write_atomic(&args.out.join("tokenizer.json"), t.json().as_bytes())?;
    }
    let counts = serde_json::json!({"train": train.len(), "validation": validation.len(), "test": test.len()});
    let curation = serde_json::json!({
        "prep": PrepSettings { max_tokens: args.max_tokens, tokenizer: tokenizer.is_some() },
        "inputs": args.inputs,
        "rules": {"min_price": args.min_price, "max_price": args.max_price, "min_chars": args.min_chars,
                   "dedup": !args.keep_duplicates, "balance": args.balance, "seed": args.seed},
        "tally": tally,
        "splits": counts,
    });
    write_atomic(&args.out.join("curation.json"), serde_json::to_string_pretty(&curation)?.as_bytes())?;

    let all: Vec<&CuratedItem> = train.iter().chain(&validation).chain(&test).collect();
    let token_lengths: Vec<usize> = all
        .iter()
        .map(|i| match &tokenizer {
            Some(t) => t.count(&i.text).map_err(anyhow::Error::from),
            None => Ok(i.text.split_whitespace().count()),
        })
        .collect::<Result<_>>()?;
    report::write_data_report(&args.out.join("report"), &all, &token_lengths, &tally, tokenizer.is_some())?;

    let secs = start.elapsed().as_secs_f64();
    println!("{}", tally.summary());
    println!(
        "split: train {}, validation {}, test {} -> {}",
        train.len(),
        validation.len(),
        test.len(),
        args.out.display()
    );
    println!("report: {}", args.out.join("report/report.md").display());
    println!("{:.0} items/s ({} records in {:.1} s)", tally.read as f64 / secs.max(1e-9), tally.read, secs);
    Ok(())
}

/// Applies the per-item rules in order; remembers titles and texts for de-duplication.
struct Curator<'a> {
    args: &'a CurateArgs,
    budget: Budget<'a>,
    titles: HashSet<String>,
    texts: HashSet<String>,
}

impl Curator<'_> {
    /// The curated item, or the reason it is dropped. Errors only when the
    /// tokenizer itself fails.
    fn judge(&mut self, p: &Product) -> Result<Result<CuratedItem, &'static str>> {
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
        if prep.content_chars < args.min_chars {
            return Ok(Err("too little content"));
        }
        if !args.keep_duplicates {
            if !self.titles.insert(p.title.trim().to_lowercase()) {
                return Ok(Err("duplicate title"));
            }
            if !self.texts.insert(prep.text.clone()) {
                return Ok(Err("duplicate text"));
            }
        }
        Ok(Ok(CuratedItem {
            title: p.title.clone(),
            category: p.category.clone().or_else(|| args.category.clone()).unwrap_or_else(|| "Unknown".into()),
            price,
            text: prep.text,
            details: p.details_json(),
        }))
    }
}

/// The course's balancing: below `balance_below` dollars, a rounded-dollar
/// slot holding more than `slot_cap` items keeps a weighted sample of them.
fn balance(items: Vec<CuratedItem>, args: &CurateArgs, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<CuratedItem> {
    let mut slots: BTreeMap<i64, Vec<CuratedItem>> = BTreeMap::new();
    for item in items {
        slots.entry(item.price.round() as i64).or_default().push(item);
    }
    let mut out = Vec::new();
    for (dollars, slot) in slots {
        if dollars as f64 >= args.balance_below || slot.len() <= args.slot_cap {
            out.extend(slot);
            continue;
        }
        let weight = |i: &CuratedItem| if i.category == args.downweight_category { 1.0 } else { 5.0 };
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
            seed: 1,
            strict: false,
        }
    }

    fn item(price: f64, category: &str) -> CuratedItem {
        CuratedItem {
            title: String::new(),
            category: category.into(),
            price,
            text: String::new(),
            details: String::new(),
        }
    }

    #[test]
    fn balancing_caps_cheap_slots_only_and_prefers_other_categories() {
        let mut items: Vec<CuratedItem> = (0..10).map(|_| item(10.2, "Toys")).collect();
        items.extend((0..10).map(|_| item(10.4, "Automotive")));
        items.extend((0..10).map(|_| item(500.0, "Toys")));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let out = balance(items, &args(), &mut rng);
        let cheap: Vec<_> = out.iter().filter(|i| i.price < 100.0).collect();
        assert_eq!(cheap.len(), 3);
        assert_eq!(out.iter().filter(|i| i.price == 500.0).count(), 10);
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
    fn split_shares_are_validated() {
        assert_eq!(parse_split("0.8,0.1,0.1").unwrap(), (0.8, 0.1, 0.1));
        assert!(parse_split("0.8,0.1").is_err());
        assert!(parse_split("0.9,0.2,0.1").is_err());
        assert!(parse_split("a,b,c").is_err());
    }
}
