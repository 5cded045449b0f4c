//! Tokens: the model's tokenizer, loaded from `tokenizer.json` bytes.

use super::wordpiece::{AsciiWordPiece, Piece};
use crate::Error;

/// Characters per token of the prefix [`TextTokenizer::truncate`] tries
/// first: product text averages about 4 per MiniLM token, so the prefix is
/// nearly always enough, and far shorter than the text.
const PREFIX_CHARS_PER_TOKEN: usize = 5;

/// A Hugging Face tokenizer without the fixed padding and truncation that
/// `tokenizer.json` files often carry: Pricer pads and truncates itself and
/// always passes the attention mask.
#[derive(Clone)]
pub struct TextTokenizer {
    pub(super) inner: tokenizers::Tokenizer,
    json: String,
    /// The same tokens for plain ASCII text, several times faster (BERT-style
    /// tokenizers only).
    pub(super) fast: Option<AsciiWordPiece>,
}

/// Token ids and attention mask for one text, special tokens included.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

impl TextTokenizer {
    /// Parses `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        // The tokenizers crate panics (an `expect` in its decoder's
        // deserializer) on some malformed JSON: check the syntax first, so a
        // damaged file is an error, not a crash (found by tests/fuzz.rs).
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::Tokenizer(format!("not a valid tokenizer.json: {e}")))?;
        check_templates(&value["post_processor"])
            .map_err(|e| Error::Tokenizer(format!("not a valid tokenizer.json: {e}")))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| Error::Tokenizer(format!("not a valid tokenizer.json: {e}")))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let fast = AsciiWordPiece::new(&value, &inner);
        Ok(Self { inner, json: json.to_string(), fast })
    }

    /// The `tokenizer.json` text this was built from (stored in model files).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The longest prefix of `text` that holds at most `max_tokens` tokens
    /// (special tokens not counted), cut at a token boundary.
    pub fn truncate<'a>(&self, text: &'a str, max_tokens: usize) -> Result<&'a str, Error> {
        Ok(self.truncate_counted(text, max_tokens)?.0)
    }

    /// [`truncate`](Self::truncate), and the number of tokens of the text it
    /// returns (what [`count`](Self::count) of it gives), without tokenizing
    /// that text again.
    pub fn truncate_counted<'a>(&self, text: &'a str, max_tokens: usize) -> Result<(&'a str, usize), Error> {
        // Most texts run past the budget: tokenize a prefix first. Cut at
        // whitespace, where BERT's pre-tokenizer splits anyway, its tokens and
        // offsets are the full text's first ones; when it holds more than the
        // budget, the cut is the one the full text would give.
        let guess = max_tokens.saturating_mul(PREFIX_CHARS_PER_TOKEN);
        if max_tokens > 0
            && let Some((end, _)) = text.char_indices().nth(guess)
            && let Some(ws) = text[..end].rfind(char::is_whitespace)
            && let (Some(cut), n) = self.cut(&text[..ws], max_tokens)?
        {
            return Ok((cut, n));
        }
        let (cut, n) = self.cut(text, max_tokens)?;
        Ok((cut.unwrap_or(text), n))
    }

    /// The tokens of `text`, special tokens not included: the ASCII fast
    /// path where it applies, else the tokenizers crate.
    fn pieces(&self, text: &str) -> Result<Vec<Piece>, Error> {
        if let Some(pieces) = self.fast.as_ref().and_then(|f| f.pieces(text)) {
            return Ok(pieces);
        }
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let pieces = enc.get_ids().iter().zip(enc.get_offsets()).zip(enc.get_word_ids());
        Ok(pieces.map(|((&id, &(start, end)), &word)| Piece { id, start, end, word }).collect())
    }

    /// `text` cut after `max_tokens` tokens (`None` when it holds no more
    /// than that), and the token count of what is kept.
    fn cut<'a>(&self, text: &'a str, max_tokens: usize) -> Result<(Option<&'a str>, usize), Error> {
        let pieces = self.pieces(text)?;
        if pieces.len() <= max_tokens {
            return Ok((None, pieces.len()));
        }
        if max_tokens == 0 {
            return Ok((Some(""), 0));
        }
        let end = pieces[max_tokens - 1].end.min(text.len());
        // Offsets are byte offsets into `text`; stay on a char boundary regardless.
        let end = (0..=end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        // The cut may end inside a word, which then tokenizes differently on
        // its own: every token before that word stays, the word's piece is
        // counted alone (the pre-tokenizer splits the cut text there too).
        let last = pieces[max_tokens - 1].word;
        let first = (0..max_tokens)
            .rev()
            .take_while(|&j| last.is_some() && pieces[j].word == last)
            .last()
            .unwrap_or(max_tokens - 1);
        let start = pieces[first].start.min(end);
        let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        Ok((Some(&text[..end]), first + self.count(&text[start..end])?))
    }

    /// Number of tokens in `text`, special tokens not counted.
    pub fn count(&self, text: &str) -> Result<usize, Error> {
        Ok(self.pieces(text)?.len())
    }

    /// Ids and mask with the model's special tokens, cut to `max_len` in all
    /// (the final `[SEP]` is kept when cutting).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Tokens, Error> {
        let mut ids = match self.fast.as_ref().and_then(|f| Some((f, f.pieces(text)?))) {
            Some((f, pieces)) => {
                f.before.iter().copied().chain(pieces.iter().map(|p| p.id)).chain(f.after.iter().copied()).collect()
            }
            None => self.inner.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec(),
        };
        if ids.len() > max_len && max_len >= 2 {
            let last = *ids.last().unwrap_or(&0);
            ids.truncate(max_len - 1);
            ids.push(last);
        }
        let mask = vec![1; ids.len()];
        Ok(Tokens { ids, mask })
    }

    /// Number of tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token of the vocabulary (`[MASK]`...), if it has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of the padding token (`[PAD]`), 0 when the vocabulary has none.
    pub fn pad_id(&self) -> u32 {
        self.inner.token_to_id("[PAD]").unwrap_or(0)
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({} tokens)", self.inner.get_vocab_size(true))
    }
}

