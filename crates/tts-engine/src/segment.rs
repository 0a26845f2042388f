//! Long text → segments the model speaks well, each with the pause that follows it.
//!
//! T3 speaks one text per generation, at most [`DEFAULT_MAX_CHARS`]-ish characters at a time (see
//! there), so a chapter is cut into segments that are natural units of speech, ending at
//! punctuation where possible. [`split_text`] does it in three steps:
//!
//! 1. **Paragraphs.** A run of whitespace holding two or more line breaks (a blank line; `\r\n`
//!    counts as one break, a form feed or U+2029 as two) ends a paragraph. Segments never span two
//!    paragraphs. Inside a paragraph every run of whitespace becomes one space.
//! 2. **Sentences.** A sentence ends after a run of `.` `!` `?` `…` `‼` `⁇` `⁈` `⁉` `؟` `।` (`?!`,
//!    `...` included) and any closing quotes or brackets after it (`."` `?”` `.)` `!»`), when a space
//!    follows and the next word does not start with a lowercase letter (`"Help!" she cried`, `Well...
//!    maybe` go on). A lone `.` does not end a sentence after an abbreviation of [`ABBREVIATIONS`],
//!    a single letter (the initials of `J. R. R. Tolkien`) or letters joined by dots (`U.S.`,
//!    `e.g.`). No sentence ends where text follows without a space (`3.14`, `v2.0`, `192.168.0.1`,
//!    `example.com`, `a.b@c.org`, `file.txt`), except after the CJK marks `。！？｡`, which need no
//!    space. A run that would end a "sentence" of no letters or digits (a leading `...`) does not.
//!    Erring towards going on is cheap (`plan B. Then` stays one sentence: the text packs on, only
//!    a pause is lost); a wrong end is not (`Dr.` spoken alone, then a pause).
//! 3. **Packing.** Consecutive sentences are packed greedily into segments of at most `max_chars`
//!    characters. A sentence longer than that is cut at clause marks (`,` `;` `:` followed by a
//!    space, `—`, `–` except between digits, ` - `, an ellipsis or `?`/`!` run that did not end the
//!    sentence, and the CJK `，、；：`), the clauses packed greedily; a clause still too long is cut
//!    at spaces, a word still too long between grapheme clusters (approximated: a combining mark,
//!    variation selector, emoji modifier or a character after a zero-width joiner stays with the
//!    character before it; regional-indicator flags stay in pairs), and a cluster longer than
//!    `max_chars` (pathological) between characters. The last piece of a cut sentence is packed with
//!    the sentences after it.
//!
//! Guarantees: every segment is non-empty, at most `max_chars` characters (`char`s, not bytes),
//! has no leading, trailing or repeated whitespace and no whitespace other than ' '; the
//! non-whitespace characters of the input appear in the segments, in order, each exactly once (a
//! text of only whitespace gives no segments). `punc_norm` (`crate::text`) runs on each segment
//! afterwards, as the reference runs it on its one text.

/// The default segment budget, in characters: 300.
///
/// - The reference's own demo (`gradio_tts_app.py` of resemble-ai/chatterbox) labels its input
///   "Text to synthesize (max chars 300)": the length the model is meant to speak in one go (it
///   degrades past a few hundred characters, which is why long text is split at all).
/// - At ~15 characters per second of read speech, 300 characters are ~20 s of audio, 500 of T3's
///   1000 speech tokens (25 per second, 40 s per generation): half the cap, so a slow voice or
///   setting (down to ~8 characters per second) still ends before T3 is cut off at 40 s.
/// - 300 characters are at most ~300 text tokens (Chatterbox's `tokenizer.json` is a BPE over
///   characters without byte fallback: at most one token per character of the `punc_norm`ed text,
///   which is at most one character longer per `…`), far below T3's 2048.
/// - A much smaller budget would cut a typical English sentence (~100–150 characters) less often but
///   pack fewer of them per generation: more, shorter generations and more joins.
pub const DEFAULT_MAX_CHARS: usize = 300;

/// What follows a segment, from no pause to the longest (the order of the variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pause {
    /// The segment was cut inside a clause at a space, or inside an overlong word: no pause.
    Word,
    /// The segment was cut inside an overlong sentence at a clause mark (`,` `;` `:` dashes, CJK
    /// `，、；`).
    Clause,
    /// The segment ends a sentence.
    Sentence,
    /// The segment ends a paragraph (a blank line follows) or the text.
    Paragraph,
}

impl Pause {
    /// Seconds of silence to put after the segment's audio (on top of whatever silence the model
    /// leaves at the edges of its audio: S3Gen's output starts with 20 ms of silence and a 20 ms fade).
    /// Read speech pauses ~0.1–0.25 s at a comma, ~0.3–0.5 s between sentences and ~0.6–1 s between
    /// paragraphs; these are at the low end of each range for the model's own edge silence.
    pub fn seconds(self) -> f32 {
        match self {
            Pause::Word => 0.0,
            Pause::Clause => 0.12,
            Pause::Sentence => 0.3,
            Pause::Paragraph => 0.7,
        }
    }
}

/// One piece of text to speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The text: non-empty, whitespace collapsed to single spaces, trimmed.
    pub text: String,
    /// What followed it in the input (the last segment of a text has [`Pause::Paragraph`]).
    pub pause_after: Pause,
}

impl Segment {
    /// Whether the text has a letter or a digit: a segment of only punctuation or symbols (a
    /// `* * *` scene break) gives the model nothing to say, and a caller may turn it into silence.
    pub fn is_speakable(&self) -> bool {
        self.text.chars().any(char::is_alphanumeric)
    }
}

