//! `pricer build` end to end with recipes/quick.toml on a small fixture and
//! a tiny random base: every step runs, a second run skips them all, a run
//! killed during a fine-tune resumes to the same test figures, a changed
//! member setting redoes only that member and the export, bad recipes are
//! refused with file:line, and recipes/default.toml's plan is the card's.

use pricer_tests::{TinySetup, pricer, pricer_bin, pricer_ok, tiny_setup};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn setup() -> TinySetup {
    tiny_setup(5, 32)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn quick() -> String {
    std::fs::read_to_string(repo().join("recipes/quick.toml")).unwrap()
}

/// `build` with `recipe` into `work`; the output model is `work.gguf`.
fn build_args(s: &TinySetup, recipe: &Path, work: &Path) -> Vec<String> {
    let out = work.with_extension("gguf");
    [
        "build",
        "--recipe",
        recipe.to_str().unwrap(),
        "--data",
        s.data.to_str().unwrap(),
        "--base",
        s.base.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn build_ok(s: &TinySetup, recipe: &Path, work: &Path) -> String {
    let args = build_args(s, recipe, work);
    pricer_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The test table `build` ends with (as `pricer eval` prints it).
fn test_table(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("| test")).collect()
}

/// Each step's line of a build's output: (label, what happened).
fn step_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.starts_with('[') && l.contains("] "))
        .filter(|l| !l.contains(": finished in"))
        .map(|l| {
            let (tag, what) = l.split_once(": ").unwrap();
            let label = tag.split_once("] ").unwrap().1.to_string();
            (label, what.split(' ').next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn quick_recipe_builds_skips_resumes_and_redoes_what_changed() {
    let s = setup();
    let recipe = s.root.join("quick.toml");
    std::fs::write(&recipe, quick()).unwrap();
    let work = s.root.join("work");
    let out = build_ok(&s, &recipe, &work);
    let steps = step_lines(&out);
    let labels: Vec<&str> = steps.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "finetune plain",
            "mlm",
            "finetune read",
            "soup",
            "linear word",
            "linear word-tv",
            "linear details",
            "linear details-tv",
            "export"
        ],
        "{out}"
    );
    assert!(steps.iter().all(|(_, what)| what == "starting"), "{out}");
    assert_eq!(out.matches(": finished in ").count(), 9, "{out}");
    assert!(out.contains("validation MAE $"), "each step's key figure: {out}");
    let table = test_table(&out);
    assert_eq!(table.len(), 1, "the fixture's one test split: {out}");
    let model = work.with_extension("gguf");
    let info = pricer_ok(&["info", "--model", model.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["pricer.recipe.name"], "quick");
    assert_eq!(info["pricer.recipe.toml"], quick());
    assert_eq!(info["pricer.recipe.sha256"].as_str().unwrap().len(), 64);
    assert!(info["pricer.knn.validation_items"].as_f64().unwrap() > 0.0, "index_validation: {info}");
    let card = pricer_ok(&["info", "--model", model.to_str().unwrap()]);
    assert!(card.contains("built from recipe quick (sha256 "), "{card}");

    // Again: every step is done already, and the same table.
    let t = Instant::now();
    let again = build_ok(&s, &recipe, &work);
    assert!(step_lines(&again).iter().all(|(_, what)| what == "done"), "{again}");
    assert_eq!(test_table(&again), table);
    assert!(t.elapsed() < Duration::from_secs(60), "a second run only looks: {:?}", t.elapsed());

    // A changed member setting: that member (and its twin) and the export run again, nothing else.
    let changed = s.root.join("quick-alpha.toml");
    let text = quick().replace("kind = \"details-ridge\"\nalpha = 10", "kind = \"details-ridge\"\nalpha = 3");
    assert_ne!(text, quick(), "the recipe's details member has alpha = 10");
    std::fs::write(&changed, text).unwrap();
    let redo = build_ok(&s, &changed, &work);
    for (label, what) in step_lines(&redo) {
        let want = if ["linear details", "linear details-tv", "export"].contains(&label.as_str()) {
            "starting"
        } else {
            "done"
        };
        assert_eq!(what, want, "{label}: {redo}");
    }

    // Killed during a fine-tune, started again: it resumes and ends with the same test figures as a
    // build never interrupted (more epochs, so that the kill lands inside one).
    let longer = s.root.join("longer.toml");
    std::fs::write(&longer, quick().replace("epochs = 1\nlr = 1e-4", "epochs = 8\nlr = 1e-4")).unwrap();
    let whole = build_ok(&s, &longer, &s.root.join("whole"));
    let killed = s.root.join("killed");
    let mut child = std::process::Command::new(pricer_bin())
        .args(build_args(&s, &longer, &killed))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let checkpoint = || {
        std::fs::read_dir(&killed).ok()?.filter_map(|e| e.ok()).find(|e| {
            e.file_name().to_string_lossy().starts_with("ft-plain-") && e.path().join("checkpoint.safetensors").exists()
        })
    };
    while checkpoint().is_none() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let run = checkpoint().expect("the fine-tune checkpointed").path();
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(state["state"]["done"], false, "killed before the fine-tune ended");
    let resumed = build_ok(&s, &longer, &killed);
    assert!(resumed.contains("[1/9] finetune plain: resuming"), "{resumed}");
    assert_eq!(test_table(&resumed), test_table(&whole), "{resumed}\n---\n{whole}");
}

#[test]
fn bad_recipes_are_refused_with_file_and_line_before_anything_runs() {
    let s = setup();
    let work = s.root.join("work");
    let cases: [(&str, String, &str); 5] = [
        ("unknown key", quick().replacen("lr = 1e-4\n", "lr = 1e-4\ncolour = \"red\"\n", 1), "unknown field `colour`"),
        ("missing field", quick().replacen("epochs = 1\nlr = 1e-4\n", "lr = 1e-4\n", 1), "missing field `epochs`"),
        ("wrong type", quick().replacen("epochs = 1\nlr = 1e-4", "epochs = \"one\"\nlr = 1e-4", 1), "invalid type"),
        ("unknown member", quick().replace("of = [\"plain\", \"read\"]", "of = [\"plain\", \"nope\"]"), "\"nope\""),
        ("unknown kind", quick().replace("kind = \"details-ridge\"", "kind = \"details-lasso\""), "details-lasso"),
    ];
    for (what, text, says) in cases {
        assert_ne!(text, quick(), "{what}: the edit applies");
        let recipe = s.root.join("bad.toml");
        std::fs::write(&recipe, &text).unwrap();
        let args = build_args(&s, &recipe, &work);
        let out = pricer(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        let at = format!("{}:", recipe.display());
        let line: usize = err
            .split(&at)
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no file:line in {err}"));
        assert!(line >= 1 && line <= text.lines().count(), "{what}: line {line} in {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert!(!work.exists(), "{what}: nothing ran");
    }
    // The line is the one at fault.
    let text = quick().replace("of = [\"plain\", \"read\"]", "of = [\"plain\", \"nope\"]");
    let line = text.lines().position(|l| l.contains("\"nope\"")).unwrap() + 1;
    let recipe = s.root.join("bad.toml");
    std::fs::write(&recipe, &text).unwrap();
    let args = build_args(&s, &recipe, &work);
    let err = String::from_utf8_lossy(&pricer(&args.iter().map(String::as_str).collect::<Vec<_>>()).stderr).to_string();
    assert!(err.contains(&format!("{}:{line}:", recipe.display())), "{err}");
}

/// The card's "Exact commands" are `--plan`'s commands for recipes/default.toml
/// (the work folder's keys aside, which hash the inputs' bytes).
#[test]
fn default_recipe_plan_is_the_cards_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("repo");
    // The paths the card uses, relative to the repository: dummy bytes do (only keys hash them).
    for f in
        ["data/all2/train.jsonl", "models/all-MiniLM-L6-v2/config.json", "models/all-MiniLM-L6-v2/model.safetensors"]
    {
        std::fs::create_dir_all(cwd.join(f).parent().unwrap()).unwrap();
        std::fs::write(cwd.join(f), f).unwrap();
    }
    std::fs::write(cwd.join("models/all-MiniLM-L6-v2/tokenizer.json"), "{}").unwrap();
    std::fs::create_dir_all(dir.path().join("shared/data/amazon-2023")).unwrap();
    std::fs::write(dir.path().join("shared/data/amazon-2023/unpriced-22k.jsonl.gz"), "x").unwrap();
    std::fs::create_dir_all(cwd.join("recipes")).unwrap();
    std::fs::copy(repo().join("recipes/default.toml"), cwd.join("recipes/default.toml")).unwrap();
    let out = std::process::Command::new(pricer_bin())
        .current_dir(&cwd)
        .args([
            "build",
            "--recipe",
            "recipes/default.toml",
            "--data",
            "data/all2",
            "--texts",
            "../shared/data/amazon-2023/unpriced-22k.jsonl.gz",
            "--work",
            "runs/default",
            "--plan",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keyless = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('-') {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            if rest.len() >= 12 && rest[..12].chars().all(|c| c.is_ascii_hexdigit()) {
                out.push_str("KEY");
                rest = &rest[12..];
            }
        }
        out + rest
    };
    let plan: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("pricer ")).map(keyless).collect();
    assert_eq!(plan.len(), 9);
    let card = std::fs::read_to_string(repo().join("static/models/README.md")).unwrap();
    let commands: Vec<String> =
        card.lines().filter_map(|l| l.strip_prefix("    ")).filter(|l| l.starts_with("pricer ")).map(keyless).collect();
    assert_eq!(commands, plan, "the card's commands against `pricer build --plan`");
}
