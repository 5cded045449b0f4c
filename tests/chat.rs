//! Chat models as pricers (`--model chat:MODEL`) against an OpenAI-compatible
//! server started here on 127.0.0.1: parsing of the replies, retries after a
//! 429 and a 500, a timeout, the reply cache, and clean errors.

use pricer_tests::{HttpReply, HttpRequest, pricer_bin, serve_http};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests received, per product title word (the server's script key).
type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// Products whose titles tell the server how to answer, with their true prices.
const ITEMS: &[(&str, f64)] = &[
    ("plain", 40.0),       // "42"
    ("dollars", 1000.0),   // "$1,299.99"
    ("words", 10.0),       // no number: an error line
    ("ratelimited", 20.0), // 429 (Retry-After: 0), then "Price is $19.99"
    ("broken", 30.0),      // 500 every time
    ("slow", 50.0),        // answers after the client's timeout
];

/// Starts the server; returns its base URL and the request counts.
fn serve() -> (String, Counts) {
    let counts: Counts = Arc::default();
    let c = counts.clone();
    (serve_http(move |r| answer(r, &c)), counts)
}

/// One request, answered by the script of the product's title word.
fn answer(r: HttpRequest, counts: &Counts) -> HttpReply {
    let req: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let user = req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
    let word = ITEMS.iter().map(|(w, _)| *w).find(|w| user.contains(&format!("Item {w}"))).unwrap_or("other");
    let seen = {
        let mut c = counts.lock().unwrap();
        let n = c.entry(word.to_string()).or_default();
        *n += 1;
        *n
    };
    let chat = |content: &str| {
        (
            200,
            String::new(),
            serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}),
        )
    };
    let error = |status, msg: &str| (status, String::new(), serde_json::json!({"error": {"message": msg}}));
    if r.headers.get("authorization").map(String::as_str) != Some("Bearer test-key") {
        error(401, "Incorrect API key provided")
    } else if req["model"] != "test-model" || !req["messages"][0]["content"].as_str().unwrap_or("").contains("prices") {
        error(404, "The model does not exist")
    } else {
        match word {
            "plain" => chat("42"),
            "dollars" => chat("$1,299.99"),
            "words" => chat("I cannot know that."),
            "ratelimited" if seen == 1 => {
                (429, "Retry-After: 0\r\n".into(), serde_json::json!({"error": {"message": "slow down"}}))
            }
            "ratelimited" => chat("Price is $19.99"),
            "broken" => error(500, "internal error"),
            "slow" => {
                std::thread::sleep(Duration::from_millis(1500));
                chat("10")
            }
            _ => chat("1"),
        }
    }
}

