//! `pricer info`: what a model file says about itself.

use crate::model::load_model;
use anyhow::{Result, bail};
use pricer::estimator::keys;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct InfoArgs {
    /// A model file (.gguf).
    #[arg(long)]
    pub model: PathBuf,
    /// Print one JSON object (metadata key to value).
    #[arg(long)]
    pub json: bool,
    /// Print only the recipe the file was built from (`pricer build`), as written.
    #[arg(long, conflicts_with = "json")]
    pub recipe: bool,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let meta = model.file.scalar_metadata();
    let recipe = model.file.str(keys::RECIPE_TEXT).ok();
    if args.recipe {
        let Some(text) = recipe else {
            bail!(
                "{} was not built from a recipe (made by single commands, or before `pricer build`)",
                args.model.display()
            )
        };
        print!("{text}");
        return Ok(());
    }
    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> = meta
            .into_iter()
            .map(|(k, v)| {
                let value = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(serde_json::Value::Number);
                (k, value.unwrap_or(serde_json::Value::String(v)))
            })
            .collect();
        println!("{}", serde_json::Value::Object(obj));
    } else {
        let size = std::fs::metadata(&args.model).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} ({} model, {:.1} MiB, {} tensors)",
            args.model.display(),
            model.kind,
            size as f64 / (1 << 20) as f64,
            model.file.tensors.len()
        );
        println!("  trained on {}", keys::TrainingData::from_metadata(&meta).trained_on());
        if let Some(recipe) = keys::built_with(&meta) {
            println!("  built from recipe {recipe}; `--recipe` prints it");
        }
        for (k, v) in meta.into_iter().filter(|(k, _)| k != keys::RECIPE_TEXT) {
            let v: String =
                if v.chars().count() > 100 { format!("{}...", v.chars().take(100).collect::<String>()) } else { v };
            println!("  {k} = {v}");
        }
    }
    Ok(())
}
