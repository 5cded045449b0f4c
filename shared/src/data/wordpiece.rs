//! BERT's WordPiece on plain ASCII text, without the tokenizers crate's
//! per-character bookkeeping: the same tokens, offsets and word numbers for
//! a text of printable ASCII, tabs and line breaks, which most product text
//! is. Any other text goes to the tokenizers crate (the caller's fallback).
//!
//! On such a text every step of a BERT tokenizer is simple: the normalizer
//! only lowercases (no control character to drop, no accent to strip, no
//! Chinese character), the pre-tokenizer splits at spaces, tabs and line
//! breaks and isolates each ASCII punctuation mark, and WordPiece matches
//! the longest vocabulary piece first. [`AsciiWordPiece::new`] checks the
//! tokenizer is of that kind and that both give the same tokens on probe
//! texts; the tests compare them on generated texts.

use serde_json::Value;
use std::collections::HashMap;

/// One token: its id, its byte range in the text, and the number of the
/// pre-tokenizer's word it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub id: u32,
    pub start: usize,
    pub end: usize,
    pub word: Option<u32>,
}

/// The fast path of a BERT-style WordPiece tokenizer.
#[derive(Clone)]
pub struct AsciiWordPiece {
    /// Pieces that start a word, and pieces that continue one (stored
    /// without the continuing prefix, `##`), lowercased when `lowercase`.
    starts: HashMap<Vec<u8>, u32>,
    continues: HashMap<Vec<u8>, u32>,
    longest_start: usize,
    longest_continue: usize,
    unk: u32,
    max_word_chars: usize,
    lowercase: bool,
    /// Tokens matched in the raw text before normalizing (`[MASK]`...): a
    /// text that holds one goes the slow way.
    added: Vec<String>,
    /// Special tokens the post-processor puts before and after a text.
    pub before: Vec<u32>,
    pub after: Vec<u32>,
}

/// Texts the fast path must tokenize as the tokenizers crate does before it
/// is used: punctuation, digits, case, a word of no known piece, one over
/// the length limit, every kind of whitespace it takes.
const PROBES: [&str; 4] = [
    "",
    "Stainless Steel 3-Pack (USB-C), 2m: fast-charging! 100% \"new\"\tqzxqzxqzx ##s a_b [x] ~{y}",
    "The\r\nquick\nbrown fox's   jump-over: 1.5mm/2.0\" $19.99 & more; e-mail@example.com #1 <b>bold</b>",
    "supercalifragilisticexpialidocious-supercalifragilisticexpialidocious-supercalifragilisticexpialidocious \
     unbelievablyunbelievablyunbelievablyunbelievablyunbelievablyunbelievablyunbelievablyunbelievablyunbelievably",
];

