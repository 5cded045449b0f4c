//! Prepared text: the ONE function that turns a product into model input.
//!
//! Curation, training, `pricer predict` and the browser all call [`prepare`],
//! so the model sees in use exactly what it saw in training. The recipe is the
//! course's: title, then description + features + details with boilerplate
//! removed, punctuation scrubbed, part-number-like words dropped, truncated to
//! a token budget.

use crate::{Error, Product, TextTokenizer};
use regex::Regex;
use std::sync::OnceLock;

/// Token budget of the prepared text (the course's 160).
pub const DEFAULT_MAX_TOKENS: usize = 160;
/// Content shorter than this is too thin to price (curation drops it).
pub const DEFAULT_MIN_CHARS: usize = 300;
/// Characters kept per token of budget before scrubbing, so that a huge paste
/// costs no more than a normal product (the course's 7 per token).
pub const CHARS_PER_TOKEN_CEILING: usize = 7;

/// Phrases of the details JSON that carry no information about price.
const DETAIL_BOILERPLATE: &[&str] = &[
    "\"Batteries Included?\": \"No\"",
    "\"Batteries Included?\": \"Yes\"",
    "\"Batteries Required?\": \"No\"",
    "\"Batteries Required?\": \"Yes\"",
    "By Manufacturer",
    "Item",
    "Date First",
    "Package",
    ":",
    "Number of",
    "Best Sellers",
    "Number",
    "Product ",
];

/// How a text is cut to its budget: with the model's tokenizer, or (when a
/// model has none, like the linear baselines) by whitespace-separated words.
#[derive(Debug, Clone, Copy)]
pub enum Budget<'a> {
    Tokens(&'a TextTokenizer, usize),
    Words(usize),
}

impl Budget<'_> {
    fn max(&self) -> usize {
        match self {
            Budget::Tokens(_, n) | Budget::Words(n) => *n,
        }
    }
}

/// A product's model input and what preparing it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedText {
    /// Scrubbed title, a newline, scrubbed content; within the budget.
    pub text: String,
    /// Characters of description + features + details before scrubbing
    /// (what the minimum-content rule looks at).
    pub content_chars: usize,
    /// True when the input was cut (by the character ceiling or the budget).
    pub truncated: bool,
    /// Tokens in `text`, when the budget counts tokens.
    pub tokens: Option<usize>,
}

fn scrub_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r#"[:\[\]"{}【】\s]+"#).expect("valid regex"))
}

/// Removes punctuation noise and part-number-like words (7+ characters with a
/// digit), collapsing whitespace to single spaces.
pub fn scrub(s: &str) -> String {
    let s = scrub_re().replace_all(s, " ");
    let s = s.trim().replace(" ,", ",").replace(",,,", ",").replace(",,", ",");
    s.split(' ')
        .filter(|w| w.chars().count() < 7 || !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The details object as the course's curation saw it: Python-style JSON
/// (`{"k": v, ...}`) with boilerplate phrases removed.
pub fn scrub_details(product: &Product) -> String {
    let Some(map) = product.details.as_ref().filter(|m| !m.is_empty()) else {
        return String::new();
    };
    let mut s = python_json(&serde_json::Value::Object(map.clone()));
    for phrase in DETAIL_BOILERPLATE {
        s = s.replace(phrase, "");
    }
    s
}

fn python_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let parts: Vec<String> =
                m.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Description, features and scrubbed details, one per line (unscrubbed).
pub fn content(product: &Product) -> String {
    let mut out = String::new();
    for part in [product.description.join("\n"), product.features.join("\n"), scrub_details(product)] {
        if !part.trim().is_empty() {
            out.push_str(&part);
            out.push('\n');
        }
    }
    out
}

/// Cuts `s` to at most `max` characters, on a char boundary.
fn cut_chars(s: &str, max: usize) -> (&str, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (&s[..i], true),
        None => (s, false),
    }
}

/// Prepares a product's text for a model. Errors only when there is nothing
/// to price (no title and no content) or the tokenizer fails.
pub fn prepare(product: &Product, budget: Budget) -> Result<PreparedText, Error> {
    let ceiling = budget.max().max(1) * CHARS_PER_TOKEN_CEILING;
    let content = content(product);
    let content_chars = content.chars().count();
    let (content_cut, cut1) = cut_chars(&content, ceiling);
    let (title_cut, cut2) = cut_chars(&product.title, ceiling);
    let title = scrub(title_cut);
    let body = scrub(content_cut);
    if is_blank(&title) && is_blank(&body) {
        return Err(Error::EmptyProduct);
    }
    let full = if body.is_empty() { title } else { format!("{title}\n{body}") };
    let (text, tokens) = match budget {
        Budget::Tokens(tok, n) => {
            let (cut, count) = tok.truncate_counted(&full, n)?;
            (cut.trim_end().to_string(), Some(count))
        }
        Budget::Words(n) => (truncate_words(&full, n), None),
    };
    let truncated = cut1 || cut2 || text.len() < full.len();
    Ok(PreparedText { text, content_chars, truncated, tokens })
}

fn truncate_words(s: &str, n: usize) -> String {
    let mut end = 0;
    for (count, (i, w)) in s
        .split_inclusive(char::is_whitespace)
        .scan(0usize, |pos, w| {
            let start = *pos;
            *pos += w.len();
            Some((start, w))
        })
        .filter(|(_, w)| !w.trim().is_empty())
        .enumerate()
    {
        if count == n {
            break;
        }
        end = i + w.trim_end().len();
    }
    s[..end].to_string()
}

/// Whether a text shows nothing: only whitespace and invisible format
/// characters (zero-width spaces and joiners, direction marks, the byte-order
/// mark, soft hyphens). Such a text is empty, not a product to price.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_whitespace()
            || matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{FEFF}')
            || ('\u{200B}'..='\u{200F}').contains(&c)
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2060}'..='\u{2069}').contains(&c)
    })
}

