//! `pricer frontier-finetune` against a fine-tuning API served here on
//! 127.0.0.1 (OpenAI's `/files`, `/fine_tuning/jobs`, a job and its events,
//! and `/chat/completions` for the tuned model): a job that succeeds after a
//! few polls, one that fails, a 429 while polling, a 401 at upload, resuming
//! with `--job`, the uploaded files line by line, and `pricer eval` of the
//! tuned model against the same server.

use pricer_tests::{HttpReply, HttpRequest, pricer_bin, serve_http};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// What the server saw and holds.
#[derive(Default)]
struct World {
    /// Uploaded files by id: (purpose, bytes).
    files: HashMap<String, (String, Vec<u8>)>,
    /// Jobs by id: (base model, training file, times polled).
    jobs: HashMap<String, (String, String, usize)>,
    /// Job polls answered 429 so far.
    throttled: usize,
    /// User messages the tuned model was asked, by product title.
    asked: HashMap<String, String>,
}

type Shared = Arc<Mutex<World>>;

fn serve() -> (String, Shared) {
    let world: Shared = Arc::default();
    let w = world.clone();
    (serve_http(move |r| answer(r, &w)), world)
}

/// The part named `name` of a multipart body.
fn part<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a [u8]> {
    let text = body;
    let marker = format!("--{boundary}");
    let mut pieces = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&text[at..], marker.as_bytes()) {
        pieces.push(at + i);
        at += i + marker.len();
    }
    for w in pieces.windows(2) {
        let piece = &text[w[0] + marker.len()..w[1]];
        let head_end = find(piece, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&piece[..head_end]).to_lowercase();
        if head.contains(&format!("name=\"{name}\"")) {
            let content = &piece[head_end + 4..];
            return Some(content.strip_suffix(b"\r\n").unwrap_or(content));
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request of the fine-tuning API (or a chat completion of the tuned model).
fn answer(r: HttpRequest, world: &Shared) -> HttpReply {
    let (method, headers, body) = (r.method.as_str(), &r.headers, &r.body);
    let path = r.target.split('?').next().unwrap_or("").trim_start_matches("/v1");
    let error = |status: u16, msg: &str| (status, String::new(), serde_json::json!({"error": {"message": msg}}));
    let mut w = world.lock().unwrap();
    let (status, extra, reply): HttpReply = if headers.get("authorization").map(String::as_str)
        != Some("Bearer test-key")
    {
        error(401, "Incorrect API key provided")
    } else if method == "POST" && path == "/files" {
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        let boundary = ct.split("boundary=").nth(1).unwrap_or("").to_string();
        match (part(body, &boundary, "purpose"), part(body, &boundary, "file")) {
            (Some(purpose), Some(file)) => {
                let id = format!("file-{}", w.files.len() + 1);
                w.files.insert(id.clone(), (String::from_utf8_lossy(purpose).to_string(), file.to_vec()));
                (200, String::new(), serde_json::json!({"id": id, "object": "file", "purpose": "fine-tune"}))
            }
            _ => error(400, "a multipart body with purpose and file is required"),
        }
    } else if method == "POST" && path == "/fine_tuning/jobs" {
        let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let (model, train, val) =
            (req["model"].as_str(), req["training_file"].as_str(), req["validation_file"].as_str());
        match (model, train, val) {
            (Some(m), Some(t), Some(v)) if w.files.contains_key(t) && w.files.contains_key(v) => {
                let id = format!("ftjob-{}", w.jobs.len() + 1);
                w.jobs.insert(id.clone(), (m.to_string(), t.to_string(), 0));
                assert_eq!(req["suffix"], "pricer");
                (200, String::new(), serde_json::json!({"id": id, "status": "validating_files", "model": m}))
            }
            _ => error(400, "training_file, validation_file and model are required"),
        }
    } else if method == "GET" && path.starts_with("/fine_tuning/jobs/") {
        let rest = &path["/fine_tuning/jobs/".len()..];
        let (id, events) = match rest.strip_suffix("/events") {
            Some(id) => (id.to_string(), true),
            None => (rest.to_string(), false),
        };
        let throttle = !events && w.jobs.get(&id).is_some_and(|j| j.0 == "busy-model") && w.throttled < 2;
        if throttle {
            w.throttled += 1;
            (429, "Retry-After: 0\r\n".into(), serde_json::json!({"error": {"message": "slow down"}}))
        } else {
            match w.jobs.get_mut(&id) {
                None => error(404, &format!("no job {id}")),
                Some(job) if events => {
                    let data: Vec<serde_json::Value> = (1..=job.2)
                        .rev()
                        .map(|i| serde_json::json!({"id": format!("ev-{i}"), "created_at": i, "message": format!("Step {i}/3: training loss 0.{i}")}))
                        .collect();
                    (200, String::new(), serde_json::json!({"data": data}))
                }
                Some(job) => {
                    job.2 += 1;
                    let model = job.0.clone();
                    let status = if job.2 < 3 {
                        "running"
                    } else if model == "fail-model" {
                        "failed"
                    } else {
                        "succeeded"
                    };
                    let mut v = serde_json::json!({"id": id, "status": status, "model": model});
                    if status == "succeeded" {
                        v["fine_tuned_model"] = format!("ft:{model}:pricer:42").into();
                        v["trained_tokens"] = 12345.into();
                    }
                    if status == "failed" {
                        v["error"] = serde_json::json!({"message": "the training file has too few examples"});
                    }
                    (200, String::new(), v)
                }
            }
        }
    } else if method == "POST" && path == "/chat/completions" {
        let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let user = req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
        if !req["model"].as_str().unwrap_or("").starts_with("ft:") {
            error(404, "The model does not exist")
        } else {
            let title = user.lines().find(|l| l.starts_with("Item ")).unwrap_or("").to_string();
            w.asked.insert(title, user.to_string());
            (
                200,
                String::new(),
                serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Price is $50.00"}}]}),
            )
        }
    } else {
        error(404, &format!("no route {method} {path}"))
    };
    drop(w);
    (status, extra, reply)
}

/// 60 priced items whose titles the server can read back from a user message.
fn write_items(path: &Path) -> HashMap<String, f64> {
    let mut prices = HashMap::new();
    let lines: Vec<String> = (0..60)
        .map(|i| {
            let title = format!("Item {i:02} widget");
            let price = [3.25, 18.0, 74.99, 240.5, 999.0][i % 5] + i as f64 / 100.0;
            prices.insert(title.clone(), (price * 100.0_f64).round() / 100.0);
            serde_json::json!({"title": title, "text": format!("{title}\nA widget of size {i}."), "price": price})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    prices
}

fn run(url: &str, key: &str, args: &[&str]) -> Output {
    Command::new(pricer_bin())
        .args(args)
        .env("PRICER_CHAT_URL", url)
        .env("PRICER_CHAT_KEY", key)
        .output()
        .expect("pricer runs")
}

/// `pricer frontier-finetune` of `base` on the 60 items (written to
/// `dir/items.jsonl`) into `dir/ft`, polling without pause, then `extra`.
fn finetune(url: &str, key: &str, dir: &Path, base: &str, counts: (usize, usize), extra: &[&str]) -> Output {
    let items = dir.join("items.jsonl");
    write_items(&items);
    let (items, out) = (items.to_str().unwrap().to_string(), dir.join("ft").to_str().unwrap().to_string());
    let (train, validation) = (counts.0.to_string(), counts.1.to_string());
    let mut args = vec!["frontier-finetune", "--data", &items, "--base", base, "--train", &train];
    args.extend(["--validation", &validation, "--out", &out, "--poll-seconds", "0"]);
    args.extend(extra);
    run(url, key, &args)
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

#[test]
fn a_job_that_succeeds_after_a_few_polls_and_the_tuned_model_is_evaluated() {
    let (url, world) = serve();
    let dir = tempfile::tempdir().unwrap();
    let items = dir.path().join("items.jsonl");
    let prices = write_items(&items);
    let out = dir.path().join("ft");
    let (i, o) = (items.to_str().unwrap(), out.to_str().unwrap());
    let args = ["frontier-finetune", "--data", i, "--base", "ok-model", "--train", "20", "--validation", "5"];
    let r = run(&url, "test-key", &[&args[..], &["--out", o, "--poll-seconds", "0"]].concat());
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    // The job id first, the events as they came, the tuned model and how to evaluate it.
    assert!(stdout.starts_with("job: ftjob-1\n"), "{stdout}");
    assert!(stdout.contains("fine-tuned model: ft:ok-model:pricer:42"), "{stdout}");
    assert!(stdout.contains(&format!("pricer eval --model chat:ft:ok-model:pricer:42 --data {i}")), "{stdout}");
    for step in 1..=3 {
        assert_eq!(stderr.matches(&format!("Step {step}/3")).count(), 1, "each event once: {stderr}");
    }
    let job: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["id"], "ftjob-1");
    assert_eq!(job["status"], "succeeded");

    // The uploaded files are the written ones: 20 and 5 examples, each the chat pricer's question and the price.
    let (uploaded, train_file) = {
        let w = world.lock().unwrap();
        let train_id = &w.jobs["ftjob-1"].1;
        assert!(w.files.values().all(|(purpose, _)| purpose == "fine-tune"));
        (w.files[train_id].1.clone(), std::fs::read(out.join("train.jsonl")).unwrap())
    };
    assert_eq!(uploaded, train_file);
    let examples: Vec<serde_json::Value> =
        String::from_utf8(uploaded).unwrap().lines().map(|l| serde_json::from_str(l).expect("valid JSON")).collect();
    assert_eq!(examples.len(), 20);
    let val = std::fs::read_to_string(out.join("validation.jsonl")).unwrap();
    assert_eq!(val.lines().count(), 5);

    // Ask the tuned model about every item: what the chat pricer sends, to compare with the examples.
    let r = run(
        &url,
        "test-key",
        &[
            "eval",
            "--model",
            "chat:ft:ok-model:pricer:42",
            "--data",
            i,
            "--json",
            "--cache",
            dir.path().join("c.jsonl").to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    let asked = world.lock().unwrap().asked.clone();
    let mut spread = std::collections::HashSet::new();
    for e in &examples {
        let m = e["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0]["role"].as_str(), m[1]["role"].as_str(), m[2]["role"].as_str()),
            (Some("system"), Some("user"), Some("assistant"))
        );
        let user = m[1]["content"].as_str().unwrap();
        let title = user.lines().find(|l| l.starts_with("Item ")).unwrap();
        assert_eq!(asked.get(title).map(String::as_str), Some(user), "the user message of {title}");
        let answer = m[2]["content"].as_str().unwrap();
        assert_eq!(answer, format!("Price is ${:.2}", prices[title]));
        spread.insert((prices[title] / 10.0).log10().floor() as i64);
    }
    assert!(spread.len() >= 3, "drawn across price ranges: {spread:?}");
}

#[test]
fn a_failed_job_is_an_error_with_the_servers_reason() {
    let (url, _) = serve();
    let dir = tempfile::tempdir().unwrap();
    let r = finetune(&url, "test-key", dir.path(), "fail-model", (10, 3), &[]);
    let (stdout, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("fine-tuning job ftjob-1 failed: the training file has too few examples"), "{stderr}");
}

#[test]
fn a_429_while_polling_is_waited_out_and_a_job_can_be_followed_again() {
    let (url, world) = serve();
    let dir = tempfile::tempdir().unwrap();
    let r = finetune(&url, "test-key", dir.path(), "busy-model", (10, 3), &["--json"]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("429") && stderr.contains("slow down"), "{stderr}");
    assert_eq!(world.lock().unwrap().throttled, 2);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let want = serde_json::json!({"model": "ft:busy-model:pricer:42", "job": "ftjob-1", "status": "succeeded", "trained_tokens": 12345});
    assert_eq!(last, want);
    // --job follows a job already created (after Ctrl-C): no new upload, no new job.
    let out = dir.path().join("ft");
    let r = run(
        &url,
        "test-key",
        &["frontier-finetune", "--job", "ftjob-1", "--out", out.to_str().unwrap(), "--poll-seconds", "0"],
    );
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("fine-tuned model: ft:busy-model:pricer:42"), "{stdout}");
    let w = world.lock().unwrap();
    assert_eq!((w.files.len(), w.jobs.len()), (2, 1));
}

#[test]
fn a_401_at_upload_stops_at_once_and_a_dry_run_sends_nothing() {
    let (url, world) = serve();
    let dir = tempfile::tempdir().unwrap();
    let r = finetune(&url, "wrong-key", dir.path(), "ok-model", (10, 3), &[]);
    let (stdout, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("401") && stderr.contains("Incorrect API key provided"), "{stderr}");
    assert!(!stderr.contains("trying again"), "a 401 is not retried: {stderr}");
    // The files were written before the upload: nothing to redo.
    let out = dir.path().join("ft");
    assert_eq!(std::fs::read_to_string(out.join("train.jsonl")).unwrap().lines().count(), 10);

    let dry = tempfile::tempdir().unwrap();
    let r = finetune(&url, "test-key", dry.path(), "ok-model", (10, 3), &["--dry-run"]);
    assert!(r.status.success(), "{:?}", text(&r));
    assert_eq!(std::fs::read_to_string(dry.path().join("ft/validation.jsonl")).unwrap().lines().count(), 3);
    assert!(world.lock().unwrap().files.is_empty());
    assert!(!dry.path().join("ft/job.json").exists());
    // Nothing to train on is said plainly.
    let none = tempfile::tempdir().unwrap();
    let r = finetune(&url, "test-key", none.path(), "ok-model", (0, 3), &["--dry-run"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r).1.contains("--train must be at least 1"), "{:?}", text(&r));
}
