//! Mutation fuzzing of everything that reads untrusted bytes: the readers
//! (raw and curated JSONL, CSV, gzip), text preparation, and the model-file
//! loader. Seeds are valid inputs; each execution mutates one (bit flips,
//! random bytes, cut, duplicated or spliced ranges, tokens that parsers trip
//! on) and runs it through; a panic, or an execution slower than a second,
//! is a finding, saved under target/fuzz-findings/ and failed on.
//!
//! CI runs a bounded number of executions per target; the full run is
//!     PRICER_FUZZ_EXECS=1000000 cargo test --release --test fuzz -- --nocapture
//! and findings are kept below as regression inputs once fixed.

use pricer::explain::ExplainOptions;
use pricer::readers::{Format, read_products};
use pricer::text::{Budget, prepare};
use pricer::{Estimator, Product, TextTokenizer};
use pricer_tests::{Lcg, pricer_ok, raw_record, write_fixture, write_tiny_tokenizer};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Executions per target: `PRICER_FUZZ_EXECS`, else a bound that keeps CI short.
fn execs() -> u64 {
    std::env::var("PRICER_FUZZ_EXECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

const TOKENS: &[&[u8]] = &[
    b"\0",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"1e999",
    b"-1",
    b"NaN",
    b"null",
    b"18446744073709551616",
    b"\xff\xfe",
    b"\xe2\x80\xae",
    b"'",
    b"\"price\": ",
    b"\"details\": \"{",
    b"Title: ",
    b"\x1f\x8b",
    b"\xf0\x9f\x98\x80",
];

/// One random change of `data` (or a splice with `other`).
fn mutate(rng: &mut Lcg, data: &mut Vec<u8>, other: &[u8]) {
    let mut pick = |n: usize| (rng.next_f64() * n as f64) as usize % n.max(1);
    let len = data.len();
    match pick(8) {
        0 if len > 0 => {
            let i = pick(len);
            data[i] ^= 1 << pick(8);
        }
        1 if len > 0 => {
            let i = pick(len);
            data[i] = pick(256) as u8;
        }
        2 => data.truncate(pick(len + 1)),
        3 if len > 0 => {
            let (a, n) = (pick(len), pick(64));
            let end = (a + n).min(len);
            data.drain(a..end);
        }
        4 if len > 0 => {
            let (a, n) = (pick(len), 1 + pick(256));
            let chunk: Vec<u8> = data[a..(a + n).min(len)].to_vec();
            let at = pick(len + 1);
            data.splice(at..at, chunk);
        }
        5 if !other.is_empty() => {
            let (a, b) = (pick(len + 1), pick(other.len()));
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        _ => {
            let t = TOKENS[pick(TOKENS.len())];
            let at = pick(len + 1);
            data.splice(at..at, t.iter().copied());
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Runs `target` on `execs()` mutated inputs; fails with every finding saved.
fn fuzz(name: &str, seeds: &[Vec<u8>], seed: u64, target: impl Fn(&[u8])) {
    let mut rng = Lcg::new(seed);
    let findings_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-findings").join(name);
    let mut findings = Vec::new();
    let n = execs();
    let start = Instant::now();
    for i in 0..n {
        let base = &seeds[(rng.next_f64() * seeds.len() as f64) as usize % seeds.len()];
        let other = &seeds[(rng.next_f64() * seeds.len() as f64) as usize % seeds.len()];
        let mut input = base.clone();
        for _ in 0..1 + (rng.next_f64() * 4.0) as usize {
            mutate(&mut rng, &mut input, other);
        }
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let slow = t.elapsed() > Duration::from_secs(1);
        if outcome.is_err() || slow {
            std::fs::create_dir_all(&findings_dir).unwrap();
            let path = findings_dir.join(format!("{}-{i}", if slow { "slow" } else { "panic" }));
            std::fs::write(&path, &input).unwrap();
            findings.push(path);
        }
    }
    eprintln!("fuzz {name}: {n} executions in {:.1} s, {} findings", start.elapsed().as_secs_f64(), findings.len());
    assert!(findings.is_empty(), "fuzz {name}: inputs that panicked or hung: {findings:?}");
}

/// Every product of `bytes` read as `format`, each prepared both ways.
fn read_and_prepare(bytes: &[u8], format: Format, tok: &TextTokenizer) {
    let Ok(records) = read_products(std::io::Cursor::new(bytes.to_vec()), format) else { return };
    for p in records.take(10_000).flatten() {
        let _ = prepare(&p, Budget::Words(160));
        let _ = prepare(&p, Budget::Tokens(tok, 32));
        let _ = p.details_json();
    }
}

fn tiny_tokenizer() -> TextTokenizer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    write_tiny_tokenizer(&path);
    TextTokenizer::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fuzz_jsonl_and_gzip_readers() {
    let tok = tiny_tokenizer();
    let mut rng = Lcg::new(1);
    let raw: Vec<u8> = (0..4).map(|i| raw_record(&mut rng, i) + "\n").collect::<String>().into_bytes();
    let curated = concat!(
        r#"{"title": "Drill", "category": "Tools", "price": 89.5, "text": "Drill\n20V", "details": "{\"Brand\": \"Acme\"}"}"#,
        "\n",
        r#"{"title": "Amp", "price": "$1,299.00", "text": "Title: Amp\nCategory: Musical_Instruments\nBrand: X\nDescription: ['Loud', 'Red']", "format": "llm_summary"}"#,
        "\n",
        r#"{"title": "Case", "price": 9, "text": "Case\n['a', \"b's\"]\n{\"Color\": \"Red\"}", "format": "raw_fields"}"#,
        "\n"
    )
    .as_bytes()
    .to_vec();
    let seeds = vec![raw.clone(), curated.clone(), gzip(&raw), gzip(&curated)];
    fuzz("jsonl", &seeds, 11, |b| read_and_prepare(b, Format::Jsonl, &tok));
}

#[test]
fn fuzz_csv_reader() {
    let tok = tiny_tokenizer();
    let csv = b"title,price,description,category\nDrill,89.50,\"20V, two batteries\",Tools\n\"Amp \"\"X\"\"\",$1299,,Musical\nCase,,red,\n".to_vec();
    let seeds = vec![csv.clone(), gzip(&csv), b"name,cost\nx,1\n".to_vec()];
    fuzz("csv", &seeds, 12, |b| read_and_prepare(b, Format::Csv, &tok));
}

#[test]
fn fuzz_free_text_preparation() {
    let tok = tiny_tokenizer();
    let seeds = vec![
        b"Cordless Drill 20V\nTwo batteries, charger and a bag. Model DCD771C2 by Acme.".to_vec(),
        "Gu\u{0131}tar \u{202e}strings\n\n\n   \t".as_bytes().to_vec(),
        vec![b'a'; 3000],
    ];
    fuzz("text", &seeds, 13, |b| {
        let p = Product::from_free_text(&String::from_utf8_lossy(b));
        let _ = prepare(&p, Budget::Words(160));
        let _ = prepare(&p, Budget::Tokens(&tok, 16));
    });
}

/// Real model files of four kinds, made by the CLI from the synthetic catalogue.
fn model_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta_Mixed.jsonl");
    write_fixture(&raw, 200, 5);
    let tok = dir.path().join("tokenizer.json");
    write_tiny_tokenizer(&tok);
    let cur = dir.path().join("cur");
    let (raw_s, tok_s, cur_s) = (raw.to_str().unwrap(), tok.to_str().unwrap(), cur.to_str().unwrap());
    pricer_ok(&["curate", "--input", raw_s, "--tokenizer", tok_s, "--max-tokens", "24", "--out", cur_s]);
    let mut seeds = Vec::new();
    for (kind, extra) in [("constant", vec![]), ("details-ridge", vec![]), ("tfidf-ridge", vec!["--with-details"])] {
        let out = dir.path().join(format!("{kind}.gguf"));
        let args = ["train", "--kind", kind, "--data", cur_s, "--out", out.to_str().unwrap()];
        pricer_ok(&[&args[..], &extra[..]].concat());
        seeds.push(std::fs::read(out).unwrap());
    }
    // A stack with a tiny encoder and a titled neighbour index (comparables).
    let base = dir.path().join("base");
    pricer_ok(&[
        "lab",
        "init-base",
        "--tokenizer",
        tok_s,
        "--out",
        base.to_str().unwrap(),
        "--layers",
        "1",
        "--hidden",
        "16",
    ]);
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    pricer_ok(&[
        "train",
        "--kind",
        "minilm",
        "--base",
        base.to_str().unwrap(),
        "--data",
        cur_s,
        "--out",
        run_s,
        "--epochs",
        "1",
        "--max-tokens",
        "24",
    ]);
    let stack = dir.path().join("stack.gguf");
    pricer_ok(&["export", run_s, "--out", stack.to_str().unwrap(), "--knn", "3", "--quant", "f32"]);
    seeds.push(std::fs::read(stack).unwrap());
    seeds
}

#[test]
fn fuzz_model_file_loader() {
    let seeds = model_seeds();
    let product = Product::from_free_text("Premium Cordless Drill\nBuilt from durable materials.");
    fuzz("model", &seeds, 14, |b| {
        if let Ok(model) = Estimator::from_bytes(b) {
            let _ = model.estimate(&product);
            let _ = model.explain(&product, ExplainOptions { comparables: 3, occlude: 2 });
        }
    });
}

/// Model bytes mutated and their checksum computed again, so that changed
/// weights reach the loader's value checks and the estimator: every answer
/// is an error or finite (price, range, comparables, the reasons).
#[test]
fn fuzz_forged_model_values_give_an_error_or_a_finite_estimate() {
    let seeds = model_seeds();
    let product = Product::from_free_text("Premium Cordless Drill\nBuilt from durable materials.");
    fuzz("forged-model", &seeds, 15, |b| {
        let forged = pricer_tests::with_checksum(b).unwrap_or_else(|| b.to_vec());
        let Ok(model) = Estimator::from_bytes(&forged) else { return };
        if let Ok(e) = model.estimate(&product) {
            assert!(e.price.is_finite() && e.low.is_finite() && e.high.is_finite(), "{e:?}");
        }
        if let Ok(x) = model.explain(&product, ExplainOptions { comparables: 3, occlude: 2 }) {
            let e = &x.estimate;
            assert!(e.price.is_finite() && e.low.is_finite() && e.high.is_finite(), "{e:?}");
            assert!(x.comparables.iter().all(|c| c.price.is_finite()), "{:?}", x.comparables);
        }
    });
}

/// Inputs the fuzzer once crashed on, fixed since: each must now load or fail cleanly.
#[test]
fn former_findings_fail_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("model-") {
            let err = Estimator::from_bytes(&bytes).err().unwrap_or_else(|| panic!("{name} loads"));
            let want = if name.contains("shape") { "impossible shape" } else { "not a valid tokenizer.json" };
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}