/// How an abbreviation of [`ABBREVIATIONS`] is recognised before its final `.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbbrevCase {
    /// In any case (`etc`, `ETC`, `Etc`): words that are no ordinary English word.
    Any,
    /// As written or all in capitals (`Dr`, `DR`, not `dr`): titles and names whose lowercase form
    /// may be an ordinary word at a sentence's end.
    Capitalized,
    /// In any case, and only before a word starting with a digit (`No. 5`): `No.` also ends
    /// sentences.
    BeforeNumber,
}

/// Words after which a `.` followed by a space does not end a sentence, without the final `.`.
/// Chains of single letters and dots (`U.S`, `e.g`, `a.m`, `U.S.A`) are recognised without an
/// entry; those here are listed anyway for the reader. Never splitting after one costs little: the
/// text merely packs on (`apples, pears, etc. Then` stays one sentence).
pub const ABBREVIATIONS: &[(&str, AbbrevCase)] = {
    use AbbrevCase::*;
    &[
        // titles and name suffixes
        ("Dr", Capitalized),
        ("Mr", Capitalized),
        ("Mrs", Capitalized),
        ("Ms", Capitalized),
        ("Messrs", Capitalized),
        ("Prof", Capitalized),
        ("Jr", Capitalized),
        ("Sr", Capitalized),
        ("St", Capitalized),
        ("Mt", Capitalized),
        ("Rev", Capitalized),
        ("Hon", Capitalized),
        ("Gen", Capitalized),
        ("Col", Capitalized),
        ("Capt", Capitalized),
        ("Lt", Capitalized),
        ("Sgt", Capitalized),
        ("Gov", Capitalized),
        ("Sen", Capitalized),
        ("Rep", Capitalized),
        // companies and places
        ("Inc", Capitalized),
        ("Ltd", Capitalized),
        ("Co", Capitalized),
        ("Corp", Capitalized),
        ("Bros", Capitalized),
        ("Ave", Capitalized),
        ("Blvd", Capitalized),
        ("Rd", Capitalized),
        ("Dept", Capitalized),
        ("Univ", Capitalized),
        ("Fig", Capitalized),
        ("Figs", Capitalized),
        // Latin and reference abbreviations
        ("etc", Any),
        ("e.g", Any),
        ("i.e", Any),
        ("vs", Any),
        ("viz", Any),
        ("cf", Any),
        ("al", Any),
        ("approx", Any),
        ("ca", Any),
        ("esp", Any),
        ("a.m", Any),
        ("p.m", Any),
        ("u.s", Any),
        ("ph.d", Any),
        // before a number
        ("No", BeforeNumber),
        ("Nos", BeforeNumber),
        ("Vol", BeforeNumber),
        ("Ch", BeforeNumber),
        ("Eq", BeforeNumber),
        ("pp", BeforeNumber),
        ("Art", BeforeNumber),
        ("Sec", BeforeNumber),
        ("Jan", BeforeNumber),
        ("Feb", BeforeNumber),
        ("Mar", BeforeNumber),
        ("Apr", BeforeNumber),
        ("Jun", BeforeNumber),
        ("Jul", BeforeNumber),
        ("Aug", BeforeNumber),
        ("Sep", BeforeNumber),
        ("Sept", BeforeNumber),
        ("Oct", BeforeNumber),
        ("Nov", BeforeNumber),
        ("Dec", BeforeNumber),
    ]
};

/// Splits `text` into segments of at most `max_chars` characters (a `max_chars` of 0 is taken as
/// 1), following the rules of this module's documentation. Never fails; a text of only whitespace
/// gives no segments.
pub fn split_text(text: &str, max_chars: usize) -> Vec<Segment> {
    let max = max_chars.max(1);
    let mut out = Vec::new();
    for paragraph in paragraphs(text) {
        pack_paragraph(&paragraph, max, &mut out);
    }
    out
}

/// Whitespace as Python's `str.isspace` sees it (what `punc_norm` splits on): Unicode White_Space
/// plus the information separators U+001C..U+001F.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The paragraphs of `text`, each with its whitespace collapsed to single spaces and trimmed, as
/// characters; no paragraph is empty.
fn paragraphs(text: &str) -> Vec<Vec<char>> {
    let mut out = Vec::new();
    let mut current: Vec<char> = Vec::new();
    let mut breaks = 0usize; // line breaks in the current run of whitespace
    let mut in_space = false;
    let mut after_cr = false;
    for c in text.chars() {
        if is_space(c) {
            if !in_space {
                in_space = true;
                breaks = 0;
            }
            breaks += match c {
                '\n' if after_cr => 0,
                '\n' | '\r' | '\u{0b}' | '\u{85}' | '\u{2028}' => 1,
                '\u{0c}' | '\u{2029}' => 2,
                _ => 0,
            };
            after_cr = c == '\r';
            continue;
        }
        after_cr = false;
        if in_space {
            in_space = false;
            if breaks >= 2 && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            } else if !current.is_empty() {
                current.push(' ');
            }
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Marks that end a sentence when a space follows.
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '؟' | '।' | '॥') || is_cjk_terminator(c)
}

/// Marks that end a sentence with or without a space after them.
fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

/// Closing quotes and brackets that stay with the mark before them (`«` too: German quotes close
/// with it).
fn is_closer(c: char) -> bool {
    "\"'”’»«›‹)]}」』）】〉》〕］｝＂＇".contains(c)
}

/// Opening quotes, brackets and Spanish inverted marks, skipped to find a word's first letter.
fn is_opener(c: char) -> bool {
    "\"'“‘„‚«»‹›([{¿¡「『（【〈《〔［｛".contains(c)
}

