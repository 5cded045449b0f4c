//! `pricer build`: a recipe's steps in order (`recipe::plan`). A finished
//! step is skipped; a step whose settings or inputs changed gets a new key,
//! so it and every step after it run again; an interrupted fine-tune or
//! masked-word run resumes from its checkpoint. Each step is the `pricer`
//! command `--plan` prints, run in this process.

use crate::recipe::{self, Inputs, Output, RecipeFile, Step};
use anyhow::{Context, Result, bail};
use pricer::estimator::keys;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// The recipe (TOML): recipes/default.toml is the shipped model,
    /// recipes/quick.toml a small one for trying the path in minutes.
    #[arg(long)]
    pub recipe: PathBuf,
    /// A `pricer curate` output folder.
    #[arg(long)]
    pub data: PathBuf,
    /// The model file to write.
    #[arg(long, required_unless_present = "plan")]
    pub out: Option<PathBuf>,
    /// Where the steps' outputs live, each in a folder or file named by the
    /// hash of its settings and inputs (default: runs/RECIPE).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// cpu or cuda (a build with `--features cuda`): for the encoder's steps.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The base encoder folder, in place of the recipe's `base`.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Unpriced text files the recipe's `[mlm] texts` names (by file name).
    #[arg(long, num_args = 1..)]
    pub texts: Vec<PathBuf>,
    /// Print the steps and their equivalent `pricer` commands; run nothing.
    #[arg(long)]
    pub plan: bool,
}

/// Where a step stands in its work folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    /// Started and interrupted: it continues from its checkpoint.
    Resume,
    ToRun,
}

impl State {
    fn of(step: &Step) -> State {
        let json = |name: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(step.out.join(name)).ok()?).ok()
        };
        let done = |v: &serde_json::Value| v["state"]["done"].as_bool() == Some(true);
        match step.output {
            Output::ModelFile if step.out.is_file() => State::Done,
            Output::ModelFile => State::ToRun,
            Output::SoupFolder if step.out.join("run.json").is_file() => State::Done,
            Output::SoupFolder => State::ToRun,
            Output::RunFolder => match json("run.json") {
                Some(v) if done(&v) => State::Done,
                Some(_) if step.out.join("checkpoint.safetensors").is_file() => State::Resume,
                _ => State::ToRun,
            },
            Output::MlmFolder => match json("mlm.json") {
                Some(v) if done(&v) => State::Done,
                Some(_) if step.out.join("checkpoint.safetensors").is_file() => State::Resume,
                _ => State::ToRun,
            },
        }
    }

    fn word(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Resume => "resumes",
            State::ToRun => "to run",
        }
    }
}

/// The arguments that run a step from where it stands.
fn arguments(step: &Step, state: State) -> Vec<String> {
    match (step.output, state) {
        (Output::RunFolder, State::Resume) => vec!["train".into(), "--resume".into(), step.out.display().to_string()],
        (Output::MlmFolder, State::Resume) => step.args.iter().cloned().chain(["--resume".to_string()]).collect(),
        _ => step.args.clone(),
    }
}

/// The step's key figure, read from what it wrote.
fn key_figure(step: &Step) -> String {
    let json = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(step.out.join(name)).ok()?).ok()
    };
    let figure = match step.output {
        Output::RunFolder | Output::SoupFolder => json("run.json")
            .and_then(|v| v["state"]["best_val_mae"].as_f64())
            .map(|m| format!("validation MAE ${m:.2}")),
        Output::MlmFolder => json("mlm.json").and_then(|v| {
            let last = v["held_out"].as_array()?.last()?.clone();
            Some(format!(
                "held-out masked-word loss {:.3}, accuracy {:.1}%",
                last["loss"].as_f64()?,
                100.0 * last["accuracy"].as_f64()?
            ))
        }),
        Output::ModelFile => crate::model::load_model(&step.out).ok().and_then(|m| {
            let mae = m.file.f64(keys::VALIDATION_MAE).ok()?;
            Some(format!("validation MAE ${mae:.2}"))
        }),
    };
    figure.unwrap_or_else(|| "no figure recorded".into())
}

pub fn run(args: &BuildArgs, run_step: &dyn Fn(&[String]) -> Result<()>) -> Result<()> {
    let file = RecipeFile::read(&args.recipe)?;
    let work = args.work.clone().unwrap_or_else(|| Path::new("runs").join(&file.name));
    let base = args.base.clone().unwrap_or_else(|| PathBuf::from(file.recipe.base.get_ref()));
    if args.device != "cpu" && args.device != "cuda" {
        bail!("--device {:?}: cpu or cuda", args.device);
    }
    let inputs = Inputs {
        data: args.data.clone(),
        base,
        texts: args.texts.clone(),
        work: work.clone(),
        device: args.device.clone(),
    };
    let steps = recipe::plan(&file, &inputs)?;
    let n = steps.len();
    if args.plan {
        println!("recipe {} ({} steps, sha256 {}){}", args.recipe.display(), n, &file.sha256()[..12], describe(&file));
        for (i, step) in steps.iter().enumerate() {
            println!("# {}/{n} {}: {}", i + 1, step.label, State::of(step).word());
            println!("{}", step.command());
        }
        if let Some(out) = &args.out {
            println!("# then: the export copied to {}, and every test split evaluated", out.display());
        }
        return Ok(());
    }
    let out = args.out.as_ref().context("--out is required (or --plan)")?;
    crate::data::check_output(out)?;
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create the work folder {}", work.display()))?;
    let started = Instant::now();
    println!("building {} from {} ({n} steps) in {}", out.display(), args.recipe.display(), work.display());
    for (i, step) in steps.iter().enumerate() {
        let state = State::of(step);
        let tag = format!("[{}/{n}] {}", i + 1, step.label);
        if state == State::Done {
            println!("{tag}: done already ({}), {}", step.out.display(), key_figure(step));
            continue;
        }
        println!("{tag}: {} ({})", if state == State::Resume { "resuming" } else { "starting" }, step.out.display());
        if state == State::ToRun && step.out.is_dir() {
            // Interrupted before its first checkpoint: nothing to keep.
            std::fs::remove_dir_all(&step.out).with_context(|| format!("cannot clear {}", step.out.display()))?;
        }
        let t = Instant::now();
        run_step(&arguments(step, state)).with_context(|| format!("step {} failed: {}", step.label, step.command()))?;
        if State::of(step) != State::Done {
            bail!("step {} ended without its output {}", step.label, step.out.display());
        }
        println!("{tag}: finished in {}, {}", duration(t.elapsed().as_secs_f64()), key_figure(step));
    }
    let export = steps.last().context("a plan ends with its export")?;
    copy_atomic(&export.out, out)?;
    println!("wrote {} in {}; its test splits:", out.display(), duration(started.elapsed().as_secs_f64()));
    run_step(&[
        "eval".into(),
        "--model".into(),
        out.display().to_string(),
        "--data".into(),
        args.data.display().to_string(),
    ])
}

fn describe(file: &RecipeFile) -> String {
    let d = file.recipe.description.trim();
    if d.is_empty() { String::new() } else { format!(": {d}") }
}

fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.1} s")
    } else if s < 5400.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

/// Copies next to the target, then renames into place.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    crate::data::write_atomic(to, &bytes)
}
