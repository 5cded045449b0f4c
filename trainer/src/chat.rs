//! Frontier models as pricers: a chat model behind any OpenAI-compatible
//! endpoint (OpenAI, llama.cpp's server, vLLM, Ollama) is asked the course's
//! question for each product, and the first number of its reply is its
//! estimate. Never compiled into the browser: the page stays private.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pricer::Product;
use pricer::text::{Budget, model_input};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Where requests go when `PRICER_CHAT_URL` is not set.
pub const DEFAULT_URL: &str = "https://api.openai.com/v1";
/// The course's prompt (week 6 and 7), replaceable with `--prompt FILE`.
const DEFAULT_PROMPT: &str = include_str!("../prompts/price.txt");
/// Words of the prepared text sent to the model (the course sent about 160 tokens).
const TEXT_WORDS: usize = 200;
/// Output budget: a price and little else.
const MAX_REPLY_TOKENS: u32 = 16;

/// Options of `--model chat:MODEL` (eval, predict and compare).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Chat models (--model chat:MODEL; endpoint $PRICER_CHAT_URL, key $PRICER_CHAT_KEY)")]
pub struct ChatArgs {
    /// The prompt: a `[system]` and a `[user]` section; `{text}` in the user
    /// section is replaced by the product. Default: trainer/prompts/price.txt.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds to wait for one reply before trying again.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Tries after the first when the server says 429 or 5xx, or is too slow.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// The reply cache, one JSON line per answer. Default:
    /// $XDG_CACHE_HOME/pricer/chat.jsonl (or ~/.cache/pricer/chat.jsonl).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Ask again even when the cache holds an answer (new answers are still cached).
    #[arg(long)]
    pub refresh: bool,
}

/// A system message and a user message around the product's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
}

impl Prompt {
    /// Reads `[system]` and `[user]` sections; the user section must hold `{text}`.
    pub fn parse(s: &str) -> Result<Self> {
        let (mut system, mut user, mut section) = (String::new(), String::new(), None);
        for line in s.lines() {
            match line.trim() {
                "[system]" => section = Some(0),
                "[user]" => section = Some(1),
                _ => match section {
                    Some(0) => system.push_str(&format!("{line}\n")),
                    Some(_) => user.push_str(&format!("{line}\n")),
                    None if line.trim().is_empty() => {}
                    None => bail!("prompt text before a [system] or [user] section: {line:?}"),
                },
            }
        }
        let (system, user) = (system.trim().to_string(), user.trim().to_string());
        if user.is_empty() {
            bail!("the prompt has no [user] section");
        }
        if !user.contains("{text}") {
            bail!("the prompt's [user] section has no {{text}} for the product");
        }
        Ok(Prompt { system, user })
    }

    /// The user message for one product's text.
    pub fn user_message(&self, text: &str) -> String {
        self.user.replace("{text}", text)
    }