/// Sentences of a collapsed paragraph as `[start, end)` character ranges, covering it but for the
/// single spaces between them.
fn sentences(p: &[char]) -> Vec<(usize, usize)> {
    let n = p.len();
    let mut out = Vec::new();
    let mut start = 0;
    let mut last_alphanumeric = None; // where the last letter or digit was
    let mut i = 0;
    while i < n {
        if !is_terminator(p[i]) {
            if p[i].is_alphanumeric() {
                last_alphanumeric = Some(i);
            }
            i += 1;
            continue;
        }
        let mut j = i;
        while j < n && is_terminator(p[j]) {
            j += 1;
        }
        let mut k = j;
        while k < n && is_closer(p[k]) {
            k += 1;
        }
        let says_something = last_alphanumeric.is_some_and(|a| a >= start);
        if k < n && says_something && ends_sentence(p, start, i, j, k) {
            out.push((start, k));
            start = if p[k] == ' ' { k + 1 } else { k };
        }
        i = k;
    }
    if start < n {
        out.push((start, n));
    }
    out
}

/// Whether the terminator run `p[i..j]` and its closers `p[j..k]` (`k < p.len()`) end the sentence
/// that began at `start` (which has a letter or digit before `i`).
fn ends_sentence(p: &[char], start: usize, i: usize, j: usize, k: usize) -> bool {
    if p[i..j].iter().any(|&c| is_cjk_terminator(c)) {
        return true;
    }
    if p[k] != ' ' {
        return false;
    }
    let next_word: &[char] = {
        let rest = &p[k + 1..];
        &rest[..rest.iter().position(|&c| c == ' ').unwrap_or(rest.len())]
    };
    match next_word.iter().find(|&&c| !is_opener(c)) {
        Some(&c) if is_terminator(c) || c.is_lowercase() => return false,
        _ => {}
    }
    if j - i == 1 && p[i] == '.' {
        let word_start = p[start..i].iter().rposition(|&c| c == ' ').map_or(start, |s| start + s + 1);
        let word = &p[word_start..i];
        let word = &word[word.iter().position(|&c| !is_opener(c)).unwrap_or(word.len())..];
        let next_is_number = next_word.first().is_some_and(|c| c.is_ascii_digit());
        if is_abbreviation(word, next_is_number) || is_letter_chain(word) {
            return false;
        }
    }
    true
}

/// Whether `word` (without its final `.`) is an entry of [`ABBREVIATIONS`].
fn is_abbreviation(word: &[char], next_is_number: bool) -> bool {
    if word.is_empty() || word.len() > 8 {
        return false;
    }
    let word: String = word.iter().collect();
    ABBREVIATIONS.iter().any(|&(entry, case)| match case {
        AbbrevCase::Any => word.to_lowercase() == entry.to_lowercase(),
        AbbrevCase::Capitalized => word == entry || word == entry.to_uppercase(),
        AbbrevCase::BeforeNumber => next_is_number && word.to_lowercase() == entry.to_lowercase(),
    })
}

/// A single letter (an initial: `J`) or single letters joined by dots (`U.S`, `e.g`, `a.m`).
fn is_letter_chain(word: &[char]) -> bool {
    !word.is_empty()
        && word.len() % 2 == 1
        && word.iter().enumerate().all(|(n, &c)| if n % 2 == 0 { c.is_alphabetic() } else { c == '.' })
}

/// Packs the sentences of one collapsed paragraph into segments, appending them to `out`.
fn pack_paragraph(p: &[char], max: usize, out: &mut Vec<Segment>) {
    let mut current: Option<(usize, usize)> = None;
    for (s, e) in sentences(p) {
        if e - s > max {
            flush(p, &mut current, Pause::Sentence, out);
            // the sentence's last piece stays open for the sentences after it
            current = Some(split_range(p, s, e, max, Level::Clause, out));
            continue;
        }
        match current {
            Some((cs, _)) if e - cs <= max => current = Some((cs, e)),
            _ => {
                flush(p, &mut current, Pause::Sentence, out);
                current = Some((s, e));
            }
        }
    }
    flush(p, &mut current, Pause::Paragraph, out);
}

/// Emits `current` (if any) as a segment followed by `pause`.
fn flush(p: &[char], current: &mut Option<(usize, usize)>, pause: Pause, out: &mut Vec<Segment>) {
    if let Some((s, e)) = current.take()
        && s < e
    {
        out.push(Segment { text: p[s..e].iter().collect(), pause_after: pause });
    }
}

/// Where an overlong range is cut, from the best place to the last resort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Clause,
    Word,
    Cluster,
    Char,
}

impl Level {
    /// The pause after a piece cut at this level, and the level for a unit still too long.
    fn pause_and_next(self) -> (Pause, Level) {
        match self {
            Level::Clause => (Pause::Clause, Level::Word),
            Level::Word => (Pause::Word, Level::Cluster),
            Level::Cluster => (Pause::Word, Level::Char),
            Level::Char => (Pause::Word, Level::Char),
        }
    }
}

