//! `pricer frontier-finetune`: the course's week 6. A frontier chat model is
//! fine-tuned through its provider's API (OpenAI's fine-tuning endpoints, or
//! any server that speaks them) on a few hundred curated items, asked
//! exactly as the chat pricer asks (`--model chat:MODEL`), so the tuned model
//! is scored by the same Tester with `pricer eval --model chat:ID`.

use crate::chat::{Exchange, Prompt, agent, backoff, endpoint_from_env, exchange, server_message};
use crate::data::{load_data_set, write_atomic};
use anyhow::{Context, Result, bail};
use pricer::Product;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct FrontierArgs {
    /// A `pricer curate` directory (its train and validation splits) or one
    /// file of priced products (split with --seed).
    #[arg(long, required_unless_present = "job")]
    pub data: Option<PathBuf>,
    /// The model to fine-tune, as the provider names it (gpt-4o-mini-2024-07-18).
    #[arg(long, required_unless_present_any = ["job", "dry_run"])]
    pub base: Option<String>,
    /// Training examples drawn (across price ranges).
    #[arg(long, default_value_t = 200)]
    pub train: usize,
    /// Validation examples drawn.
    #[arg(long, default_value_t = 50)]
    pub validation: usize,
    /// Where train.jsonl, validation.jsonl and job.json go.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the draw (and of the split of a single file).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Suffix of the fine-tuned model's name.
    #[arg(long, default_value = "pricer")]
    pub suffix: String,
    /// Seconds between looks at the job.
    #[arg(long, default_value_t = 30.0)]
    pub poll_seconds: f64,
    /// Write the two files and stop (nothing is sent).
    #[arg(long, conflicts_with = "job")]
    pub dry_run: bool,
    /// Follow a job already created (after Ctrl-C): its id, as printed and in OUT/job.json.
    #[arg(long)]
    pub job: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The prompt, as for `--model chat:MODEL`. Default: trainer/prompts/price.txt.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Seconds to wait for one reply before trying again.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Tries after the first when the server says 429 or 5xx, or is too slow.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
}

/// Log-price bands the draw takes from in turn, so cheap and dear items are
/// both well represented (the course balanced its samples by price).
const PRICE_BANDS: usize = 8;

/// Up to `n` products drawn with `seed`, taking in turn from each of
/// [`PRICE_BANDS`] equal-width bands of log(1 + price).
pub fn draw_across_prices(products: &[Product], n: usize, seed: u64) -> Vec<Product> {
    let priced: Vec<&Product> = products.iter().filter(|p| p.price.is_some_and(|x| x > 0.0)).collect();
    let logs: Vec<f64> = priced.iter().map(|p| p.price.unwrap_or(0.0).ln_1p()).collect();
    let (lo, hi) = logs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let width = ((hi - lo) / PRICE_BANDS as f64).max(f64::MIN_POSITIVE);
    let mut bands: Vec<Vec<&Product>> = vec![Vec::new(); PRICE_BANDS];
    for (p, l) in priced.iter().zip(&logs) {
        bands[(((l - lo) / width) as usize).min(PRICE_BANDS - 1)].push(p);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for b in &mut bands {
        b.shuffle(&mut rng);
    }
    let mut out = Vec::with_capacity(n.min(priced.len()));
    let mut round = 0;
    while out.len() < n && bands.iter().any(|b| b.len() > round) {
        for b in &bands {
            if out.len() < n
                && let Some(p) = b.get(round)
            {
                out.push((*p).clone());
            }
        }
        round += 1;
    }
    out.shuffle(&mut rng);
    out
}

/// One training example in the chat fine-tuning format: the chat pricer's
/// messages for the product, and the answer it should learn to give.
pub fn example(prompt: &Prompt, p: &Product) -> Result<serde_json::Value> {
    let price = p.price.context("an item without a price cannot teach one")?;
    let mut messages = prompt.messages(p)?;
    messages.push(serde_json::json!({"role": "assistant", "content": format!("Price is ${price:.2}")}));
    Ok(serde_json::json!({ "messages": messages }))
}

fn write_examples(path: &Path, prompt: &Prompt, products: &[Product]) -> Result<usize> {
    let mut text = String::new();
    let mut skipped = 0;
    for p in products {
        match example(prompt, p) {
            Ok(v) => {
                text.push_str(&v.to_string());
                text.push('\n');
            }
            Err(e) => {
                skipped += 1;
                eprintln!("{}: item {:?} left out: {e:#}", path.display(), p.title);
            }
        }
    }
    if text.is_empty() {
        bail!("no item could be written to {}", path.display());
    }
    write_atomic(path, text.as_bytes())?;
    Ok(products.len() - skipped)
}

/// What went wrong with one call to the API.
enum CallError {
    /// The server refused (400, 401, 403, 404): asking again cannot help.
    Refused(String),
    /// Retries used up, or no server to talk to.
    Failed(String),
}

impl From<CallError> for anyhow::Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused(m) | CallError::Failed(m) => anyhow::anyhow!(m),
        }
    }
}

