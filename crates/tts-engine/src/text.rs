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
/// `[SPACE]` token; or, for the synthetic model, one token per character.
pub struct TextTokenizer {
    inner: Inner,
}

enum Inner {
    /// A `tokenizer.json` and its path (for errors).
    Hf(Box<tokenizers::Tokenizer>, std::path::PathBuf),
    /// Character `c` → `1 + (c mod (vocab − 1))`, stepped past the reserved ids (SOT/EOT).
    Characters { vocab: u32, reserved: Vec<u32> },
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. A missing or malformed file is an error naming it.
    pub fn from_file(path: &Path) -> Result<TextTokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::ModelFile { path: path.to_path_buf(), detail: format!("not a valid tokenizer: {e}") })?;
        Ok(TextTokenizer { inner: Inner::Hf(Box::new(inner), path.to_path_buf()) })
    }

    /// The synthetic model's tokenizer, built in memory: one token per character of the normalised
    /// text, over ids `1..vocab` without `reserved` (T3's start and stop text tokens). Any text
    /// tokenizes; ids mean nothing (the model's weights are random). Needs room for at least two
    /// ids besides the reserved ones.
    pub fn characters(vocab: usize, reserved: &[u32]) -> Result<TextTokenizer> {
        let usable = (1..vocab as u64).filter(|&i| !reserved.contains(&(i as u32))).count();
        if vocab > u32::MAX as usize || usable < 2 {
            return Err(Error::Setting {
                field: "text_tokens_dict_size",
                value: vocab.to_string(),
                expected: format!("room for two ids besides {reserved:?} (a character tokenizer)"),
            });
        }
        Ok(TextTokenizer { inner: Inner::Characters { vocab: vocab as u32, reserved: reserved.to_vec() } })
    }

    /// Token ids of already normalised text (`EnTokenizer.text_to_tokens`), without SOT/EOT.
    pub fn encode(&self, normalized: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Hf(tok, path) => {
                let spaced = normalized.replace(' ', "[SPACE]");
                let enc = tok
                    .encode(spaced.as_str(), false)
                    .map_err(|e| Error::ModelFile { path: path.clone(), detail: format!("cannot tokenize the text: {e}") })?;
                Ok(enc.get_ids().to_vec())
            }
            Inner::Characters { vocab, reserved } => Ok(normalized
                .chars()
                .map(|c| {
                    let mut id = 1 + (c as u32) % (vocab - 1);
                    while reserved.contains(&id) {
                        id = 1 + id % (vocab - 1);
                    }
                    id
                })
                .collect()),
        }
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

    #[test]
    fn the_character_tokenizer_avoids_reserved_ids_and_stays_in_the_vocabulary() {
        let tok = TextTokenizer::characters(704, &[255, 0]).unwrap();
        // U+00FE and U+03BD both map to 255 (SOT) before the step past it
        let ids = tok.encode("Hi \u{fe}\u{3bd}, ok.").unwrap();
        assert_eq!(ids.len(), 10);
        assert_eq!(&ids[3..5], &[256, 256]);
        assert!(ids.iter().all(|&i| (1..704).contains(&i) && i != 255), "{ids:?}");
        assert_eq!(ids[0], 1 + 'H' as u32 % 703);
        assert_eq!(tok.encode("aa").unwrap()[0], tok.encode("ab").unwrap()[0]);
        assert!(TextTokenizer::characters(3, &[1]).is_err());
        let tiny = TextTokenizer::characters(4, &[1]).unwrap();
        assert!(tiny.encode("any text at all").unwrap().iter().all(|&i| i == 2 || i == 3));
    }
}