/// Cuts `p[s..e]` (longer than `max`) at the places of `level` and packs the units between them
/// greedily, cutting units still too long at the next level. Every piece but the last is appended
/// to `out`; the last piece is returned, for the caller to pack on or emit.
fn split_range(p: &[char], s: usize, e: usize, max: usize, level: Level, out: &mut Vec<Segment>) -> (usize, usize) {
    let cuts = match level {
        Level::Clause => clause_cuts(p, s, e),
        Level::Word => (s + 1..e).filter(|&i| p[i] == ' ').collect(),
        Level::Cluster => cluster_cuts(p, s, e),
        Level::Char => (s + 1..e).collect(),
    };
    let (cut_pause, next) = level.pause_and_next();
    let mut current: Option<(usize, usize)> = None;
    let mut unit_start = s;
    for unit_end in cuts.into_iter().chain(std::iter::once(e)) {
        let (us, ue) = (unit_start, unit_end);
        unit_start = if unit_end < e && p[unit_end] == ' ' { unit_end + 1 } else { unit_end };
        if us >= ue {
            continue;
        }
        if ue - us > max && level != Level::Char {
            flush(p, &mut current, cut_pause, out);
            let (ls, le) = split_range(p, us, ue, max, next, out);
            // the unit's last piece packs on with the units after it, like a sentence's
            current = Some((ls, le));
            continue;
        }
        match current {
            Some((cs, _)) if ue - cs <= max => current = Some((cs, ue)),
            _ => {
                flush(p, &mut current, cut_pause, out);
                current = Some((us, ue));
            }
        }
    }
    current.unwrap_or((e, e))
}

