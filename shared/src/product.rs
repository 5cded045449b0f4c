//! The raw item: one product as it comes from any source, before preparation.

use serde::{Deserialize, Serialize};

/// One product, whatever file it came from. Fields are as close to the source
/// as possible; turning them into model input is `text::prepare`'s job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub title: String,
    /// Amazon's main category (e.g. `Appliances`), or a user's own label.
    pub category: Option<String>,
    /// Description paragraphs, in order.
    pub description: Vec<String>,
    /// Feature bullet points, in order.
    pub features: Vec<String>,
    /// The `details` object (brand, weight, best-sellers rank...), kept as JSON.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Price in USD, when known.
    pub price: Option<f64>,
    /// Model input already prepared by a curation run (curated files carry it).
    pub prepared_text: Option<String>,
}

impl Product {
    /// A product typed by a person: the title on the first line, the rest is
    /// its description. Leading blank lines are skipped.
    pub fn from_free_text(text: &str) -> Product {
        let text = text.trim_start();
        let (title, rest) = match text.split_once('\n') {
            Some((t, r)) => (t.trim(), r.trim()),
            None => (text.trim(), ""),
        };
        Product {
            title: title.to_string(),
            description: if rest.is_empty() { vec![] } else { vec![rest.to_string()] },
            ..Product::default()
        }
    }

    /// The `details` value under `key` as text, if present.
    pub fn detail(&self, key: &str) -> Option<String> {
        let v = self.details.as_ref()?.get(key)?;
        Some(match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// The details object serialized as JSON text, as the course's curation saw it.
    pub fn details_json(&self) -> String {
        match &self.details {
            Some(map) if !map.is_empty() => serde_json::to_string(map).unwrap_or_default(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_splits_title_and_description() {
        let p = Product::from_free_text("\n  Blender 500W \nCrushes ice.\nTwo speeds.");
        assert_eq!(p.title, "Blender 500W");
        assert_eq!(p.description, vec!["Crushes ice.\nTwo speeds.".to_string()]);
        let p = Product::from_free_text("Only a title");
        assert_eq!(p.title, "Only a title");
        assert!(p.description.is_empty());
    }
}
