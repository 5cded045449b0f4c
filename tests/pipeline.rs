//! The pipeline end to end through the CLI: curate a catalogue, train
//! baselines, evaluate them, predict, and refuse damaged model files.

use pricer_tests::{
    pricer, pricer_bin, pricer_ok, shared_data, write_fixture, write_more_fixture, write_tiny_tokenizer,
};
use serde_json::Value;
use std::path::Path;

fn eval_json(model: &Path, data: &Path) -> Value {
    let out = pricer_ok(&["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
    serde_json::from_str(out.trim()).expect("eval --json prints one JSON object")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn curate_train_eval_predict_on_a_synthetic_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta_Mixed.jsonl");
    let counts = write_fixture(&raw, 600, 7);
    let cur = dir.path().join("curated");
    let out = pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", cur.to_str().unwrap(), "--seed", "3"]);
    // The summary accounts for every record, by reason.
    let total = counts.good + counts.malformed + counts.no_price + counts.too_little_content + counts.duplicates;
    assert!(out.contains(&format!("read {total}, kept {}", counts.good)), "{out}");
    for reason in ["malformed 1", "no price 1", "too little content 1", "duplicate title 1"] {
        assert!(out.contains(reason), "summary lacks {reason:?}: {out}");
    }
    assert!(out.contains("items/s"), "{out}");
    let (n_train, n_val, n_test) =
        (lines(&cur.join("train.jsonl")), lines(&cur.join("validation.jsonl")), lines(&cur.join("test.jsonl")));
    assert_eq!(n_train + n_val + n_test, counts.good);
    assert_eq!((n_train, n_val, n_test), (480, 60, 60));
    for f in ["report.md", "prices.svg", "log-prices.svg", "categories.svg", "token-lengths.svg"] {
        let p = cur.join("report").join(f);
        assert!(std::fs::metadata(&p).map(|m| m.len() > 100).unwrap_or(false), "{} missing", p.display());
    }
    let report = std::fs::read_to_string(cur.join("report/report.md")).unwrap();
    assert!(report.contains("| Appliances |") && report.contains("| malformed | 1 |"), "{report}");
    // Part numbers (7+ characters with a digit) never reach the prepared text.
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(cur.join("train.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    assert!(!first["text"].as_str().unwrap().contains("AB0"), "{first}");

    // A re-run with the same seed gives the same split.
    let cur2 = dir.path().join("curated2");
    pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", cur2.to_str().unwrap(), "--seed", "3"]);
    assert_eq!(std::fs::read(cur.join("test.jsonl")).unwrap(), std::fs::read(cur2.join("test.jsonl")).unwrap());
    // Whatever the number of threads and batches, with a tokenizer too: the same files.
    let tok = dir.path().join("tokenizer.json");
    write_tiny_tokenizer(&tok);
    let mut outputs = Vec::new();
    for (threads, batch) in [("1", "4096"), ("3", "64"), ("2", "7")] {
        let out = dir.path().join(format!("threads-{threads}"));
        let (raw, tok, out_s) = (raw.to_str().unwrap(), tok.to_str().unwrap(), out.to_str().unwrap());
        let args = ["curate", "--input", raw, "--tokenizer", tok, "--max-tokens", "24", "--out", out_s];
        pricer_ok(&[&args[..], &["--seed", "3", "--threads", threads, "--batch", batch]].concat());
        let files: Vec<Vec<u8>> =
            ["train.jsonl", "validation.jsonl", "test.jsonl", "curation.json", "report/report.md"]
                .iter()
                .map(|f| std::fs::read(out.join(f)).unwrap())
                .collect();
        outputs.push(files);
    }
    assert!(outputs.iter().all(|o| *o == outputs[0]), "curate's output depends on its thread count");

    // Curating again into a used directory: an earlier run's other splits and tokenizer go,
    // files that are not curate's stay, and nothing is left beside it.
    let reused = dir.path().join("threads-1");
    std::fs::write(reused.join("test-old.jsonl"), "{}\n").unwrap();
    std::fs::write(reused.join("notes.txt"), "mine").unwrap();
    pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", reused.to_str().unwrap(), "--seed", "3"]);
    assert!(!reused.join("test-old.jsonl").exists());
    assert_eq!(std::fs::read_to_string(reused.join("notes.txt")).unwrap(), "mine");
    assert!(!reused.join("tokenizer.json").exists(), "the earlier run's tokenizer stayed");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("curating"))
        .collect();
    assert!(leftovers.is_empty(), "staging directories left: {leftovers:?}");
    assert_eq!(lines(&reused.join("test.jsonl")), 60);

    let test = cur.join("test.jsonl");
    let mut maes = std::collections::HashMap::new();
    // A reader that stops early (`pricer eval ... | head -1`) ends the run quietly, without a panic.
    let constant = dir.path().join("early.gguf");
    pricer_ok(&["train", "--kind", "constant", "--data", cur.to_str().unwrap(), "--out", constant.to_str().unwrap()]);
    let mut child = std::process::Command::new(pricer_tests::pricer_bin())
        .args(["eval", "--model", constant.to_str().unwrap(), "--data", test.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && out.status.code() != Some(101), "{:?}: {stderr}", out.status);

    for kind in ["constant", "features", "bow", "tfidf-ridge"] {
        let model = dir.path().join(format!("{kind}.gguf"));
        let out =
            pricer_ok(&["train", "--kind", kind, "--data", cur.to_str().unwrap(), "--out", model.to_str().unwrap()]);
        assert!(out.contains("test: n 60"), "{out}");
        let s = eval_json(&model, &test);
        assert_eq!(s["n"], 60);
        assert_eq!(s["model"], format!("{kind}.gguf"));
        for key in ["mae", "rmsle", "hits_pct", "median_abs_error"] {
            assert!(s[key].as_f64().unwrap().is_finite(), "{kind}: {s}");
        }
        maes.insert(kind, s["mae"].as_f64().unwrap());
    }
    // Prices follow product type and quality words, which the text models
    // read and the constant cannot: each must beat the median by far.
    let constant = maes["constant"];
    assert!(constant > 80.0, "{maes:?}");
    assert!(maes["tfidf-ridge"] < 0.5 * constant, "{maes:?}");
    assert!(maes["bow"] < 0.5 * constant, "{maes:?}");
    assert!(maes["features"] < constant, "{maes:?}");

    // The per-item report.
    let model = dir.path().join("tfidf-ridge.gguf");
    // Curated without a tokenizer, its texts cannot be cut to a token budget.
    let args = ["eval", "--model", model.to_str().unwrap(), "--data", test.to_str().unwrap(), "--max-tokens", "8"];
    let out = pricer(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a model with a tokenizer"), "{out:?}");
    let rep = dir.path().join("eval-report");
    let out = pricer_ok(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--limit",
        "10",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert!(out.contains("items 10 |"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("estimate $")).count(), 10, "{out}");
    let svg = std::fs::read_to_string(rep.join("scatter.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.matches("<circle").count() >= 10, "scatter has its points");
    let csv = std::fs::read_to_string(rep.join("items.csv")).unwrap();
    assert!(csv.starts_with("title,estimate,truth,error,low,high,grade"));
    assert_eq!(csv.lines().count(), 11);

    // Predict: text argument, JSONL on stdin with a bad line in the middle.
    let out = pricer_ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "Northwind Premium Refrigerator\nA big fridge for the family.",
    ]);
    let est: Value = serde_json::from_str(out.trim()).unwrap();
    let (price, low, high) =
        (est["price"].as_f64().unwrap(), est["low"].as_f64().unwrap(), est["high"].as_f64().unwrap());
    assert!(price > 300.0, "a premium fridge is dear: {est}");
    assert!(low <= price && price <= high, "{est}");
    let input = "{\"title\": \"Basic Stapler\", \"description\": \"Staples paper.\"}\nnot json\n{\"title\": \"Premium Electric Guitar\"}\n";
    let out = pricer_tests::pricer_stdin(&["predict", "--model", model.to_str().unwrap()], input);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["price"].as_f64().unwrap() < rows[2]["price"].as_f64().unwrap(), "{rows:?}");
    assert_eq!(rows[1]["line"], 2);
    assert!(rows[1]["error"].as_str().unwrap().contains("invalid JSON"), "{rows:?}");

    // A line too long to be a product (a paste gone wrong) is that line's
    // error, with CRLF lines and a blank one counted, and the next is read.
    let huge = format!("{{\"title\": \"{}\"}}", "x".repeat(pricer::readers::MAX_LINE_BYTES + 10));
    let input =
        format!("{{\"title\": \"Basic Stapler\"}}\r\n\r\n{huge}\r\n{{\"title\": \"Premium Electric Guitar\"}}\r\n");
    let out = pricer_tests::pricer_stdin(&["predict", "--model", model.to_str().unwrap()], &input);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        (rows[0]["line"].as_u64(), rows[1]["line"].as_u64(), rows[2]["line"].as_u64()),
        (Some(1), Some(3), Some(4))
    );
    assert!(rows[1]["error"].as_str().unwrap().contains("line longer than"), "{rows:?}");
    assert!(rows[2]["price"].as_f64().unwrap() > rows[0]["price"].as_f64().unwrap(), "{rows:?}");
}

#[test]
fn curate_named_test_splits_from_several_sources_and_eval_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("items.jsonl");
    write_fixture(&raw, 400, 5);
    let more = dir.path().join("more.jsonl");
    write_more_fixture(&more, 300, 6);
    let cur = dir.path().join("c");
    let args = |out: &Path| -> Vec<String> {
        vec![
            "curate".into(),
            "--input".into(),
            raw.to_str().unwrap().into(),
            more.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--test".into(),
            "catalog=items.jsonl".into(),
            "--test".into(),
            "course=format:curated_scrubbed_title".into(),
        ]
    };
    let a = args(&cur);
    let out = pricer_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Catalogue items split 80/10/10; course items 80/10/10; the other formats
    // (llm_summary, raw_fields: 200 items) give their test share to training.
    let n = |f: &str| lines(&cur.join(f));
    assert_eq!((n("test-catalog.jsonl"), n("validation-catalog.jsonl")), (40, 40), "{out}");
    assert_eq!((n("test-course.jsonl"), n("validation-course.jsonl")), (10, 10), "{out}");
    assert_eq!(n("validation.jsonl"), 20, "{out}");
    assert_eq!(n("train.jsonl"), 400 + 300 - 40 - 40 - 10 - 10 - 20);
    assert!(!cur.join("test.jsonl").exists());
    // The report counts items per source format; llm_summary and raw_fields
    // were read back into fields and prepared like raw records.
    let report = std::fs::read_to_string(cur.join("report/report.md")).unwrap();
    for row in
        ["| amazon_raw | 400 |", "| curated_scrubbed_title | 100 |", "| llm_summary | 100 |", "| raw_fields | 100 |"]
    {
        assert!(report.contains(row), "no {row:?} in the report:\n{report}");
    }
    let train = std::fs::read_to_string(cur.join("train.jsonl")).unwrap();
    let summary =
        train.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["source_format"] == "llm_summary");
    let summary = summary.expect("an llm_summary item in training");
    let text = summary["text"].as_str().unwrap();
    assert!(!text.contains("Title:") && !text.contains("Description:"), "labels are not model input: {text}");
    assert!(summary["details"].as_str().unwrap().contains("Brand"), "{summary}");

    // Adding a source moves no catalogue item between splits.
    let alone = dir.path().join("alone");
    pricer_ok(&[
        "curate",
        "--input",
        raw.to_str().unwrap(),
        "--out",
        alone.to_str().unwrap(),
        "--test",
        "catalog=items.jsonl",
    ]);
    for f in ["test-catalog.jsonl", "validation-catalog.jsonl"] {
        assert_eq!(std::fs::read(cur.join(f)).unwrap(), std::fs::read(alone.join(f)).unwrap(), "{f}");
    }

    // Training reports, and eval of the directory prints, every test split.
    let model = dir.path().join("t.gguf");
    let out = pricer_ok(&[
        "train",
        "--kind",
        "tfidf-ridge",
        "--data",
        cur.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(out.contains("test catalog: n 40") && out.contains("test course: n 10"), "{out}");
    let out = pricer_ok(&["eval", "--model", model.to_str().unwrap(), "--data", cur.to_str().unwrap()]);
    assert!(out.contains("| catalog | 40 | $") && out.contains("| course | 10 | $"), "{out}");
    let out = pricer_ok(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        cur.to_str().unwrap(),
        "--validation",
        "--json",
    ]);
    let splits: Vec<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["split"].as_str().unwrap().to_string()).collect();
    assert_eq!(splits, ["catalog", "course", "validation"]);
    let info: Value =
        serde_json::from_str(pricer_ok(&["info", "--model", model.to_str().unwrap(), "--json"]).trim()).unwrap();
    assert_eq!(info["pricer.test.catalog.n"], 40.0);
    assert!(info["pricer.test.course.mae"].as_f64().unwrap() > 0.0, "{info}");

    // Bad selectors are refused before any work.
    let mut bad = args(&dir.path().join("bad"));
    bad[7] = "catalog=nothing.jsonl".into();
    let out = pricer(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --input is \"nothing.jsonl\""), "{out:?}");
    bad[7] = "catalog=format:poem".into();
    let out = pricer(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format"), "{out:?}");
}

#[test]
fn strict_mode_stops_at_the_first_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta.jsonl");
    write_fixture(&raw, 20, 1);
    let out = pricer(&[
        "curate",
        "--strict",
        "--input",
        raw.to_str().unwrap(),
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meta.jsonl:21:") && err.contains("invalid JSON") && err.contains("--strict"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn damaged_or_foreign_model_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta.jsonl");
    write_fixture(&raw, 100, 2);
    let cur = dir.path().join("c");
    pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", cur.to_str().unwrap()]);
    let model = dir.path().join("m.gguf");
    pricer_ok(&["train", "--kind", "tfidf-ridge", "--data", cur.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    let bytes = std::fs::read(&model).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let n = b.len();
                b[n - 100] ^= 1;
                b
            },
            "checksum",
        ),
        ("foreign", b"<html>not a model</html>".to_vec(), "not a GGUF file"),
        ("empty", vec![], "not a GGUF file"),
    ];
    for (name, data, want) in cases {
        let bad = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&bad, data).unwrap();
        let out =
            pricer(&["eval", "--model", bad.to_str().unwrap(), "--data", cur.join("test.jsonl").to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("model file") && err.contains(want), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let out = pricer(&["eval", "--model", dir.path().join("missing.gguf").to_str().unwrap(), "--data", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read model"));
    // An endless device is refused from its first bytes, not read into memory.
    #[cfg(unix)]
    {
        let out = pricer(&["info", "--model", "/dev/zero"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));
    }
}

/// The real Amazon items, and the course's samples beside them: `tfidf-ridge`
/// must land where scikit-learn's reference does on the catalogue (MAE about
/// $50, RMSLE about 0.7), and the course's price-balanced items must be
/// harder in dollars (their prices are higher).
#[test]
fn tfidf_ridge_on_real_amazon_items() {
    let items = shared_data().join("items.jsonl.gz");
    let more = shared_data().join("more.jsonl.gz");
    for f in [&items, &more] {
        assert!(f.exists(), "{} is missing: the tests need ../shared beside the repository", f.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let cur = dir.path().join("c");
    let out = pricer_ok(&[
        "curate",
        "--input",
        items.to_str().unwrap(),
        more.to_str().unwrap(),
        "--out",
        cur.to_str().unwrap(),
        "--test",
        "catalog=items.jsonl.gz",
        "--test",
        "course=format:curated_scrubbed_title",
    ]);
    assert!(out.contains("read 14037"), "{out}");
    let report = std::fs::read_to_string(cur.join("report/report.md")).unwrap();
    for row in ["| curated_scrubbed_title | 4222 |", "| llm_summary | 19", "| raw_fields | 48"] {
        assert!(report.contains(row), "no {row:?} in:\n{report}");
    }
    let model = dir.path().join("t.gguf");
    pricer_ok(&["train", "--kind", "tfidf-ridge", "--data", cur.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    let s = eval_json(&model, &cur.join("test-catalog.jsonl"));
    let (mae, rmsle, hits) =
        (s["mae"].as_f64().unwrap(), s["rmsle"].as_f64().unwrap(), s["hits_pct"].as_f64().unwrap());
    assert!((40.0..62.0).contains(&mae), "{s}");
    assert!((0.6..0.85).contains(&rmsle), "{s}");
    assert!(hits > 60.0, "{s}");
    let c = eval_json(&model, &cur.join("test-course.jsonl"));
    let course_mae = c["mae"].as_f64().unwrap();
    assert!((70.0..120.0).contains(&course_mae) && course_mae > mae, "{c}");
}

#[test]
fn explanations_need_a_model_file() {
    // A chat model gives a number, no reasons: refused before any request.
    let out = std::process::Command::new(pricer_bin())
        .env("PRICER_CHAT_URL", "http://127.0.0.1:9/v1")
        .args(["predict", "--model", "chat:any", "--explain", "Stapler"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a model file"), "{out:?}");
}

/// A real model file whose tensor values are made NaN, with the checksum
/// computed again so that it looks intact, is refused at load, naming the
/// tensor; every command exits non-zero and no price of $0 is printed.
#[test]
fn tampered_tensors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta.jsonl");
    write_fixture(&raw, 100, 4);
    let cur = dir.path().join("c");
    pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", cur.to_str().unwrap()]);
    let model = dir.path().join("m.gguf");
    pricer_ok(&["train", "--kind", "tfidf-ridge", "--data", cur.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    let bytes = std::fs::read(&model).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, pricer_tests::with_nan_in(&bytes, name)).unwrap();
        for args in [
            vec!["predict", "--model", bad.to_str().unwrap(), "Cordless drill"],
            vec!["info", "--model", bad.to_str().unwrap()],
            vec!["eval", "--model", bad.to_str().unwrap(), "--data", cur.to_str().unwrap()],
        ] {
            let out = pricer(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(&format!("tensor {name} holds NaN or infinite values")), "{args:?}: {err}");
            assert!(!String::from_utf8_lossy(&out.stdout).contains("\"price\""), "{args:?}: no price");
        }
    }
    // The untouched file with its checksum recomputed still loads: only the values were at fault.
    let same = dir.path().join("same.gguf");
    std::fs::write(&same, pricer_tests::with_checksum(&bytes).unwrap()).unwrap();
    pricer_ok(&["predict", "--model", same.to_str().unwrap(), "Cordless drill"]);
}

/// One price grammar for every reader: zero, absurd and ambiguous prices are
/// refused with their line, in eval as in curate; predict exits 1 when no
/// line gave a price; adapt checks its output first and never half-writes it.
#[test]
fn prices_outputs_and_exit_codes_follow_one_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meta.jsonl");
    write_fixture(&raw, 100, 6);
    let cur = dir.path().join("c");
    pricer_ok(&["curate", "--input", raw.to_str().unwrap(), "--out", cur.to_str().unwrap()]);
    let model = dir.path().join("m.gguf");
    pricer_ok(&["train", "--kind", "tfidf-ridge", "--data", cur.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    let m = model.to_str().unwrap();
    let csv = dir.path().join("shop.csv");
    std::fs::write(
        &csv,
        "title,price\nKettle,12.50\nDrill,\"$1,299.00\"\nLamp,\"12,99\"\nFree thing,0\nYacht,1e308\nPen,3.10\n",
    )
    .unwrap();
    let out = pricer(&["eval", "--model", m, "--data", csv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shop.csv:4:") && err.contains("decimal comma"), "{err}");
    assert!(err.contains("shop.csv:5:") && err.contains("above zero"), "{err}");
    assert!(err.contains("shop.csv:6:") && err.contains("highest accepted"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("items 3 |"), "Kettle, Drill ($1,299) and Pen: {stdout}");

    // A spreadsheet's export with decimal commas: read as such when asked.
    let eu = dir.path().join("eu.csv");
    std::fs::write(&eu, "title;price\r\nKettle;12,50\r\nDrill;1.299,00\r\nPen;oops\r\n").unwrap();
    let out = pricer(&["eval", "--model", m, "--data", eu.to_str().unwrap(), "--decimal-comma"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("eu.csv:4:"), "the physical line, CRLF or not: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("items 2 |"), "{err}");
    let out = pricer(&["eval", "--model", m, "--data", eu.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("eu.csv:2:"), "12,50 refused without the flag");

    // predict: 1 when no line gave a price, 0 when one did.
    let none = pricer_tests::pricer_status(&["predict", "--model", m], "{\"title\": \"\"}\nnot json\n");
    assert_eq!(none.0, Some(1), "{}", none.1);
    let some =
        pricer_tests::pricer_status(&["predict", "--model", m], "{\"title\": \"\"}\n{\"title\": \"Cordless drill\"}\n");
    assert_eq!(some.0, Some(0), "{}", some.1);

    // adapt: an output it cannot write is said before any work; the previous file stays whole.
    let shop = dir.path().join("shop.jsonl");
    let test = std::fs::read_to_string(cur.join("test.jsonl")).unwrap();
    std::fs::write(&shop, &test).unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = pricer(&[
        "adapt",
        "--model",
        m,
        "--data",
        shop.to_str().unwrap(),
        "--out",
        blocker.join("mine.gguf").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot create the output folder"), "{err}");
    assert!(!err.contains("embedded"), "refused before the work: {err}");
}