/// Where a sentence `p[s..e]` may be cut between clauses: the position just after each clause mark
/// (and any closing quotes after it); the piece after starts there, or after the space there.
fn clause_cuts(p: &[char], s: usize, e: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    let mut push = |q: usize| {
        if q > s && q < e && cuts.last().is_none_or(|&l| l < q) {
            cuts.push(q);
        }
    };
    let after_closers = |mut q: usize| {
        while q < e && is_closer(p[q]) {
            q += 1;
        }
        q
    };
    let mut i = s;
    while i < e {
        let c = p[i];
        match c {
            ',' | ';' | ':' => {
                let q = after_closers(i + 1);
                if q < e && p[q] == ' ' {
                    push(q);
                }
            }
            '，' | '、' | '；' | '：' | '—' | '―' => push(after_closers(i + 1)),
            '–' => {
                let between_digits = i > s && p[i - 1].is_ascii_digit() && i + 1 < e && p[i + 1].is_ascii_digit();
                if !between_digits {
                    push(after_closers(i + 1));
                }
            }
            '-' if i > s && p[i - 1] == ' ' && i + 1 < e && p[i + 1] == ' ' => push(i + 1),
            _ if is_terminator(c) => {
                // an ellipsis or `?`/`!` run inside the sentence (not a lone `.`: `Dr. Who`)
                let mut j = i;
                while j < e && is_terminator(p[j]) {
                    j += 1;
                }
                let q = after_closers(j);
                if (j - i > 1 || c != '.') && q < e && p[q] == ' ' {
                    push(q);
                }
                i = q;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    cuts
}

/// Where `p[s..e]` may be cut between grapheme clusters, approximately: not before a mark that
/// extends the cluster before it, not after a zero-width joiner, not inside a regional-indicator
/// pair (a flag).
fn cluster_cuts(p: &[char], s: usize, e: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut indicators_before = usize::from(is_regional_indicator(p[s])); // the run of them just before i
    for i in s + 1..e {
        let inside_flag = is_regional_indicator(p[i]) && indicators_before % 2 == 1;
        if !(extends_cluster(p[i]) || p[i - 1] == '\u{200d}' || inside_flag) {
            cuts.push(i);
        }
        indicators_before = if is_regional_indicator(p[i]) { indicators_before + 1 } else { 0 };
    }
    cuts
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1f1e6}'..='\u{1f1ff}').contains(&c)
}

/// Characters that attach to the one before them: combining marks of the common blocks (Latin,
/// Greek, Cyrillic, Hebrew, Arabic, the Brahmic scripts from Devanagari to Malayalam, Thai, Lao,
/// Japanese voicing marks), joiners, variation selectors, emoji skin-tone modifiers and tags.
fn extends_cluster(c: char) -> bool {
    let u = c as u32;
    if (0x0900..0x0D80).contains(&u) {
        // the Brahmic blocks share ISCII's layout: vowel signs, virama and nukta at these offsets
        let o = u & 0x7f;
        return matches!(o, 0x00..=0x03 | 0x3a..=0x3c | 0x3e..=0x4f | 0x51..=0x57 | 0x62..=0x63);
    }
    matches!(
        u,
        0x0300..=0x036f
            | 0x0483..=0x0489
            | 0x0591..=0x05bd
            | 0x05bf
            | 0x05c1..=0x05c2
            | 0x05c4..=0x05c5
            | 0x05c7
            | 0x0610..=0x061a
            | 0x064b..=0x065f
            | 0x0670
            | 0x06d6..=0x06dc
            | 0x06df..=0x06e4
            | 0x06e7..=0x06e8
            | 0x06ea..=0x06ed
            | 0x0e31
            | 0x0e34..=0x0e3a
            | 0x0e47..=0x0e4e
            | 0x0eb1
            | 0x0eb4..=0x0ebc
            | 0x0ec8..=0x0ecd
            | 0x1ab0..=0x1aff
            | 0x1dc0..=0x1dff
            | 0x200c..=0x200d
            | 0x20d0..=0x20ff
            | 0x302a..=0x302f
            | 0x3099..=0x309a
            | 0xfe00..=0xfe0f
            | 0xfe20..=0xfe2f
            | 0x1f3fb..=0x1f3ff
            | 0xe0020..=0xe007f
            | 0xe0100..=0xe01ef
    )
}

#[cfg(test)]
mod tests {
    use super::Pause::{Clause as C, Paragraph as P, Sentence as S, Word as W};
    use super::*;

    use crate::test_rng::Rng;

    fn split(text: &str, max: usize) -> Vec<(String, Pause)> {
        split_text(text, max).into_iter().map(|s| (s.text, s.pause_after)).collect()
    }

    /// An input, its `max_chars` and the segments expected, with their pauses.
    type Case = (&'static str, usize, &'static [(&'static str, Pause)]);

    /// The splitting cases. A small budget makes the cuts visible: a sentence end that must not be
    /// one shows as a [`Pause::Word`] cut where a wrong split would give [`Pause::Sentence`].
    const CASES: &[Case] = &[
        // sentence ends and packing
        ("Hello world.", 300, &[("Hello world.", P)]),
        ("One. Two. Three.", 6, &[("One.", S), ("Two.", S), ("Three.", P)]),
        ("One. Two. Three.", 9, &[("One. Two.", S), ("Three.", P)]),
        ("Stop! Go? Yes.", 5, &[("Stop!", S), ("Go?", S), ("Yes.", P)]),
        ("Really?! No way.", 8, &[("Really?!", S), ("No way.", P)]),
        ("Hi!!! Ok.", 5, &[("Hi!!!", S), ("Ok.", P)]),
        // quotes and brackets after the mark
        ("He said \"Stop.\" Then he left.", 16, &[("He said \"Stop.\"", S), ("Then he left.", P)]),
        ("She asked “Why?” Nobody knew.", 16, &[("She asked “Why?”", S), ("Nobody knew.", P)]),
        ("It ended (finally.) We went home.", 19, &[("It ended (finally.)", S), ("We went home.", P)]),
        ("«Bonjour.» Il est parti.", 13, &[("«Bonjour.»", S), ("Il est parti.", P)]),
        ("¿Qué pasa? ¡Nada!", 10, &[("¿Qué pasa?", S), ("¡Nada!", P)]),
        ("Hi. “Is it?” she asked.", 9, &[("Hi.", S), ("“Is it?”", C), ("she", W), ("asked.", P)]),
        ("Quoi\u{a0}? Non.", 6, &[("Quoi ?", S), ("Non.", P)]),
        // CJK
        ("你好。我很好！你呢？", 4, &[("你好。", S), ("我很好！", S), ("你呢？", P)]),
        ("你好。我很好！你呢？", 7, &[("你好。我很好！", S), ("你呢？", P)]),
        ("我们走吧，好不好，快点。", 5, &[("我们走吧，", C), ("好不好，", C), ("快点。", P)]),
        ("一二三四五六七", 3, &[("一二三", W), ("四五六", W), ("七", P)]),
        // abbreviations: titles, companies, Latin, times, numbers
        ("Ask Dr. Who.", 7, &[("Ask Dr.", W), ("Who.", P)]),
        ("Ask Mr. Li.", 7, &[("Ask Mr.", W), ("Li.", P)]),
        ("See Mrs. Lee.", 8, &[("See Mrs.", W), ("Lee.", P)]),
        ("Hi Ms. Kay.", 6, &[("Hi Ms.", W), ("Kay.", P)]),
        ("Ask Prof. Ng.", 9, &[("Ask Prof.", W), ("Ng.", P)]),
        ("Go to St. Ives.", 9, &[("Go to St.", W), ("Ives.", P)]),
        ("Sam Jr. Won.", 7, &[("Sam Jr.", W), ("Won.", P)]),
        ("Bob Sr. Sang.", 7, &[("Bob Sr.", W), ("Sang.", P)]),
        ("Climb Mt. Fuji.", 9, &[("Climb Mt.", W), ("Fuji.", P)]),
        ("Cats vs. Dogs.", 8, &[("Cats vs.", W), ("Dogs.", P)]),
        ("Milk etc. Then stop.", 9, &[("Milk etc.", W), ("Then", W), ("stop.", P)]),
        ("Use e.g. Rust.", 8, &[("Use e.g.", W), ("Rust.", P)]),
        ("Say i.e. Yes.", 8, &[("Say i.e.", W), ("Yes.", P)]),
        ("Room No. 5 here.", 8, &[("Room No.", W), ("5 here.", P)]),
        ("Say No. Then go.", 7, &[("Say No.", S), ("Then", W), ("go.", P)]),
        ("Said no. Then left.", 8, &[("Said no.", S), ("Then", W), ("left.", P)]),
        ("See Fig. 2 now.", 8, &[("See Fig.", W), ("2 now.", P)]),
        ("Is approx. Ten.", 10, &[("Is approx.", W), ("Ten.", P)]),
        ("The U.S. Army won.", 8, &[("The U.S.", W), ("Army", W), ("won.", P)]),
        ("At 5 a.m. Bob ran.", 8, &[("At 5", W), ("a.m. Bob", W), ("ran.", P)]),
        ("Until 9 p.m. Ann ate.", 9, &[("Until 9", W), ("p.m. Ann", W), ("ate.", P)]),
        ("Acme Inc. Makes toys.", 9, &[("Acme Inc.", W), ("Makes", W), ("toys.", P)]),
        ("Acme Ltd. Is big.", 9, &[("Acme Ltd.", W), ("Is big.", P)]),
        ("Acme Co. Is big.", 8, &[("Acme Co.", W), ("Is big.", P)]),
        ("DR. SMITH CAME.", 9, &[("DR. SMITH", W), ("CAME.", P)]),
        ("Eggs ETC. Are here.", 9, &[("Eggs ETC.", W), ("Are here.", P)]),
        // initials
        ("By J. R. R. Tolkien.", 8, &[("By J. R.", W), ("R.", W), ("Tolkien.", P)]),
        // numbers, versions, addresses, names with dots
        ("Pi is 3.14. Yes.", 11, &[("Pi is 3.14.", S), ("Yes.", P)]),
        ("Pay 1,000.50 now, or else.", 12, &[("Pay 1,000.50", W), ("now,", C), ("or else.", P)]),
        ("Use v2.0 now. Ok.", 13, &[("Use v2.0 now.", S), ("Ok.", P)]),
        ("Ping 192.168.0.1 now. Done.", 21, &[("Ping 192.168.0.1 now.", S), ("Done.", P)]),
        ("Visit example.com today. Go.", 24, &[("Visit example.com today.", S), ("Go.", P)]),
        ("Go to https://example.com/a?b=1. Now.", 32, &[("Go to https://example.com/a?b=1.", S), ("Now.", P)]),
        ("Mail a.b@c.org. Thanks.", 15, &[("Mail a.b@c.org.", S), ("Thanks.", P)]),
        ("Open file.txt. Then save.", 14, &[("Open file.txt.", S), ("Then save.", P)]),
        // ellipses before lowercase and uppercase
        ("Well... maybe so.", 7, &[("Well...", C), ("maybe", W), ("so.", P)]),
        ("Well... Maybe so.", 9, &[("Well...", S), ("Maybe so.", P)]),
        ("Well… maybe so.", 5, &[("Well…", C), ("maybe", W), ("so.", P)]),
        ("Well… Maybe.", 7, &[("Well…", S), ("Maybe.", P)]),
        ("... And then. Done.", 13, &[("... And then.", S), ("Done.", P)]),
        // paragraphs
        ("One.\n\nTwo.", 300, &[("One.", P), ("Two.", P)]),
        ("A b.\n  \t\nC d.\nE f.", 300, &[("A b.", P), ("C d. E f.", P)]),
        ("One.\r\n\r\nTwo.\r\nThree.", 300, &[("One.", P), ("Two. Three.", P)]),
        ("Chapter 1\n\nIt began.", 300, &[("Chapter 1", P), ("It began.", P)]),
        ("Page one.\u{c}Page two.", 300, &[("Page one.", P), ("Page two.", P)]),
        // a long sentence cut at clauses
        (
            "First part, second part; third part: fourth part.",
            20,
            &[("First part,", C), ("second part;", C), ("third part:", C), ("fourth part.", P)],
        ),
        ("He ran—fast—and won the race today.", 12, &[("He ran—fast—", C), ("and won the", W), ("race today.", P)]),
        ("Years 1990–2000 were good – really.", 20, &[("Years 1990–2000 were", W), ("good – really.", P)]),
        ("Go now - run fast - ok then.", 12, &[("Go now -", C), ("run fast -", C), ("ok then.", P)]),
        (
            "Short one. This is a much longer sentence here. Ok.",
            15,
            &[("Short one.", S), ("This is a much", W), ("longer sentence", W), ("here. Ok.", P)],
        ),
        // a long clause cut at words, a long word between clusters
        ("aaa bbb ccc ddd eee.", 7, &[("aaa bbb", W), ("ccc ddd", W), ("eee.", P)]),
        ("abcdefghij", 4, &[("abcd", W), ("efgh", W), ("ij", P)]),
        ("e\u{301}e\u{301}e\u{301}", 3, &[("e\u{301}", W), ("e\u{301}", W), ("e\u{301}", P)]),
        ("🇫🇷🇩🇪", 3, &[("🇫🇷", W), ("🇩🇪", P)]),
        ("e\u{301}\u{302}x", 2, &[("e\u{301}", W), ("\u{302}x", P)]),
        // the budget's edge
        ("Hello there. Bye now.", 21, &[("Hello there. Bye now.", P)]),
        ("Hello there. Bye now.", 20, &[("Hello there.", S), ("Bye now.", P)]),
        ("abcde", 5, &[("abcde", P)]),
        ("abcde", 4, &[("abcd", W), ("e", P)]),
        ("ab", 0, &[("a", W), ("b", P)]),
        // whitespace
        ("  \n Hello. \t ", 300, &[("Hello.", P)]),
        ("Hello\tthere,\nfriend.  Bye.", 300, &[("Hello there, friend. Bye.", P)]),
        ("", 300, &[]),
        (" \n\t\r\n \u{a0}", 300, &[]),
        ("* * *", 300, &[("* * *", P)]),
    ];

    #[test]
    fn splits_as_the_table_says() {
        assert!(CASES.len() >= 40, "{} cases", CASES.len());
        let mut failures = Vec::new();
        for &(input, max, expected) in CASES {
            let got = split(input, max);
            let want: Vec<(String, Pause)> = expected.iter().map(|&(t, p)| (t.to_string(), p)).collect();
            if got != want {
                failures.push(format!("{input:?} at {max}:\n   got  {got:?}\n   want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), CASES.len(), failures.join("\n"));
        for &(input, max, _) in CASES {
            if let Err(e) = check_invariants(input, max, &split_text(input, max)) {
                panic!("{input:?} at {max}: {e}");
            }
        }
    }

    fn non_space(text: &str) -> String {
        text.chars().filter(|&c| !(c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))).collect()
    }

    /// What every split must satisfy, whatever the text.
    fn check_invariants(text: &str, max: usize, segments: &[Segment]) -> Result<(), String> {
        let max = max.max(1);
        for (n, s) in segments.iter().enumerate() {
            let len = s.text.chars().count();
            if len == 0 || len > max {
                return Err(format!("segment {n} has {len} chars (max {max}): {:?}", s.text));
            }
            if s.text.starts_with(' ') || s.text.ends_with(' ') || s.text.contains("  ") {
                return Err(format!("segment {n} is not trimmed and collapsed: {:?}", s.text));
            }
            if s.text.chars().any(|c| c != ' ' && non_space(&c.to_string()).is_empty()) {
                return Err(format!("segment {n} has whitespace other than ' ': {:?}", s.text));
            }
            let last = s.text.chars().last().unwrap_or(' ');
            let ends_at_mark = is_terminator(last) || is_closer(last);
            if s.pause_after == Pause::Sentence && !ends_at_mark {
                return Err(format!("segment {n} ends a sentence without a mark: {:?}", s.text));
            }
            if s.pause_after == Pause::Clause && !(ends_at_mark || ",;:，、；：—―–-".contains(last)) {
                return Err(format!("segment {n} ends a clause without a mark: {:?}", s.text));
            }
        }
        if let Some(last) = segments.last()
            && last.pause_after != Pause::Paragraph
        {
            return Err(format!("the last segment is followed by {:?}", last.pause_after));
        }
        let joined: String = segments.iter().map(|s| non_space(&s.text)).collect();
        if joined != non_space(text) {
            return Err(format!("the non-whitespace characters differ:\n  in  {:?}\n  out {joined:?}", non_space(text)));
        }
        Ok(())
    }

    /// The paragraphs of a text of `\n`, `\r\n` and other whitespace, counted a second way: groups
    /// of lines that are not blank. Their non-whitespace characters.
    fn paragraphs_by_lines(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in text.replace("\r\n", "\n").split('\n') {
            let line = non_space(line);
            if line.is_empty() {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            } else {
                current.push_str(&line);
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }

    /// Pieces the random texts are made of: every kind of mark the rules handle, and some they do
    /// not expect.
    const PIECES: &[&str] = &[
        "the",
        "cat",
        "sat",
        "Hello",
        "world",
        "It",
        "was",
        "naïve",
        "Zoë",
        "Dr.",
        "Mr.",
        "Mrs.",
        "etc.",
        "e.g.",
        "i.e.",
        "U.S.",
        "a.m.",
        "p.m.",
        "Inc.",
        "No.",
        "no.",
        "Fig.",
        "vs.",
        "J.",
        "R.",
        "3.14",
        "1,000.50",
        "v2.0",
        "192.168.0.1",
        "5",
        "example.com",
        "a.b@c.org",
        "file.txt",
        "https://x.org/a?b=1",
        "Well...",
        "so…",
        "“Why?”",
        "«Oui.»",
        "(yes.)",
        "¿Qué?",
        "¡Sí!",
        "\"Stop.\"",
        "'quote'",
        "你好。",
        "我很好，",
        "好吗？",
        "「はい。」",
        "e\u{301}",
        "🇫🇷🇩🇪",
        "👍🏽",
        "👨\u{200d}👩\u{200d}👧",
        "—",
        "–",
        "-",
        ",",
        ";",
        ":",
        "...",
        "?!",
        "!",
        "?",
        ".",
        "。",
        "supercalifragilisticexpialidocious",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ok,",
        "end.",
        "yes!",
        "x",
        "*",
        "न\u{93f}",
        "ก\u{e34}",
        "1990–2000",
        "well—",
        "\u{1f}",
    ];

    const SEPARATORS: &[&str] =
        &[" ", " ", " ", " ", " ", "", "", "\t", "\n", "\n\n", " \n \t\n ", "\r\n", "\r\n\r\n", "\u{a0}", "\u{3000}", "  "];

    fn random_text(rng: &mut Rng, pieces: usize) -> String {
        let mut text = String::new();
        if rng.below(4) == 0 {
            text.push_str(rng.pick(SEPARATORS));
        }
        for _ in 0..pieces {
            text.push_str(rng.pick(PIECES));
            text.push_str(rng.pick(SEPARATORS));
        }
        text
    }

    #[test]
    fn random_texts_keep_every_guarantee() {
        let (mut rng, seed) = Rng::fresh();
        for round in 0..3000 {
            let pieces = rng.below(120);
            let text = random_text(&mut rng, pieces);
            let max = if rng.below(4) == 0 { DEFAULT_MAX_CHARS } else { rng.below(41) };
            let segments = split_text(&text, max);
            if let Err(e) = check_invariants(&text, max, &segments) {
                panic!("seed {seed}, round {round}, max {max}, text {text:?}: {e}");
            }
            // the segments up to each paragraph pause hold exactly one paragraph
            let mut got = Vec::new();
            let mut current = String::new();
            for s in &segments {
                current.push_str(&non_space(&s.text));
                if s.pause_after == Pause::Paragraph {
                    got.push(std::mem::take(&mut current));
                }
            }
            assert_eq!(got, paragraphs_by_lines(&text), "seed {seed}, round {round}, max {max}, text {text:?}");
        }
    }

    /// A 20,000-character chapter of ordinary prose with the marks of the table.
    fn chapter(rng: &mut Rng, chars: usize) -> String {
        const SENTENCES: &[&str] = &[
            "It was a bright cold day in April, and the clocks were striking thirteen.",
            "Dr. Watson met Mr. Holmes at 221B Baker St. on a foggy morning.",
            "\"Are you coming?\" she asked. \"Not yet,\" he said, \"but soon.\"",
            "The U.S. economy grew 3.5% in Q2, i.e. faster than expected.",
            "Version 2.0.1 ships at 9 a.m. on Jan. 5, see Fig. 3 and No. 12.",
            "Well... maybe tomorrow. Or the day after!",
            "J. R. R. Tolkien wrote about hobbits, elves, dwarves, etc. for decades.",
            "Visit https://example.com/books?id=42 or write to books@example.org.",
            "She paused—just for a moment—then went on; nobody noticed: not even him.",
            "What?! You sold it for $1,000.50?",
            "«Oui», dit-il. ¿Por qué? ¡Porque sí!",
            "他说：“你好。”然后走了。",
            "In the beginning there was nothing at all, and from that nothing, over a span of time that no one could count and no instrument could measure, there came, slowly, and then all at once, the first faint stirring of a world that would one day hold rivers and mountains and cities and the people who would name them all, one by one, without ever quite finishing.",
        ];
        let mut text = String::new();
        while text.chars().count() < chars {
            for _ in 0..1 + rng.below(6) {
                text.push_str(rng.pick(SENTENCES));
                text.push(' ');
            }
            text.push_str(if rng.below(3) == 0 { "\n" } else { "\n\n" });
        }
        text
    }

    #[test]
    fn a_chapter_splits_fast_within_budget_and_in_order() {
        let (mut rng, seed) = Rng::fresh();
        let text = chapter(&mut rng, 20_000);
        let mut best = std::time::Duration::MAX;
        let mut segments = Vec::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            segments = split_text(&text, DEFAULT_MAX_CHARS);
            best = best.min(t.elapsed());
        }
        if let Err(e) = check_invariants(&text, DEFAULT_MAX_CHARS, &segments) {
            panic!("seed {seed}: {e}");
        }
        let chars: usize = segments.iter().map(|s| s.text.chars().count()).sum();
        let mean = chars as f64 / segments.len() as f64;
        println!(
            "{} chars → {} segments (mean {mean:.0} chars, longest {}) in {:.2} ms",
            text.chars().count(),
            segments.len(),
            segments.iter().map(|s| s.text.chars().count()).max().unwrap_or(0),
            best.as_secs_f64() * 1e3
        );
        assert!(best.as_millis() < 50, "seed {seed}: split in {best:?}");
        // greedy packing: a segment cut at a sentence end inside a paragraph could not take the next
        // sentence (unless that one is too long by itself: then its first piece ends at a clause or word)
        for w in segments.windows(2) {
            if w[0].pause_after == Pause::Sentence && w[1].pause_after >= Pause::Sentence {
                let next_sentence = sentences(&w[1].text.chars().collect::<Vec<_>>())[0];
                assert!(
                    w[0].text.chars().count() + 1 + next_sentence.1 - next_sentence.0 > DEFAULT_MAX_CHARS,
                    "seed {seed}: {:?} and {:?} could have been packed",
                    w[0].text,
                    w[1].text
                );
            }
        }
    }

    #[test]
    fn pathological_texts_stay_fast() {
        let flags: String = std::iter::repeat_n("🇫🇷", 10_000).collect();
        let cases = [
            ". ".repeat(10_000),
            "a".repeat(20_000),
            "a.".repeat(10_000),
            "Dr. ".repeat(5_000),
            "e\u{301}".repeat(10_000),
            flags,
        ];
        for text in &cases {
            for max in [1, 7, DEFAULT_MAX_CHARS] {
                let t = std::time::Instant::now();
                let segments = split_text(text, max);
                let took = t.elapsed();
                check_invariants(text, max, &segments).unwrap();
                assert!(took.as_millis() < 200, "{:?}… at {max}: {took:?}", &text[..8]);
            }
        }
    }

    #[test]
    fn every_abbreviation_keeps_its_sentence() {
        for &(entry, case) in ABBREVIATIONS {
            assert!(!entry.is_empty() && !entry.ends_with('.'), "{entry:?}");
            // (the word, the next word, whether the sentence must go on)
            let mut tries = vec![(entry.to_string(), "5 more.", true), (entry.to_uppercase(), "5 more.", true)];
            match case {
                AbbrevCase::Any => tries.push((entry.to_string(), "Next one.", true)),
                AbbrevCase::Capitalized => {
                    tries.push((entry.to_string(), "Next one.", true));
                    tries.push((entry.to_uppercase(), "Next one.", true));
                    tries.push((entry.to_lowercase(), "Next one.", is_letter_chain(&entry.chars().collect::<Vec<_>>())));
                }
                AbbrevCase::BeforeNumber => {
                    tries.push((entry.to_lowercase(), "5 more.", true));
                    tries.push((entry.to_string(), "Next one.", false));
                }
            }
            for (word, next, goes_on) in tries {
                let head = format!("Ab {word}.");
                let got = split_text(&format!("{head} {next}"), head.chars().count());
                let want = if goes_on { Pause::Word } else { Pause::Sentence };
                assert_eq!(
                    (got[0].text.as_str(), got[0].pause_after),
                    (head.as_str(), want),
                    "{entry:?} as {word:?} before {next:?}"
                );
            }
        }
    }

    #[test]
    fn pauses_grow_from_word_to_paragraph() {
        let all = [Pause::Word, Pause::Clause, Pause::Sentence, Pause::Paragraph];
        assert_eq!(Pause::Word.seconds(), 0.0);
        for w in all.windows(2) {
            assert!(w[0] < w[1] && w[0].seconds() < w[1].seconds(), "{w:?}");
        }
        assert!(Pause::Paragraph.seconds() <= 1.0);
    }

    #[test]
    fn only_text_with_letters_or_digits_is_speakable() {
        let speakable: Vec<bool> =
            split_text("* * *\n\nChapter 2\n\n— … —\n\n42", 300).iter().map(Segment::is_speakable).collect();
        assert_eq!(speakable, [false, true, false, true]);
    }
}