impl AsciiWordPiece {
    /// The fast path for the tokenizer of `json`, if it is a BERT-style
    /// WordPiece tokenizer and gives the same tokens as `inner` on the probes.
    pub fn new(json: &Value, inner: &tokenizers::Tokenizer) -> Option<AsciiWordPiece> {
        let (normalizer, model) = (&json["normalizer"], &json["model"]);
        if normalizer["type"] != "BertNormalizer"
            || json["pre_tokenizer"]["type"] != "BertPreTokenizer"
            || model["type"] != "WordPiece"
        {
            return None;
        }
        let prefix = model["continuing_subword_prefix"].as_str()?;
        let vocab = model["vocab"].as_object()?;
        let mut starts = HashMap::with_capacity(vocab.len());
        let mut continues = HashMap::new();
        for (piece, id) in vocab {
            let id = u32::try_from(id.as_u64()?).ok()?;
            match piece.strip_prefix(prefix) {
                Some(rest) if !prefix.is_empty() => continues.insert(rest.as_bytes().to_vec(), id),
                _ => starts.insert(piece.as_bytes().to_vec(), id),
            };
        }
        let unk = u32::try_from(vocab.get(model["unk_token"].as_str()?)?.as_u64()?).ok()?;
        let added = json["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["content"].as_str().map(str::to_ascii_lowercase)).collect())
            .unwrap_or_default();
        let probe = inner.encode("a", true).ok()?;
        let mask = probe.get_special_tokens_mask();
        let first = mask.iter().position(|&m| m == 0)?;
        let last = mask.iter().rposition(|&m| m == 0)?;
        let fast = AsciiWordPiece {
            longest_start: starts.keys().map(Vec::len).max().unwrap_or(0),
            longest_continue: continues.keys().map(Vec::len).max().unwrap_or(0),
            starts,
            continues,
            unk,
            max_word_chars: usize::try_from(model["max_input_chars_per_word"].as_u64()?).ok()?,
            lowercase: normalizer["lowercase"].as_bool()?,
            added,
            before: probe.get_ids()[..first].to_vec(),
            after: probe.get_ids()[last + 1..].to_vec(),
        };
        PROBES.iter().all(|text| fast.agrees(inner, text)).then_some(fast)
    }

    /// Whether the fast path gives `inner`'s tokens for `text`, with and
    /// without special tokens.
    fn agrees(&self, inner: &tokenizers::Tokenizer, text: &str) -> bool {
        let (Some(pieces), Ok(plain), Ok(special)) =
            (self.pieces(text), inner.encode(text, false), inner.encode(text, true))
        else {
            return false;
        };
        let ids: Vec<u32> = pieces.iter().map(|p| p.id).collect();
        let with_special: Vec<u32> = self.before.iter().chain(&ids).chain(&self.after).copied().collect();
        let offsets: Vec<(usize, usize)> = pieces.iter().map(|p| (p.start, p.end)).collect();
        let words: Vec<Option<u32>> = pieces.iter().map(|p| p.word).collect();
        ids == plain.get_ids()
            && offsets == plain.get_offsets()
            && words == plain.get_word_ids()
            && with_special == special.get_ids()
    }

    /// The tokens of `text` (special tokens not included), or `None` when
    /// the text is not plain ASCII or holds an added token.
    pub fn pieces(&self, text: &str) -> Option<Vec<Piece>> {
        let bytes = text.as_bytes();
        if !bytes.iter().all(|&b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r')) {
            return None;
        }
        // Compared without case: an added token may be matched after lowercasing.
        if !self.added.is_empty() {
            let lower = text.to_ascii_lowercase();
            if self.added.iter().any(|a| lower.contains(a.as_str())) {
                return None;
            }
        }
        let mut out = Vec::with_capacity(bytes.len() / 3);
        let mut word = Vec::new();
        let mut number = 0u32;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
                continue;
            }
            let end = if b.is_ascii_punctuation() {
                i + 1
            } else {
                i + bytes[i..]
                    .iter()
                    .position(|&c| matches!(c, b' ' | b'\t' | b'\n' | b'\r') || c.is_ascii_punctuation())
                    .unwrap_or(bytes.len() - i)
            };
            word.clear();
            word.extend(bytes[i..end].iter().map(|&c| if self.lowercase { c.to_ascii_lowercase() } else { c }));
            self.word_pieces(&word, i, number, &mut out);
            number += 1;
            i = end;
        }
        Some(out)
    }

    /// WordPiece on one word at byte `at` of the text: the longest known
    /// piece first, then the longest continuing piece, and so on; `[UNK]`
    /// for the whole word when it is too long or some part matches nothing.
    fn word_pieces(&self, word: &[u8], at: usize, number: u32, out: &mut Vec<Piece>) {
        let whole = Piece { id: self.unk, start: at, end: at + word.len(), word: Some(number) };
        if word.len() > self.max_word_chars {
            return out.push(whole);
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let (map, longest) =
                if start == 0 { (&self.starts, self.longest_start) } else { (&self.continues, self.longest_continue) };
            let mut end = word.len().min(start + longest);
            let found = loop {
                if end <= start {
                    break None;
                }
                if let Some(&id) = map.get(&word[start..end]) {
                    break Some(id);
                }
                end -= 1;
            };
            let Some(id) = found else {
                out.truncate(first);
                return out.push(whole);
            };
            out.push(Piece { id, start: at + start, end: at + end, word: Some(number) });
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tokenizer::TextTokenizer;
    use crate::tokenizer::tests::tiny_tokenizer;

    /// The MiniLM tokenizer the shipped model carries.
    fn minilm() -> TextTokenizer {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../static/models/default.gguf");
        let file = crate::model_file::ModelFile::from_bytes(&std::fs::read(path).unwrap()).unwrap();
        TextTokenizer::from_json(file.str(crate::estimator::keys::TOKENIZER).unwrap()).unwrap()
    }

    /// Product-like ASCII text: known and unknown words in any case, digits,
    /// units, punctuation runs, every whitespace the fast path takes, words
    /// over the length limit; now and then a character that sends the text
    /// the slow way (a control character, an accent, an added token).
    fn texts(seed: u64, n: usize) -> Vec<String> {
        let words = [
            "the",
            "Steel",
            "BLENDER",
            "with",
            "cables",
            "USB-C",
            "3-pack",
            "2.5mm",
            "$19.99",
            "100%",
            "qzxwv",
            "Wi-Fi",
            "e-mail@example.com",
            "(black)",
            "[new]",
            "x",
            "guitar's",
            "drill,",
            "fast!!",
            "##s",
            "a_b",
            "~{y}",
            "<b>",
            "\"12\"",
            "unbelievably",
            "Supercalifragilisticexpialidocious",
            "pack.",
            "#1",
            "&",
            "1/2",
            "C++",
            "`q`",
        ];
        let rare = ["caf\u{e9}", "\u{7}", "[MASK]", "[mask]", "\u{2122}", "\u{b}", "\u{7f}", "[UNK]"];
        let gaps = [" ", " ", " ", "  ", "\n", "\t", "\r\n", ""];
        let mut rng = seed;
        let mut next = move || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize
        };
        (0..n)
            .map(|case| {
                let mut text = String::new();
                for _ in 0..(case % 90) {
                    match next() % 40 {
                        0 => text.push_str(&"ab".repeat(40 + next() % 30)),
                        1 if case % 3 == 0 => text.push_str(rare[next() % rare.len()]),
                        _ => text.push_str(words[next() % words.len()]),
                    }
                    text.push_str(gaps[next() % gaps.len()]);
                }
                text
            })
            .collect()
    }

    /// Every token, offset and word number the fast path gives is the
    /// tokenizers crate's, and the texts it declines are the ones it must.
    fn agrees_with_the_crate(t: &TextTokenizer) {
        let fast = t.fast.as_ref().expect("a BERT-style tokenizer takes the fast path");
        let (mut taken, mut declined) = (0, 0);
        for text in texts(7, 3000) {
            let enc = t.inner.encode(text.as_str(), false).unwrap();
            match fast.pieces(&text) {
                Some(pieces) => {
                    taken += 1;
                    assert_eq!(pieces.iter().map(|p| p.id).collect::<Vec<_>>(), enc.get_ids(), "{text:?}");
                    let offsets: Vec<(usize, usize)> = pieces.iter().map(|p| (p.start, p.end)).collect();
                    assert_eq!(offsets, enc.get_offsets(), "{text:?}");
                    assert_eq!(pieces.iter().map(|p| p.word).collect::<Vec<_>>(), enc.get_word_ids(), "{text:?}");
                    let special = t.inner.encode(text.as_str(), true).unwrap();
                    assert_eq!(t.encode(&text, usize::MAX).unwrap().ids, special.get_ids(), "{text:?}");
                }
                None => {
                    declined += 1;
                    let plain = text.bytes().all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r'));
                    assert!(
                        !plain || text.to_ascii_lowercase().contains("[mask]") || text.contains("[UNK]"),
                        "{text:?}"
                    );
                }
            }
        }
        assert!(taken > 2000 && declined > 100, "{taken} texts on the fast path, {declined} declined");
    }

    #[test]
    fn the_fast_path_gives_the_tokenizers_crate_tokens_for_minilm() {
        agrees_with_the_crate(&minilm());
    }

    #[test]
    fn the_fast_path_gives_the_tokenizers_crate_tokens_for_a_tiny_vocabulary() {
        // Most words are unknown here: [UNK] for whole words, pieces that stop halfway.
        agrees_with_the_crate(&tiny_tokenizer());
    }

    #[test]
    fn cuts_and_counts_are_the_crates_on_the_fast_path() {
        let t = minilm();
        let mut slow = t.clone();
        slow.fast = None;
        for text in texts(11, 600) {
            for max in [0, 1, 7, 40, 160] {
                assert_eq!(
                    t.truncate_counted(&text, max).unwrap(),
                    slow.truncate_counted(&text, max).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn tokenizers_of_another_kind_go_the_slow_way() {
        let mut json: serde_json::Value =
            serde_json::from_str(&crate::tokenizer::wordpiece_json(&["[UNK]", "[CLS]", "[SEP]", "a"])).unwrap();
        json["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
        let t = TextTokenizer::from_json(&json.to_string()).unwrap();
        assert!(t.fast.is_none());
        assert_eq!(t.count("a a, a").unwrap(), 4);
    }
}