/// A text to put in a CSV cell that people open in a spreadsheet: one that
/// would run as a formula (`=`, `+`, `-`, `@`, a tab or CR first) gets a
/// leading `'`, as OWASP advises against CSV injection. Quoting is the CSV
/// writer's job.
pub fn spreadsheet_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}").into() } else { s.into() }
}

/// The model input for a product: the text a curation run already prepared,
/// if the product carries one, else [`prepare`]'s.
pub fn model_input(product: &Product, budget: Budget) -> Result<String, Error> {
    match &product.prepared_text {
        Some(t) if !t.trim().is_empty() => Ok(t.clone()),
        _ => Ok(prepare(product, budget)?.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::tests::tiny_tokenizer;

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_leading_quote() {
        for (cell, safe) in
            [("=1+1", "'=1+1"), ("+1", "'+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx")]
        {
            assert_eq!(spreadsheet_safe(cell), safe);
        }
        assert_eq!(spreadsheet_safe("Desk lamp = bright"), "Desk lamp = bright");
    }

    fn product(title: &str, desc: &str) -> Product {
        Product { title: title.into(), description: vec![desc.into()], ..Default::default() }
    }

    #[test]
    fn scrub_removes_punctuation_and_part_numbers() {
        assert_eq!(scrub("Model: [AB12345XY] \"Deluxe\" {big}"), "Model Deluxe big");
        assert_eq!(scrub("fits 2019 cars , 12 pack"), "fits 2019 cars, 12 pack");
        // 7+ characters with a digit is a part number; shorter or digit-free words stay.
        assert_eq!(scrub("SKU-12345 abcdefgh 123456 x1"), "abcdefgh 123456 x1");
        assert_eq!(scrub("【Great】 value"), "Great value");
    }

    #[test]
    fn details_boilerplate_is_removed() {
        let mut p = product("Lamp", "");
        p.details = serde_json::from_str(
            r#"{"Brand": "Acme", "Batteries Included?": "No", "Item Weight": "2 pounds", "Best Sellers Rank": {"Home": 5}}"#,
        )
        .unwrap();
        let d = scrub_details(&p);
        assert!(!d.contains("Batteries"), "{d}");
        assert!(!d.contains("Item"), "{d}");
        assert!(d.contains("Acme") && d.contains("2 pounds") && d.contains("Rank"), "{d}");
    }

    #[test]
    fn prepare_joins_title_and_content_and_counts_content() {
        let mut p = product("Steel Blender: 500W", "Crushes ice.");
        p.features = vec!["Two speeds".into()];
        let prep = prepare(&p, Budget::Words(100)).unwrap();
        assert_eq!(prep.text, "Steel Blender 500W\nCrushes ice. Two speeds");
        assert_eq!(prep.content_chars, "Crushes ice.\nTwo speeds\n".len());
        assert!(!prep.truncated);
    }

    #[test]
    fn prepare_truncates_to_the_token_budget() {
        let tok = tiny_tokenizer();
        let p = product("the steel blender", "with usb cables and a fast drill");
        let prep = prepare(&p, Budget::Tokens(&tok, 5)).unwrap();
        assert_eq!(prep.text, "the steel blender\nwith usb");
        assert!(prep.truncated);
        let words = prepare(&p, Budget::Words(4)).unwrap();
        assert_eq!(words.text, "the steel blender\nwith");
    }

    #[test]
    fn zero_width_only_text_is_empty() {
        let invisible = "\u{200B}\u{200C}\u{200D}\u{FEFF}\u{2060}\u{200E}";
        let err = prepare(&product(invisible, invisible), Budget::Words(10)).unwrap_err();
        assert!(matches!(err, Error::EmptyProduct), "{err}");
        assert!(prepare(&product("Kettle\u{200B}", ""), Budget::Words(10)).is_ok());
        assert!(is_blank(" \u{00AD}\t") && !is_blank("a\u{200B}"));
    }

    #[test]
    fn empty_product_is_an_error() {
        let err = prepare(&product("  ", " [] "), Budget::Words(10)).unwrap_err();
        assert!(matches!(err, Error::EmptyProduct));
    }

    #[test]
    fn huge_paste_is_cut_cheaply_and_marked() {
        let big = "word ".repeat(200_000); // 1 MB
        let p = product("Huge", &big);
        let prep = prepare(&p, Budget::Words(160)).unwrap();
        assert!(prep.truncated);
        assert_eq!(prep.text.split_whitespace().count(), 160);
        assert_eq!(prep.content_chars, big.len() + 1);
    }

    #[test]
    fn unicode_survives_and_is_cut_on_char_boundaries() {
        let p = product("鍋 🍳 مقلاة", &"日本語のテキスト ".repeat(500));
        let prep = prepare(&p, Budget::Words(20)).unwrap();
        assert!(prep.text.starts_with("鍋 🍳 مقلاة\n日本語のテキスト"));
    }

    #[test]
    fn model_input_prefers_prepared_text() {
        let mut p = product("Raw title", "raw description");
        assert_eq!(model_input(&p, Budget::Words(50)).unwrap(), "Raw title\nraw description");
        p.prepared_text = Some("already prepared".into());
        assert_eq!(model_input(&p, Budget::Words(50)).unwrap(), "already prepared");
    }
}
