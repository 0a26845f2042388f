//! The text front end on arbitrary text: `punc_norm`, then the `tokenizer.json` of the test
//! fixtures (the tiny model's, same format as Chatterbox's) and the synthetic model's character
//! tokenizer. Normalised text is never empty and ends in one of `.!?-,`; token ids stay inside the
//! vocabulary.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tts_engine::text::{TextTokenizer, punc_norm};

const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/text_a/tokenizer.json");
/// Real T3's text vocabulary and its start/stop text tokens.
const VOCAB: usize = 704;
const RESERVED: [u32; 2] = [255, 0];

fn tokenizers() -> &'static (TextTokenizer, TextTokenizer) {
    static TOK: OnceLock<(TextTokenizer, TextTokenizer)> = OnceLock::new();
    TOK.get_or_init(|| {
        let hf = TextTokenizer::from_file(Path::new(TOKENIZER)).expect("the fixture's tokenizer.json");
        let chars = TextTokenizer::characters(VOCAB, &RESERVED).expect("the character tokenizer");
        (hf, chars)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let norm = punc_norm(text);
    assert!(norm.ends_with(['.', '!', '?', '-', ',']), "{text:?} -> {norm:?}");
    let (hf, chars) = tokenizers();
    if let Ok(ids) = hf.encode(&norm) {
        assert!(ids.iter().all(|&i| (i as usize) < VOCAB), "{norm:?} -> {ids:?}");
    }
    let ids = chars.encode(&norm).expect("the character tokenizer takes any text");
    assert_eq!(ids.len(), norm.chars().count());
    assert!(ids.iter().all(|&i| (1..VOCAB as u32).contains(&i) && !RESERVED.contains(&i)), "{norm:?} -> {ids:?}");
});