    /// `--prompt FILE`, or the course's prompt.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => Prompt::parse(
                &std::fs::read_to_string(p).with_context(|| format!("cannot read the prompt {}", p.display()))?,
            )
            .with_context(|| format!("prompt {}", p.display())),
            None => Prompt::parse(DEFAULT_PROMPT),
        }
    }

    /// The messages the chat pricer sends for one product: the system
    /// message (when the prompt has one) and the user message around the
    /// product's prepared text.
    pub fn messages(&self, p: &Product) -> Result<Vec<serde_json::Value>, pricer::Error> {
        let text = model_input(p, Budget::Words(TEXT_WORDS))?;
        Ok(self.messages_for_user(&self.user_message(&text)))
    }

    fn messages_for_user(&self, user: &str) -> Vec<serde_json::Value> {
        let mut messages = Vec::new();
        if !self.system.is_empty() {
            messages.push(serde_json::json!({"role": "system", "content": self.system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": user}));
        messages
    }
}

/// The OpenAI-compatible endpoint and key: `$PRICER_CHAT_URL` (default
/// OpenAI's) and `$PRICER_CHAT_KEY`, required for OpenAI itself.
pub fn endpoint_from_env() -> Result<(String, Option<String>)> {
    let url = std::env::var("PRICER_CHAT_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let url = url.trim_end_matches('/').to_string();
    let key = std::env::var("PRICER_CHAT_KEY").ok().filter(|k| !k.is_empty());
    if key.is_none() && url == DEFAULT_URL {
        bail!("set PRICER_CHAT_KEY to an OpenAI API key (or PRICER_CHAT_URL to another OpenAI-compatible server)");
    }
    Ok((url, key))
}

/// The first number in a reply, as a price: "$1,299.99" is 1299.99, "Price
/// is $12." is 12. Thousands commas count only before three digits; a sign
/// is not part of a price.
pub fn parse_price(reply: &str) -> Option<f64> {
    let b = reply.as_bytes();
    let start = (0..b.len())
        .find(|&i| b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))?;
    let mut out = String::new();
    let mut i = start;
    let mut seen_dot = false;
    while i < b.len() {
        let c = b[i];
        let digits_after = |n: usize| (1..=n).all(|k| b.get(i + k).is_some_and(u8::is_ascii_digit));
        if c.is_ascii_digit() {
            out.push(c as char);
        } else if c == b',' && !seen_dot && digits_after(3) && !b.get(i + 4).is_some_and(u8::is_ascii_digit) {
            // a thousands separator: skip it
        } else if c == b'.' && !seen_dot && digits_after(1) {
            seen_dot = true;
            out.push('.');
        } else {
            break;
        }
        i += 1;
    }
    out.parse::<f64>().ok().filter(|p| p.is_finite())
}

/// Seconds from a `Retry-After` header: a number of seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some((when.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// How long to wait before try `attempt` (1 = the first retry): what the
/// server asked for, else 1 s doubling, never more than a minute.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let cap = Duration::from_secs(60);
    retry_after.unwrap_or_else(|| Duration::from_secs(1 << attempt.saturating_sub(1).min(6))).min(cap)
}

/// Answers already paid for, keyed by model, prompt and text.
struct Cache {
    path: Option<PathBuf>,
    replies: HashMap<String, String>,
}

impl Cache {
    fn open(path: Option<PathBuf>) -> Result<Self> {
        let mut replies = HashMap::new();
        if let Some(p) = &path
            && p.exists()
        {
            let f = std::fs::File::open(p).with_context(|| format!("cannot read the chat cache {}", p.display()))?;
            let mut bad = 0;
            for line in std::io::BufReader::new(f).lines() {
                let line = line.with_context(|| format!("cannot read the chat cache {}", p.display()))?;
                let entry: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| Some((v["key"].as_str()?.to_string(), v["reply"].as_str()?.to_string())));
                match entry {
                    Some((k, r)) => {
                        replies.insert(k, r);
                    }
                    None => bad += 1,
                }
            }
            if bad > 0 {
                // A line cut short by a kill mid-write: that answer is asked again.
                eprintln!("chat cache {}: {bad} unreadable line(s) skipped", p.display());
            }
        }
        Ok(Cache { path, replies })
    }

    /// Appends one answer at once, so an interrupted run keeps every finished one.
    fn add(&mut self, key: &str, model: &str, reply: &str) -> Result<()> {
        if let Some(p) = &self.path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let line = serde_json::json!({"key": key, "model": model, "reply": reply}).to_string() + "\n";
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .with_context(|| format!("cannot write the chat cache {}", p.display()))?;
        }
        self.replies.insert(key.to_string(), reply.to_string());
        Ok(())
    }
}

fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("pricer").join("chat.jsonl"))
}

/// Why one request gave no reply.
enum AskError {
    /// Every later request would fail the same way (bad key, unknown model,
    /// no server): the run stops.
    Fatal(String),
    /// This product's request failed after its retries.
    Failed(String),
}

/// A chat model as a pricer: the client that asks, and the cache of what it was told.
pub struct ChatPricer {
    client: Client,
    refresh: bool,
    cache: Cache,
}

/// What asks one question (shared by the worker threads).
struct Client {
    model: String,
    endpoint: String,
    key: Option<String>,
    prompt: Prompt,
    agent: ureq::Agent,
    concurrency: usize,
    retries: u32,
    timeout: f64,
}

impl ChatPricer {
    /// `model` without the `chat:` prefix; endpoint and key from the environment.
    pub fn new(model: &str, args: &ChatArgs) -> Result<Self> {
        if model.trim().is_empty() {
            bail!("chat: needs a model name, as in chat:gpt-4o-mini");
        }
        let (url, key) = endpoint_from_env()?;
        let prompt = Prompt::load(args.prompt.as_deref())?;
        let agent = agent(args.timeout)?;
        let client = Client {
            model: model.to_string(),
            endpoint: format!("{url}/chat/completions"),
            key,
            prompt,
            agent,
            concurrency: args.concurrency.max(1),
            retries: args.retries,
            timeout: args.timeout,
        };
        Ok(ChatPricer { client, refresh: args.refresh, cache: Cache::open(args.cache.clone().or_else(default_cache))? })
    }

