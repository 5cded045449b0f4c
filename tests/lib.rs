//! Helpers for the workspace-level tests: the built `pricer` binary and a
//! synthetic product catalogue in the Amazon 2023 raw format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pricer` binary of the same profile as the running test
/// (`cargo build --release --all-targets` makes it; the README's test command does).
pub fn pricer_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/pricer
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("pricer");
    assert!(bin.exists(), "{} is missing: run `cargo build --release --all-targets` first", bin.display());
    bin
}

/// Runs `pricer` with `args`, returning its output (never panics on failure).
pub fn pricer(args: &[&str]) -> Output {
    Command::new(pricer_bin()).args(args).output().expect("pricer runs")
}

/// Runs `pricer` with `input` on its standard input; returns stdout.
pub fn pricer_stdin(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(pricer_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pricer runs");
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("pricer reads its input");
    String::from_utf8(child.wait_with_output().expect("pricer ends").stdout).expect("UTF-8 output")
}

/// Runs `pricer` with `input` on stdin; returns its exit code and stderr.
pub fn pricer_status(args: &[&str], input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(pricer_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pricer runs");
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("pricer reads its input");
    let out = child.wait_with_output().expect("pricer ends");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Runs `pricer`, asserting success; returns stdout.
pub fn pricer_ok(args: &[&str]) -> String {
    let out = pricer(args);
    assert!(
        out.status.success(),
        "pricer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A tiny deterministic generator (64-bit LCG): the fixture needs no `rand`.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next_f64() * xs.len() as f64) as usize % xs.len()]
    }
}

const KINDS: &[(&str, &str, f64)] = &[
    ("Blender", "Appliances", 60.0),
    ("Refrigerator", "Appliances", 520.0),
    ("Electric Guitar", "Musical_Instruments", 320.0),
    ("Guitar Strings", "Musical_Instruments", 9.0),
    ("Cordless Drill", "Tools_and_Home_Improvement", 120.0),
    ("Tape Measure", "Tools_and_Home_Improvement", 14.0),
    ("Stapler", "Office_Products", 16.0),
    ("Office Chair", "Office_Products", 210.0),
    ("Toy Car", "Toys_and_Games", 22.0),
    ("Phone Case", "Cell_Phones_and_Accessories", 13.0),
];
const QUALITY: &[(&str, f64)] =
    &[("Premium", 1.6), ("Professional", 1.35), ("Basic", 0.7), ("Compact", 0.85), ("Deluxe", 1.5)];
const BRANDS: &[&str] = &["Acme", "Northwind", "Contoso", "Globex", "Initech"];
const FILLER: &[&str] = &[
    "Designed for everyday use at home and at work.",
    "Built from durable materials that last for years.",
    "Easy to clean and simple to store when not in use.",
    "Backed by a friendly customer service team.",
    "Tested to meet strict quality and safety standards.",
    "A thoughtful gift for family and friends.",
];

/// One raw Amazon 2023 metadata record, as a JSON line.
pub fn raw_record(rng: &mut Lcg, i: usize) -> String {
    let (kind, category, base) = *rng.pick(KINDS);
    let (quality, mult) = *rng.pick(QUALITY);
    let brand = *rng.pick(BRANDS);
    let price = (base * mult * (0.85 + 0.3 * rng.next_f64()) * 100.0).round() / 100.0;
    let description: Vec<String> = (0..4).map(|_| rng.pick(FILLER).to_string()).collect();
    let features = vec![
        format!("{quality} {kind} by {brand}"),
        format!("Model {i} of the {brand} {kind} line, serial AB{i:07}"),
        rng.pick(FILLER).to_string(),
    ];
    serde_json::json!({
        "main_category": category,
        "title": format!("{brand} {quality} {kind} No. {i}"),
        "average_rating": 4.2,
        "rating_number": 10,
        "features": features,
        "description": description,
        "price": price,
        "images": [],
        "videos": [],
        "store": brand,
        "categories": [],
        "details": {"Brand": brand, "Item Weight": format!("{:.1} pounds", base / 40.0 + 0.5),
                    "Best Sellers Rank": {category: 1000 + i}},
        "parent_asin": format!("B{i:09}"),
        "bought_together": null
    })
    .to_string()
}

/// Writes `n` good records plus the kinds of bad and dropped records real
/// files hold, returning how many of each were written.
pub fn write_fixture(path: &Path, n: usize, seed: u64) -> FixtureCounts {
    let mut rng = Lcg::new(seed);
    let mut lines: Vec<String> = (0..n).map(|i| raw_record(&mut rng, i)).collect();
    lines.push("{\"title\": \"Broken record\", \"price\": ".into()); // malformed JSON
    lines.push("{\"title\": \"Unknown price\", \"price\": \"None\", \"description\": [\"x\"]}".into());
    lines.push("{\"title\": \"Too thin\", \"price\": 10.0, \"description\": [\"short\"]}".into());
    lines.push(lines[0].clone()); // duplicate
    std::fs::write(path, lines.join("\n") + "\n").expect("write fixture");
    FixtureCounts { good: n, malformed: 1, no_price: 1, too_little_content: 1, duplicates: 1 }
}

/// Writes `n` priced records in the text formats of the course's published
/// samples (`more.jsonl.gz`): a third `curated_scrubbed_title`, a third
/// `llm_summary`, a third `raw_fields`, each priced like the raw fixture.
pub fn write_more_fixture(path: &Path, n: usize, seed: u64) {
    let mut rng = Lcg::new(seed);
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let (kind, category, base) = *rng.pick(KINDS);
            let (quality, mult) = *rng.pick(QUALITY);
            let brand = *rng.pick(BRANDS);
            let price = (base * mult * (0.85 + 0.3 * rng.next_f64()) * 100.0).round() / 100.0;
            let title = format!("{brand} {quality} {kind} Mk {i}");
            let desc: Vec<&str> = (0..3).map(|_| *rng.pick(FILLER)).collect();
            let (format, text) = match i % 3 {
                0 => ("curated_scrubbed_title", format!("{title}\n{} {quality} {kind} by {brand}.", desc.join(" "))),
                1 => (
                    "llm_summary",
                    format!(
                        "Title: {title}\nCategory: {}\nBrand: {brand}\nDescription: A {quality} {kind}. {}\nDetails: {}",
                        category.replace('_', " "),
                        desc[0],
                        desc[1]
                    ),
                ),
                _ => (
                    "raw_fields",
                    format!(
                        "Title: {title}\n  Description: [{:?}]\n  Features: ['{quality} {kind}', 'by {brand}', {:?}]",
                        desc[0], desc[1]
                    ),
                ),
            };
            serde_json::json!({"title": title, "category": null, "price": price, "text": text,
                               "details": null, "format": format, "source": "fixture"})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write fixture");
}

/// What [`write_fixture`] wrote.
pub struct FixtureCounts {
    pub good: usize,
    pub malformed: usize,
    pub no_price: usize,
    pub too_little_content: usize,
    pub duplicates: usize,
}

/// The data folder beside the repository (`../shared/data/amazon-2023`).
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/amazon-2023")
}

/// Writes a small BERT-style WordPiece `tokenizer.json` whose vocabulary
/// covers the fixture's words (anything else is `[UNK]`).
pub fn write_tiny_tokenizer(path: &Path) {
    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    let text = KINDS
        .iter()
        .map(|k| k.0)
        .chain(QUALITY.iter().map(|q| q.0))
        .chain(BRANDS.iter().copied())
        .chain(FILLER.iter().copied())
        .chain([
            "no", "model", "of", "the", "line", "serial", "by", "big", "fridge", "for", "family", "staples", "paper",
        ])
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if !words.contains(&w.to_string()) {
            words.push(w.to_string());
        }
    }
    for d in 0..10 {
        words.push(d.to_string());
        words.push(format!("##{d}"));
    }
    for p in [".", ",", ":", "-", "_"] {
        words.push(p.to_string());
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    std::fs::write(path, pricer::tokenizer::wordpiece_json(&words)).expect("write tokenizer");
}

/// One HTTP/1.1 request as a test server reads it.
pub struct HttpRequest {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// What a test server answers: status, extra header lines (each ending in
/// `\r\n`), and a JSON body.
pub type HttpReply = (u16, String, serde_json::Value);

/// Serves `answer` on 127.0.0.1 (a thread per connection, one request each);
/// returns the base URL `http://127.0.0.1:PORT/v1`.
pub fn serve_http(answer: impl Fn(HttpRequest) -> HttpReply + Send + Sync + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let url = format!("http://{}/v1", listener.local_addr().expect("its address"));
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                let mut headers = std::collections::HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let mut parts = request_line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let (status, extra, reply) = answer(HttpRequest { method, target, headers, body });
                let body = reply.to_string();
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

/// `bytes` (a model file) with its tensor checksum (`pricer.tensor_crc32`)
/// computed again over its tensor data as it is now, as a careful forger
/// would: the loader then checks the values themselves. `None` when the
/// header does not parse.
pub fn with_checksum(bytes: &[u8]) -> Option<Vec<u8>> {
    use candle_core::quantized::gguf_file::Content;
    let mut cursor = std::io::Cursor::new(bytes);
    let content = Content::read(&mut cursor).ok()?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut crc = crc32fast::Hasher::new();
    for name in names {
        let t = content.tensor(&mut cursor, name, &candle_core::Device::Cpu).ok()?;
        crc.update(&t.data().ok()?);
    }
    // The key's bytes, then its value type (u32: 4) and the value.
    let key = b"pricer.tensor_crc32";
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let mut out = bytes.to_vec();
    out.get_mut(at + 4..at + 8)?.copy_from_slice(&crc.finalize().to_le_bytes());
    Some(out)
}

/// A real model file with the first value of tensor `name` made NaN
/// (an f32 value, or the scale of an f16 or 8-/4-bit block) and its
/// checksum computed again.
pub fn with_nan_in(bytes: &[u8], name: &str) -> Vec<u8> {
    use candle_core::quantized::{GgmlDType, gguf_file::Content};
    let content = Content::read(&mut std::io::Cursor::new(bytes)).expect("a model file");
    let info = &content.tensor_infos[name];
    let at = content.tensor_data_offset as usize + info.offset as usize;
    let mut out = bytes.to_vec();
    match info.ggml_dtype {
        GgmlDType::F32 => out[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes()),
        _ => out[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes()),
    }
    with_checksum(&out).expect("still parses")
}

/// A curated fixture catalogue, a tiny tokenizer and a random tiny base
/// encoder in a temporary folder: what fine-tuning and recipe tests start from.
pub struct TinySetup {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub base: PathBuf,
}

/// [`TinySetup`] of 300 fixture products drawn with `seed`, curated to
/// `max_tokens` tokens.
pub fn tiny_setup(seed: u64, max_tokens: usize) -> TinySetup {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = dir.path().to_path_buf();
    let raw = root.join("raw.jsonl");
    write_fixture(&raw, 300, seed);
    let tok = root.join("tokenizer.json");
    write_tiny_tokenizer(&tok);
    let data = root.join("data");
    let (raw_s, tok_s, data_s) = (raw.to_str().unwrap(), tok.to_str().unwrap(), data.to_str().unwrap());
    pricer_ok(&[
        "curate",
        "--input",
        raw_s,
        "--tokenizer",
        tok_s,
        "--max-tokens",
        &max_tokens.to_string(),
        "--out",
        data_s,
    ]);
    let base = root.join("base");
    pricer_ok(&["lab", "init-base", "--tokenizer", tok_s, "--out", base.to_str().unwrap()]);
    TinySetup { _dir: dir, root, data, base }
}