/// The fine-tuning API: `{url}/files` and `{url}/fine_tuning/jobs`.
struct Api {
    url: String,
    key: Option<String>,
    agent: ureq::Agent,
    retries: u32,
    timeout: f64,
}

/// What a call sends: nothing (a GET), or a body with its content type (a POST).
type Body<'a> = Option<(&'a str, &'a [u8])>;

impl Api {
    fn new(args: &FrontierArgs) -> Result<Api> {
        let (url, key) = endpoint_from_env()?;
        Ok(Api { url, key, agent: agent(args.timeout)?, retries: args.retries, timeout: args.timeout })
    }

    /// One call with retries on 429, 5xx and timeouts (honouring Retry-After).
    fn call(&self, path: &str, body: Body) -> Result<serde_json::Value, CallError> {
        let url = format!("{}{path}", self.url);
        let method = if body.is_some() { "POST" } else { "GET" };
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut attempt = 0;
        loop {
            let sent = match body {
                None => {
                    let mut r = self.agent.get(&url);
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.call()
                }
                Some((content_type, bytes)) => {
                    let mut r = self.agent.post(&url).header("content-type", content_type);
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.send(bytes)
                }
            };
            let (why, retry_after) = match exchange(sent, &url, self.timeout) {
                Exchange::Answered(200..=299, text) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| CallError::Failed(format!("{method} {url}: the reply is not JSON: {e}")));
                }
                Exchange::Answered(status, text) => {
                    return Err(CallError::Refused(format!(
                        "{method} {url}: the server answered {status}: {}",
                        server_message(&text)
                    )));
                }
                Exchange::Retry(why, after) => (format!("{method} {url}: {why}"), after),
                Exchange::Unreachable(why) => return Err(CallError::Failed(why)),
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(CallError::Failed(format!("{why} ({attempt} tries)")));
            }
            eprintln!("{why}; trying again");
            std::thread::sleep(backoff(attempt, retry_after));
        }
    }

    /// Uploads a JSONL file for fine-tuning; returns its file id.
    fn upload(&self, path: &Path) -> Result<String> {
        let content = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "data.jsonl".into());
        let boundary = format!("pricer-{:016x}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
        let mut bytes = Vec::with_capacity(content.len() + 512);
        bytes.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n").as_bytes(),
        );
        bytes.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 content-type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(&content);
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let v = self
            .call("/files", Some((&format!("multipart/form-data; boundary={boundary}"), &bytes)))
            .map_err(anyhow::Error::from)
            .with_context(|| format!("uploading {}", path.display()))?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the upload of {} returned no file id", path.display()))
    }
}

/// The job as `OUT/job.json` keeps it, so `--job ID` can follow it later.
fn save_job(out: &Path, job: &serde_json::Value) -> Result<()> {
    write_atomic(&out.join("job.json"), serde_json::to_string_pretty(job)?.as_bytes())
}

pub fn run(args: &FrontierArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let job_id = match &args.job {
        Some(id) => id.clone(),
        None => {
            let Some(files) = write_files(args)? else { return Ok(()) };
            let api = Api::new(args)?;
            let base = args.base.as_deref().context("--base names the model to fine-tune")?;
            let training_file = api.upload(&files.0)?;
            let validation_file = api.upload(&files.1)?;
            let body = serde_json::json!({
                "training_file": training_file, "validation_file": validation_file,
                "model": base, "suffix": args.suffix,
            });
            let job = api
                .call("/fine_tuning/jobs", Some(("application/json", body.to_string().as_bytes())))
                .map_err(anyhow::Error::from)?;
            let id = job["id"].as_str().context("the server created a job without an id")?.to_string();
            save_job(&args.out, &job)?;
            eprintln!(
                "job {id} created (saved in {}; follow it again with --job {id})",
                args.out.join("job.json").display()
            );
            id
        }
    };
    follow(&Api::new(args)?, &job_id, args)
}

/// Writes OUT/train.jsonl and OUT/validation.jsonl; `None` after a dry run.
fn write_files(args: &FrontierArgs) -> Result<Option<(PathBuf, PathBuf)>> {
    let data = args.data.as_deref().context("--data names the items to train on")?;
    if args.train == 0 {
        bail!("--train must be at least 1");
    }
    let prompt = Prompt::load(args.prompt.as_deref())?;
    let ds = load_data_set(data, 0.2, args.seed, false)?;
    let train = draw_across_prices(&ds.train, args.train, args.seed);
    let validation = draw_across_prices(&ds.validation, args.validation, args.seed.wrapping_add(1));
    if validation.is_empty() {
        bail!("{} has no validation items to draw from", data.display());
    }
    let (tp, vp) = (args.out.join("train.jsonl"), args.out.join("validation.jsonl"));
    let nt = write_examples(&tp, &prompt, &train)?;
    let nv = write_examples(&vp, &prompt, &validation)?;
    eprintln!("wrote {} ({nt} examples) and {} ({nv} examples)", tp.display(), vp.display());
    if nt < args.train {
        eprintln!("asked for {} training examples; the data had {nt}", args.train);
    }
    Ok((!args.dry_run).then_some((tp, vp)))
}