    /// The estimate of every product, in order: a price, or why there is
    /// none (no number in the reply, or the request failed). Cached answers
    /// cost no request; new ones are cached as they arrive. Stops with an
    /// error when the server refuses every request (bad key, unknown model).
    pub fn price_all(&mut self, products: &[Product]) -> Result<Vec<Result<f64, String>>> {
        let (client, cache) = (&self.client, &mut self.cache);
        let mut out: Vec<Option<Result<f64, String>>> = vec![None; products.len()];
        let mut todo: Vec<(usize, String, String)> = Vec::new();
        for (i, p) in products.iter().enumerate() {
            let text = match model_input(p, Budget::Words(TEXT_WORDS)) {
                Ok(t) => t,
                Err(e) => {
                    out[i] = Some(Err(e.to_string()));
                    continue;
                }
            };
            let user = client.prompt.user_message(&text);
            let key = client.key_of(&user);
            match cache.replies.get(&key).filter(|_| !self.refresh) {
                Some(reply) => out[i] = Some(reading(reply)),
                None => todo.push((i, key, user)),
            }
        }
        let bar = ProgressBar::new(todo.len() as u64).with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed} < {eta}]")
                .expect("a valid progress template"),
        );
        bar.set_message(format!("asking {}", client.model));
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut fatal = None;
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = mpsc::channel();
            for _ in 0..client.concurrency.min(todo.len()) {
                let tx = tx.clone();
                let (todo, next, stop) = (&todo, &next, &stop);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, _, user)) = todo.get(j) else { break };
                        let answer = client.ask(user);
                        if matches!(answer, Err(AskError::Fatal(_))) {
                            // Here, not in the reader: no worker may start another request.
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((j, answer)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            // One thread writes the answers, in the order they arrive.
            for (j, answer) in rx {
                let (i, key, _) = &todo[j];
                match answer {
                    Ok(reply) => {
                        out[*i] = Some(reading(&reply));
                        cache.add(key, &client.model, &reply)?;
                    }
                    Err(AskError::Failed(why)) => out[*i] = Some(Err(why)),
                    Err(AskError::Fatal(why)) => {
                        fatal.get_or_insert(why);
                    }
                }
                bar.inc(1);
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        if let Some(why) = fatal {
            bail!("{why} (the answers received before are kept in the cache)");
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_else(|| Err("not asked".into()))).collect())
    }
}

impl Client {
    fn key_of(&self, user: &str) -> String {
        let mut h = Sha256::new();
        for part in [&self.model, &self.prompt.system, user] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// One product's question, with retries on 429, 5xx and timeouts.
    fn ask(&self, user: &str) -> Result<String, AskError> {
        let messages = self.prompt.messages_for_user(user);
        let body = serde_json::json!({
            "model": self.model, "messages": messages, "max_tokens": MAX_REPLY_TOKENS, "seed": 42,
        });
        let mut attempt = 0;
        loop {
            let mut req = self.agent.post(&self.endpoint).header("content-type", "application/json");
            if let Some(k) = &self.key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let (why, retry_after) = match exchange(req.send_json(&body), &self.endpoint, self.timeout) {
                Exchange::Answered(200..=299, text) => return reply_content(&text).map_err(AskError::Failed),
                Exchange::Answered(status @ (400 | 401 | 403 | 404), text) => {
                    return Err(AskError::Fatal(format!(
                        "{} refused model {:?}: the server answered {status}: {}",
                        self.endpoint,
                        self.model,
                        server_message(&text)
                    )));
                }
                Exchange::Answered(status, text) => {
                    return Err(AskError::Failed(format!("the server answered {status}: {}", server_message(&text))));
                }
                Exchange::Retry(why, after) => (why, after),
                Exchange::Unreachable(why) => return Err(AskError::Fatal(why)),
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(AskError::Failed(format!("{why} ({attempt} tries)")));
            }
            std::thread::sleep(backoff(attempt, retry_after));
        }
    }
}

/// An HTTP client that gives up on a request after `timeout` seconds and
/// hands every status back (the callers decide what an error means).
pub fn agent(timeout: f64) -> Result<ureq::Agent> {
    if !(timeout > 0.0 && timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs_f64(timeout)))
        .http_status_as_error(false)
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// One HTTP exchange as a client that retries sees it.
pub enum Exchange {
    /// A status to act on (2xx, or a refusal such as 401), with the body.
    Answered(u16, String),
    /// Worth another try (429, 5xx, a timeout, a dropped connection): why,
    /// and how long the server asked to wait.
    Retry(String, Option<Duration>),
    /// No server there: every later request would fail the same way.
    Unreachable(String),
}

/// Reads what came back from a request to `url`.
pub fn exchange(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>, url: &str, timeout: f64) -> Exchange {
    match sent {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            match status {
                429 | 500..=599 => {
                    Exchange::Retry(format!("the server answered {status}: {}", server_message(&text)), retry_after)
                }
                _ => Exchange::Answered(status, text),
            }
        }
        Err(ureq::Error::Timeout(_)) => Exchange::Retry(format!("no reply within {timeout} s"), None),
        Err(e @ (ureq::Error::HostNotFound | ureq::Error::ConnectionFailed)) => {
            Exchange::Unreachable(format!("cannot reach {url}: {e}"))
        }
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Exchange::Unreachable(format!("cannot reach {url}: {e}"))
        }
        Err(e) => Exchange::Retry(format!("the request failed: {e}"), None),
    }
}