/// Every special token a template post-processor places must be one it
/// defines: the tokenizers crate indexes its map without checking and
/// panics at the first encode otherwise (found by tests/fuzz.rs).
fn check_templates(processor: &serde_json::Value) -> Result<(), String> {
    match processor["type"].as_str() {
        Some("TemplateProcessing") => {
            let defined = &processor["special_tokens"];
            for template in ["single", "pair"] {
                for piece in processor[template].as_array().into_iter().flatten() {
                    if let Some(id) = piece["SpecialToken"]["id"].as_str()
                        && defined.get(id).is_none()
                    {
                        return Err(format!("the {template} template places {id:?}, which it does not define"));
                    }
                }
            }
            Ok(())
        }
        Some("Sequence") => processor["processors"].as_array().into_iter().flatten().try_for_each(check_templates),
        _ => Ok(()),
    }
}

/// A BERT-style (uncased WordPiece) `tokenizer.json` for a vocabulary, which
/// must hold `[UNK]`, `[CLS]` and `[SEP]`: for small models made from
/// scratch (`pricer init-base`) and tests.
pub fn wordpiece_json(vocab: &[&str]) -> String {
    let id = |t: &str| vocab.iter().position(|w| *w == t).unwrap_or(0);
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": map}
    })
    .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny BERT-style WordPiece tokenizer for tests.
    pub fn tiny_tokenizer() -> TextTokenizer {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "blender", "steel", "with", "and", "for", "cable", "##s",
            "usb", "fast", "guitar", "drill", "black", "new", "pack",
        ];
        TextTokenizer::from_json(&wordpiece_json(&words)).expect("tiny tokenizer")
    }

    #[test]
    fn truncates_at_token_boundaries() {
        let t = tiny_tokenizer();
        let text = "The steel blender, with cables";
        assert_eq!(t.count(text).unwrap(), 7); // the steel blender , with cable ##s
        assert_eq!(t.truncate(text, 3).unwrap(), "The steel blender");
        assert_eq!(t.truncate(text, 100).unwrap(), text);
        assert_eq!(t.truncate(text, 0).unwrap(), "");
    }

    /// The cut without the prefix shortcut: tokenize everything.
    fn truncate_whole<'a>(t: &TextTokenizer, text: &'a str, max_tokens: usize) -> &'a str {
        t.cut(text, max_tokens).unwrap().0.unwrap_or(text)
    }

    #[test]
    fn the_prefix_shortcut_cuts_where_the_whole_text_would() {
        let t = tiny_tokenizer();
        let pieces = [
            "the",
            "steel",
            "blender,",
            "with",
            "cables",
            "usb-c",
            "ünïcode",
            "drill\n",
            "  ",
            "\t",
            "pack!",
            "x",
            "fast",
            "guitars",
            "新しい",
            "a",
            "black.",
            "new",
            "",
        ];
        let mut rng = 12345u64;
        for case in 0..1500 {
            let mut text = String::new();
            for _ in 0..(case % 60) {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push_str(pieces[(rng >> 33) as usize % pieces.len()]);
                text.push(if (rng >> 20).is_multiple_of(5) { '\n' } else { ' ' });
            }
            for max in [0, 1, 2, 3, 5, 8, 13] {
                let (cut, n) = t.truncate_counted(&text, max).unwrap();
                assert_eq!(cut, truncate_whole(&t, &text, max), "{text:?} at {max}");
                assert_eq!(n, t.count(cut).unwrap(), "{text:?} at {max}: count of {cut:?}");
            }
        }
    }

    #[test]
    fn encode_adds_special_tokens_and_keeps_sep_when_cut() {
        let t = tiny_tokenizer();
        let tokens = t.encode("the steel blender", 4).unwrap();
        assert_eq!(tokens.ids, vec![2, 4, 7, 3]);
        assert_eq!(tokens.mask, vec![1, 1, 1, 1]);
    }

    #[test]
    fn rejects_garbage_json() {
        let err = TextTokenizer::from_json("{not json").unwrap_err();
        assert!(err.to_string().contains("tokenizer"), "{err}");
    }
}
