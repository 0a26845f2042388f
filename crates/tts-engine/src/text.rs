//! The text front-end: Chatterbox's `punc_norm` and its `EnTokenizer` (tts.py, tokenizer.py of
//! chatterbox-tts 0.1.7), reproduced exactly.
use std::path::Path;

use crate::{Error, Result};

/// What the reference substitutes for an empty text.
pub const EMPTY_TEXT: &str = "You need to add some text for me to talk.";

/// Python's `str.isspace` for one character (Unicode White_Space plus the information separators
/// U+001C..U+001F, which Python also splits on).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `punc_norm` of the reference, in its order:
/// 1. empty text → [`EMPTY_TEXT`];
/// 2. a lowercase first character is upper-cased (full case mapping: "ß" → "SS");
/// 3. runs of whitespace collapse to one space, leading and trailing whitespace goes;
/// 4. punctuation replacements ("..." and "…" → ", ", ":" → ",", " - " → ", ", ";" → ", ",
///    em and en dashes → "-", " ," → ",", curly quotes → straight quotes);
/// 5. trailing spaces go, and "." is appended unless the text ends with one of `.!?-,`.
pub fn punc_norm(text: &str) -> String {
    if text.is_empty() {
        return EMPTY_TEXT.to_string();
    }
    let mut chars = text.chars();
    let first = chars.next().unwrap();
    let mut t = if first.is_lowercase() { first.to_uppercase().chain(chars).collect::<String>() } else { text.to_string() };
    t = t.split(py_isspace).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    for (from, to) in [
        ("...", ", "),
        ("…", ", "),
        (":", ","),
        (" - ", ", "),
        (";", ", "),
        ("—", "-"),
        ("–", "-"),
        (" ,", ","),
        ("“", "\""),
        ("”", "\""),
        ("‘", "'"),
        ("’", "'"),
    ] {
        t = t.replace(from, to);
    }
    let t = t.trim_end_matches(' ');
    let mut t = t.to_string();
    if !t.ends_with(['.', '!', '?', '-', ',']) {
        t.push('.');
    }
    t
}

/// Chatterbox's English tokenizer: a `tokenizer.json` (HF tokenizers) whose spaces are the
/// `[SPACE]` token.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. A missing or malformed file is an error naming it.
    pub fn from_file(path: &Path) -> Result<TextTokenizer> {
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Model(format!("tokenizer {}: {e}", path.display())))?;
        Ok(TextTokenizer { inner })
    }

    /// Token ids of already normalised text (`EnTokenizer.text_to_tokens`), without SOT/EOT.
    pub fn encode(&self, normalized: &str) -> Result<Vec<u32>> {
        let spaced = normalized.replace(' ', "[SPACE]");
        let enc = self.inner.encode(spaced.as_str(), false).map_err(|e| Error::Model(format!("tokenizing text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punc_norm_examples() {
        assert_eq!(punc_norm(""), EMPTY_TEXT);
        assert_eq!(punc_norm("   "), ".");
        assert_eq!(punc_norm("  leading spaces"), "leading spaces.");
        assert_eq!(punc_norm("ß is sharp"), "SS is sharp.");
        assert_eq!(punc_norm("Wait... what?"), "Wait,  what?");
        assert_eq!(punc_norm("a\u{1f}b"), "A b.");
        assert_eq!(punc_norm("Ends with a comma,"), "Ends with a comma,");
    }
}
