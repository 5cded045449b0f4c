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
    /// How the source wrote the record (see [`SourceFormat`]); `None` when unknown.
    pub format: Option<SourceFormat>,
}

/// How a record's text was written by its source. Every format is prepared
/// into the same model input; the format is kept so data reports and
/// evaluations can tell the sources apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Amazon Reviews 2023 raw metadata: title, description and features lists, details object.
    AmazonRaw,
    /// Already prepared by the course's curation: title line, then the scrubbed body.
    Curated,
    /// Curated, but the title is the scrubbed first line; no category, no details.
    CuratedScrubbedTitle,
    /// An LLM-written block: `Title: ... Category: ... Brand: ... Description: ... Details: ...`.
    LlmSummary,
    /// `Title: ...` then raw `Description: [...]` / `Features: [...]` lists.
    RawFields,
    /// A row of a CSV catalogue.
    Csv,
    /// Typed or pasted by a person: title line, then description.
    FreeText,
}

impl SourceFormat {
    pub const ALL: [SourceFormat; 7] = [
        SourceFormat::AmazonRaw,
        SourceFormat::Curated,
        SourceFormat::CuratedScrubbedTitle,
        SourceFormat::LlmSummary,
        SourceFormat::RawFields,
        SourceFormat::Csv,
        SourceFormat::FreeText,
    ];

    /// The name used in files and on the command line (`curated_scrubbed_title`).
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::AmazonRaw => "amazon_raw",
            SourceFormat::Curated => "curated",
            SourceFormat::CuratedScrubbedTitle => "curated_scrubbed_title",
            SourceFormat::LlmSummary => "llm_summary",
            SourceFormat::RawFields => "raw_fields",
            SourceFormat::Csv => "csv",
            SourceFormat::FreeText => "free_text",
        }
    }

    pub fn from_name(name: &str) -> Option<SourceFormat> {
        SourceFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// True when a source already selected and prepared the record (the
    /// course's published samples); curation's content rules are for raw records.
    pub fn is_curated_sample(self) -> bool {
        matches!(
            self,
            SourceFormat::Curated
                | SourceFormat::CuratedScrubbedTitle
                | SourceFormat::LlmSummary
                | SourceFormat::RawFields
        )
    }
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
            format: Some(SourceFormat::FreeText),
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