/// A cached or fresh reply read as a price.
fn reading(reply: &str) -> Result<f64, String> {
    parse_price(reply)
        .ok_or_else(|| format!("the reply has no number: {:?}", reply.chars().take(80).collect::<String>()))
}

/// The assistant's text in a chat-completions response.
fn reply_content(body: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the reply is not chat-completions JSON: {e}"))?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the reply has no choices[0].message.content".to_string())
}

/// The server's own error message (OpenAI's `{"error": {"message": ...}}`), or the body's start.
pub fn server_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_number_of_a_reply_is_its_price() {
        let cases = [
            ("42", Some(42.0)),
            ("$1,299.99", Some(1299.99)),
            ("Price is $12.", Some(12.0)),
            ("about 1,000,000 dollars", Some(1_000_000.0)),
            ("It costs .99", Some(0.99)),
            ("-5", Some(5.0)),
            ("3,14 EUR", Some(3.0)),
            ("$ 80 to $100", Some(80.0)),
            ("I can't tell.", None),
            ("", None),
            ("$.", None),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_price(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn the_course_prompt_parses_and_bad_prompts_are_refused() {
        let p = Prompt::parse(DEFAULT_PROMPT).unwrap();
        assert!(p.system.starts_with("You estimate prices"));
        assert_eq!(p.user_message("Drill"), "How much does this cost to the nearest dollar?\n\nDrill");
        assert!(Prompt::parse("[user]\nPrice?").unwrap_err().to_string().contains("{text}"));
        assert!(Prompt::parse("[system]\nHi").unwrap_err().to_string().contains("no [user]"));
        assert!(Prompt::parse("stray\n[user]\n{text}").is_err());
        assert_eq!(Prompt::parse("[user]\n{text}").unwrap().system, "");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_the_backoff() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 10:00:07 GMT", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(backoff(1, None), Duration::from_secs(1));
        assert_eq!(backoff(3, None), Duration::from_secs(4));
        assert_eq!(backoff(30, None), Duration::from_secs(60));
        assert_eq!(backoff(3, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(backoff(1, Some(Duration::from_secs(3600))), Duration::from_secs(60));
    }

    #[test]
    fn the_cache_keeps_answers_and_skips_a_line_cut_short() {
        let dir = std::env::temp_dir().join(format!("pricer-chat-cache-{}", std::process::id()));
        let path = dir.join("sub").join("chat.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Cache::open(Some(path.clone())).unwrap();
        c.add("k1", "m", "$12").unwrap();
        c.add("k2", "m", "no idea").unwrap();
        // A kill in the middle of a write leaves half a line.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"key\": \"k3\", \"rep").unwrap();
        let back = Cache::open(Some(path)).unwrap();
        assert_eq!(back.replies.len(), 2);
        assert_eq!(back.replies["k1"], "$12");
        assert_eq!(reading(&back.replies["k2"]).unwrap_err(), "the reply has no number: \"no idea\"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
