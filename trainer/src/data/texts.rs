//! Product texts for the encoder to read, priced or not (masked-word
//! training, pseudo-labels): curate folders without their held-out titles,
//! product files, and the unpriced `{"title", "full"}` text files.

use crate::data::for_each_product;
use anyhow::{Context, Result, bail};
use pricer::Product;
use pricer::text::{Budget, model_input};
use pricer::tokenizer::TextTokenizer;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Products of text sources (curate folders, curated or raw product files, `{"title", "full"}` text files), without those whose
/// title is in a validation or test split of a curate directory given, each
/// source's count printed.
pub fn read_sources(sources: &[PathBuf]) -> Result<Vec<Product>> {
    let mut kept_out: HashSet<String> = HashSet::new();
    let mut files = Vec::new();
    for s in sources {
        if s.is_dir() {
            let train = s.join("train.jsonl");
            if !train.exists() {
                bail!("{} is a folder without train.jsonl (not a curate directory)", s.display());
            }
            for entry in std::fs::read_dir(s)? {
                let p = entry?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                if (name.starts_with("validation") || name.starts_with("test")) && name.ends_with(".jsonl") {
                    for_each_product(&p, false, &mut Default::default(), |prod, _| {
                        kept_out.insert(prod.title.to_lowercase());
                        Ok(())
                    })?;
                }
            }
            files.push(train);
        } else {
            files.push(s.clone());
        }
    }
    let mut out = Vec::new();
    for f in &files {
        let (mut kept, mut held) = (0usize, 0usize);
        let mut take = |p: Product| {
            if kept_out.contains(&p.title.to_lowercase()) {
                held += 1;
            } else {
                out.push(p);
                kept += 1;
            }
        };
        if is_unpriced_texts(f)? {
            read_unpriced(f)?.into_iter().for_each(&mut take);
        } else {
            for_each_product(f, false, &mut Default::default(), |p, _| {
                take(p);
                Ok(())
            })?;
        }
        println!("{}: {kept} products ({held} left out: titles of validation or test items)", f.display());
    }
    Ok(out)
}

/// Texts for the encoder to read: the sources' model inputs, each once.
pub fn read_texts(sources: &[PathBuf], tok: &TextTokenizer, max_tokens: usize) -> Result<Vec<String>> {
    let budget = Budget::Tokens(tok, max_tokens);
    let mut seen = HashSet::new();
    let mut texts = Vec::new();
    let mut empty = 0usize;
    for p in read_sources(sources)? {
        match model_input(&p, budget) {
            Ok(t) => {
                if seen.insert(t.clone()) {
                    texts.push(t);
                }
            }
            Err(_) => empty += 1,
        }
    }
    println!("{} distinct texts ({empty} without a usable text)", texts.len());
    Ok(texts)
}

fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::fs::File::open(path)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Whether the file's first record is a `{"title", "full"}` line.
fn is_unpriced_texts(path: &Path) -> Result<bool> {
    let mut first = String::new();
    open_text(path)?.read_line(&mut first)?;
    let v: Option<serde_json::Value> = serde_json::from_str(first.trim()).ok();
    Ok(v.is_some_and(|v| v.get("full").is_some_and(|f| f.is_string()) && v.get("title").is_some()))
}

/// `{"title", "full"}` lines: `full` is the title, then the description,
/// features and details as text, a line each; they become the product's
/// description, so preparation scrubs and cuts them as any other text.
fn read_unpriced(path: &Path) -> Result<Vec<Product>> {
    let mut out = Vec::new();
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: unreadable", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("{}:{}: not JSON; skipped", path.display(), i + 1);
            continue;
        };
        let (Some(title), Some(full)) = (v["title"].as_str(), v["full"].as_str()) else {
            eprintln!("{}:{}: no title or full text; skipped", path.display(), i + 1);
            continue;
        };
        let body: Vec<String> = full.lines().skip(1).map(str::to_string).collect();
        out.push(Product { title: title.to_string(), description: body, ..Default::default() });
    }
    Ok(out)
}