/// Polls the job until it ends, printing its new events; the result or the
/// server's reason for a failure.
fn follow(api: &Api, id: &str, args: &FrontierArgs) -> Result<()> {
    if !(args.poll_seconds >= 0.0 && args.poll_seconds.is_finite()) {
        bail!("--poll-seconds must be zero or more");
    }
    // The id first, so an interrupted run can be followed again with --job.
    if args.json {
        eprintln!("job: {id}");
    } else {
        println!("job: {id}");
    }
    let mut seen = std::collections::HashSet::new();
    loop {
        let job = api.call(&format!("/fine_tuning/jobs/{id}"), None).map_err(anyhow::Error::from)?;
        // Events are progress only: a failure to read them does not stop the run.
        if let Ok(events) = api.call(&format!("/fine_tuning/jobs/{id}/events?limit=100"), None) {
            let mut list: Vec<&serde_json::Value> =
                events["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            list.sort_by_key(|e| e["created_at"].as_i64().unwrap_or(0));
            for e in list {
                let key = e["id"].as_str().map(str::to_string).unwrap_or_else(|| e.to_string());
                if seen.insert(key) {
                    eprintln!("  {}", e["message"].as_str().unwrap_or("(an event without a message)"));
                }
            }
        }
        let status = job["status"].as_str().unwrap_or("unknown").to_string();
        if args.out.is_dir() {
            save_job(&args.out, &job)?;
        }
        match status.as_str() {
            "succeeded" => return finished(&job, id, args),
            "failed" | "cancelled" => {
                let reason = job["error"]["message"].as_str().unwrap_or("the server gave no reason");
                bail!("fine-tuning job {id} {status}: {reason}");
            }
            _ => std::thread::sleep(Duration::from_secs_f64(args.poll_seconds)),
        }
    }
}

fn finished(job: &serde_json::Value, id: &str, args: &FrontierArgs) -> Result<()> {
    let model = job["fine_tuned_model"].as_str().context("the job succeeded but names no fine_tuned_model")?;
    let data = args.data.as_ref().map_or("data/all".to_string(), |d| d.display().to_string());
    if args.json {
        let mut out = serde_json::json!({"model": model, "job": id, "status": "succeeded"});
        if let Some(t) = job["trained_tokens"].as_u64() {
            out["trained_tokens"] = t.into();
        }
        println!("{out}");
    } else {
        println!("fine-tuned model: {model}");
        if let Some(t) = job["trained_tokens"].as_u64() {
            println!("trained tokens: {t}");
        }
        println!("evaluate it with: pricer eval --model chat:{model} --data {data}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(title: &str, price: f64) -> Product {
        Product { title: title.into(), price: Some(price), ..Default::default() }
    }

    #[test]
    fn the_draw_spans_the_price_range_and_depends_only_on_the_seed() {
        // 90 cheap items, 10 dear ones: a plain sample of 20 would hold about 2 dear ones.
        let mut items: Vec<Product> = (0..90).map(|i| product(&format!("cheap {i}"), 5.0 + i as f64 * 0.1)).collect();
        items.extend((0..10).map(|i| product(&format!("dear {i}"), 900.0 + i as f64)));
        items.push(Product { title: "no price".into(), ..Default::default() });
        let a = draw_across_prices(&items, 20, 7);
        assert_eq!(a.len(), 20);
        let dear = a.iter().filter(|p| p.title.starts_with("dear")).count();
        assert!(dear >= 5, "{dear} dear items in {a:?}");
        assert!(a.iter().all(|p| p.price.is_some()));
        let titles = |v: &[Product]| v.iter().map(|p| p.title.clone()).collect::<Vec<_>>();
        assert_eq!(titles(&a), titles(&draw_across_prices(&items, 20, 7)));
        assert_ne!(titles(&a), titles(&draw_across_prices(&items, 20, 8)));
        // Never more than there is.
        assert_eq!(draw_across_prices(&items, 1000, 7).len(), 100);
    }

    #[test]
    fn an_example_is_the_chat_pricers_question_and_the_price_to_the_cent() {
        let prompt = Prompt::load(None).unwrap();
        let p = Product {
            title: "Cordless drill".into(),
            description: vec!["Two batteries".into()],
            price: Some(79.5),
            ..Default::default()
        };
        let v = example(&prompt, &p).unwrap();
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        let asked = prompt.messages(&p).unwrap();
        assert_eq!(m[0], asked[0]);
        assert_eq!(m[1], asked[1]);
        assert_eq!(m[2], serde_json::json!({"role": "assistant", "content": "Price is $79.50"}));
        assert!(example(&prompt, &Product { title: "x".into(), ..Default::default() }).is_err());
    }
}