fn write_items(path: &Path) {
    let lines: Vec<String> = ITEMS
        .iter()
        .map(|(w, price)| {
            serde_json::json!({"title": format!("Item {w}"), "text": format!("Item {w}\nA thing to price."), "price": price})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn run(url: &str, key: &str, args: &[&str]) -> Output {
    Command::new(pricer_bin()).args(args).env("PRICER_CHAT_URL", url).env("PRICER_CHAT_KEY", key).output().unwrap()
}

fn count(counts: &Counts, word: &str) -> usize {
    counts.lock().unwrap().get(word).copied().unwrap_or(0)
}

#[test]
fn a_chat_model_is_evaluated_with_retries_a_timeout_and_a_cache() {
    let (url, counts) = serve();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("items.jsonl");
    write_items(&data);
    let cache = dir.path().join("cache").join("chat.jsonl");
    let args = [
        "eval",
        "--model",
        "chat:test-model",
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--cache",
        cache.to_str().unwrap(),
        "--timeout",
        "0.5",
        "--retries",
        "1",
    ];
    let out = run(&url, "test-key", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Scored: plain 42 (truth 40), dollars 1299.99 (1000), ratelimited 19.99 (20).
    assert_eq!(s["n"], 3, "{s}");
    assert_eq!(s["errors"], 3, "{s}");
    assert_eq!(s["model"], "chat:test-model");
    let mae = (2.0 + 299.99 + 0.01) / 3.0;
    assert!((s["mae"].as_f64().unwrap() - mae).abs() < 1e-9, "{s}");
    // Each failure is named on stderr, not scored as zero.
    assert!(stderr.contains("\"Item words\": the reply has no number: \"I cannot know that.\""), "{stderr}");
    assert!(stderr.contains("\"Item broken\": the server answered 500: internal error (2 tries)"), "{stderr}");
    assert!(stderr.contains("\"Item slow\": no reply within 0.5 s (2 tries)"), "{stderr}");
    // One try each, two for what was retried.
    let tries: Vec<usize> = ITEMS.iter().map(|(w, _)| count(&counts, w)).collect();
    assert_eq!(tries, vec![1, 1, 1, 2, 2, 2]);

    // Again: every answer comes from the cache; only the failures are asked again.
    let again = run(&url, "test-key", &args);
    assert!(again.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(), s);
    let tries: Vec<usize> = ITEMS.iter().map(|(w, _)| count(&counts, w)).collect();
    assert_eq!(tries, vec![1, 1, 1, 2, 4, 4]);

    // predict answers the same, from the cache, with the same prompt.
    let cache_arg = ["--cache", cache.to_str().unwrap()];
    let p = run(
        &url,
        "test-key",
        &[&["predict", "--model", "chat:test-model", "Item plain\nA thing to price."][..], &cache_arg].concat(),
    );
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(answer, serde_json::json!({"price": 42.0, "low": 42.0, "high": 42.0}));
    assert_eq!(count(&counts, "plain"), 1);

    // compare puts a chat model and a model file in one table.
    let model = dir.path().join("constant.gguf");
    let train = dir.path().join("train.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            serde_json::json!({"title": format!("Thing {i}"), "text": format!("Thing {i}"), "price": 10 + i})
                .to_string()
        })
        .collect();
    std::fs::write(&train, lines.join("\n")).unwrap();
    let t = run(
        &url,
        "",
        &["train", "--kind", "constant", "--data", train.to_str().unwrap(), "--out", model.to_str().unwrap()],
    );
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let c = run(
        &url,
        "test-key",
        &[
            &[
                "compare",
                "--data",
                data.to_str().unwrap(),
                "chat:test-model",
                model.to_str().unwrap(),
                "--retries",
                "0",
            ][..],
            &cache_arg,
        ]
        .concat(),
    );
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let table = String::from_utf8_lossy(&c.stdout);
    // With the default timeout the slow reply ("10", truth 50) arrives in time; the 500 stays an error.
    assert!(
        table.contains("| chat:test-model | items.jsonl | 4 | $85.50 | 0.778 | 50.0% | $21.00 | 2 |  |"),
        "{table}"
    );
    assert!(table.contains("| constant.gguf | items.jsonl | 6 |"), "{table}");
    // The second model against the first, paired on the 4 items both estimated.
    let row = table.lines().find(|l| l.starts_with("| constant.gguf")).unwrap();
    assert!(row.ends_with(" on 4 |") && row.contains(" ["), "{row}");
    assert!(table.contains("paired bootstrap"), "{table}");
}

#[test]
fn a_refused_key_an_unknown_model_and_no_server_are_clear_errors() {
    let (url, counts) = serve();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("items.jsonl");
    write_items(&data);
    let cache = dir.path().join("chat.jsonl");
    let eval = |url: &str, key: &str, model: &str| {
        run(url, key, &["eval", "--model", model, "--data", data.to_str().unwrap(), "--cache", cache.to_str().unwrap()])
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();

    let bad_key = eval(&url, "wrong", "chat:test-model");
    assert!(!bad_key.status.success());
    assert!(
        stderr(&bad_key).contains("refused model \"test-model\": the server answered 401: Incorrect API key provided"),
        "{}",
        stderr(&bad_key)
    );
    // The run stopped instead of sending every item to a server that refuses them.
    let total: usize = counts.lock().unwrap().values().sum();
    assert!(total <= 4, "{total} requests");

    let unknown = eval(&url, "test-key", "chat:no-such-model");
    assert!(stderr(&unknown).contains("404: The model does not exist"), "{}", stderr(&unknown));

    // A port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let down = eval(&nowhere, "test-key", "chat:test-model");
    assert!(!down.status.success());
    assert!(stderr(&down).contains("cannot reach"), "{}", stderr(&down));

    let no_name = eval(&url, "test-key", "chat:");
    assert!(stderr(&no_name).contains("needs a model name"), "{}", stderr(&no_name));
    // Nothing was cached from refusals.
    assert!(!cache.exists() || std::fs::read_to_string(&cache).unwrap().is_empty());

    // The hosted default needs a key.
    let no_key = Command::new(pricer_bin())
        .args(["eval", "--model", "chat:gpt-4o-mini", "--data", data.to_str().unwrap()])
        .env_remove("PRICER_CHAT_URL")
        .env_remove("PRICER_CHAT_KEY")
        .output()
        .unwrap();
    assert!(stderr(&no_key).contains("set PRICER_CHAT_KEY"), "{}", stderr(&no_key));
}
