//! The engine's request API: [`Request`]s (a text of any length, a voice, the generation settings)
//! → [`Audio`], all in one batch.
//!
//! A text is split into segments ([`crate::segment`]: sentences packed up to the engine's character
//! budget, long sentences cut at clauses, then words); every segment of every request is one row of
//! the same T3 batch (continuous batching over at most [`BatchOptions::max_batch`] slots) and of the
//! S3Gen batches; a request's segments are then joined with their pauses and short fades
//! ([`crate::join`]). Each request keeps its own voice and settings inside the batch; its segment `j`
//! is seeded `seed + j`, so the same request gives the same audio alone or in any batch (on one
//! backend).
//!
//! One bad request does not fail the others: its text, voice and settings are checked first and
//! only the requests that pass are run. A failure of the batch itself (the backend) is retried
//! request by request, so that each request gets its own result.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tts_s3gen::FlowRequest;
use tts_t3::Generator;

use crate::speak::{Engine, SpeakOptions, SpeakTimings, Spoken};
use crate::voice::Conditionals;
use crate::{Error, Result};

/// Where a request's voice comes from.
#[derive(Clone, Debug, Default)]
pub enum Voice {
    /// The model's built-in voice (`conds.pt` of the model).
    #[default]
    Builtin,
    /// A file judged by its content: a reference recording (WAV, FLAC, MP3), a saved voice
    /// (`voice.safetensors`) or a `conds.pt`; read or computed once per content (the engine's
    /// voice cache).
    File(PathBuf),
    /// The bytes of such a file (an upload), with a name for errors.
    Bytes { bytes: Arc<[u8]>, name: String },
    /// A voice already computed.
    Ready(Arc<Conditionals>),
}

/// One thing to say: a text (any length: it is split into segments), a voice and the settings.
#[derive(Clone, Debug)]
pub struct Request {
    pub text: String,
    pub voice: Voice,
    pub options: SpeakOptions,
}

impl Request {
    /// `text` in the built-in voice with the default settings.
    pub fn new(text: impl Into<String>) -> Request {
        Request { text: text.into(), voice: Voice::Builtin, options: SpeakOptions::default() }
    }

    pub fn with_voice(mut self, voice: Voice) -> Request {
        self.voice = voice;
        self
    }

    pub fn with_options(mut self, options: SpeakOptions) -> Request {
        self.options = options;
        self
    }
}

/// How many times [`Engine::synthesize`] draws a segment again when T3 ends it before any speech
/// token.
pub const SILENT_SEGMENT_REDRAWS: u32 = 2;

/// The seed of redraw `attempt` of a segment first seeded `seed` (a fixed odd step away, so the
/// redraws of one segment never meet another segment's seed `seed + j` in practice).
pub fn redraw_seed(seed: u64, attempt: u32) -> u64 {
    seed.wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The seed of segment `segment` of a request seeded `seed` (its T3 draws and S3Gen noise), at draw
/// `attempt` (0: the first, `seed + segment`; then [`redraw_seed`]'s).
pub fn segment_seed(seed: u64, segment: usize, attempt: u32) -> u64 {
    redraw_seed(seed.wrapping_add(segment as u64), attempt)
}

/// The smallest character budget of a segment (a few words).
pub const MIN_SEGMENT_CHARS: usize = 16;

/// How the engine batches and splits (the same for every request).
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Requests (segments) T3 decodes at once; more wait for a free slot (continuous batching).
    /// Each takes two CFG rows of KV cache: about 660 MB for the full-size model at 1,000 new tokens
    /// in f32.
    pub max_batch: usize,
    /// Decode steps between two reads of the done flags.
    pub poll_every: usize,
    /// The character budget of a segment ([`crate::segment::DEFAULT_MAX_CHARS`]).
    pub max_segment_chars: usize,
    /// The longest text a request may have, in characters (200,000: about three and a half hours
    /// of speech).
    pub max_text_chars: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_batch: 8,
            poll_every: 8,
            max_segment_chars: crate::segment::DEFAULT_MAX_CHARS,
            max_text_chars: 200_000,
        }
    }
}

impl BatchOptions {
    /// Every field at least 1 (an [`Error::Setting`] names the one that is not).
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("max_batch", self.max_batch),
            ("poll_every", self.poll_every),
            ("max_segment_chars", self.max_segment_chars),
            ("max_text_chars", self.max_text_chars),
        ] {
            if v == 0 {
                return Err(Error::Setting { field, value: "0".into(), expected: "at least 1".into() });
            }
        }
        if self.max_segment_chars < MIN_SEGMENT_CHARS {
            return Err(Error::Setting {
                field: "max_segment_chars",
                value: self.max_segment_chars.to_string(),
                expected: format!("at least {MIN_SEGMENT_CHARS}"),
            });
        }
        Ok(())
    }
}

/// How far a batch is ([`Engine::synthesize_observed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// T3: of `rows` segments, `finished`; `steps` decode steps run, at most about `max_steps`
    /// per segment.
    T3 { rows: usize, finished: usize, steps: usize, max_steps: usize },
    /// S3Gen: `done` of `rows` segments.
    S3Gen { rows: usize, done: usize },
}

/// One segment of a request's audio.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    /// The segment's text, as split (before `punc_norm`).
    pub text: String,
    /// Its speech tokens (those S3Gen spoke).
    pub speech_tokens: Vec<u32>,
    /// Where its audio starts in [`Audio::samples`], and how many samples it has (the pause after it
    /// is not counted).
    pub start: usize,
    pub len: usize,
}

/// The audio of one request: mono samples in [−1, 1] at `sample_rate` (24 kHz).
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub segments: Vec<SegmentInfo>,
}

impl Audio {
    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// A request checked and split: its voice, and per segment the text, the T3 input tokens and the
/// pause after it (seconds).
pub(crate) struct Prepared {
    pub voice: Arc<Conditionals>,
    pub segments: Vec<PreparedSegment>,
}

pub(crate) struct PreparedSegment {
    pub text: String,
    pub tokens: Vec<u32>,
    pub pause_after: f32,
}

/// One row of a batch: a tokenised text (`[SOT] ids [EOT]`), its voice, settings and seed.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    /// The request and the segment of its text (for errors).
    pub index: usize,
    pub segment: usize,
    pub tokens: &'a [u32],
    pub voice: &'a Conditionals,
    pub options: &'a SpeakOptions,
    pub seed: u64,
}

impl Row<'_> {
    /// The row as T3 takes it: its text tokens, its voice's T3 half, its exaggeration and its
    /// sampler settings seeded with its seed.
    pub(crate) fn t3_request(&self) -> tts_t3::Request {
        tts_t3::Request {
            text_tokens: self.tokens.to_vec(),
            voice: tts_t3::Voice {
                speaker_emb: self.voice.t3.speaker_emb.clone(),
                prompt_tokens: self.voice.t3.cond_prompt_speech_tokens.clone(),
            },
            exaggeration: self.options.exaggeration,
            settings: self.options.sampler_settings(self.seed),
        }
    }
}

impl<'a> Row<'a> {
    /// The row as S3Gen takes it: `speech` (its T3 tokens, post-processed and within the flow's
    /// vocabulary) after its voice's prompt, its noise seeded with its seed.
    pub(crate) fn s3gen_request<'s>(&self, speech: &'s [u32]) -> tts_s3gen::Request<'s>
    where
        'a: 's,
    {
        let g = &self.voice.s3gen;
        tts_s3gen::Request {
            flow: FlowRequest {
                prompt_tokens: &g.prompt_token[..g.prompt_token_len.min(g.prompt_token.len())],
                prompt_feat: &g.prompt_feat,
                embedding: &g.embedding,
                tokens: speech,
                noise: None,
                seed: self.seed,
            },
            source_phases: None,
            source_noise: None,
        }
    }
}

/// The characters a text may not hold: C0 and C1 controls other than tab, line feed and carriage
/// return, and the Unicode non-characters.
fn bad_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c as u32, 0xFDD0..=0xFDEF) || (c as u32 & 0xFFFE) == 0xFFFE
}

/// Checks text `index` of a batch without a model: at most `max_chars` characters, no control
/// characters (tab, line feed and carriage return are whitespace), not empty or only whitespace,
/// and something to say (a letter or a digit; punctuation alone is not speech).
pub fn check_text(index: usize, text: &str, max_chars: usize) -> Result<()> {
    let text_err = |problem: String| Error::Text { index, problem };
    // a cheap bound before counting: every char is at most 4 bytes
    if text.len() > 4 * max_chars || text.chars().count() > max_chars {
        return Err(Error::TooLong { what: format!("text {index}: characters"), len: text.chars().count(), max: max_chars });
    }
    if let Some((at, c)) = text.chars().enumerate().find(|(_, c)| bad_char(*c)) {
        return Err(text_err(format!("a control character U+{:04X} at character {at}", c as u32)));
    }
    if text.trim().is_empty() {
        return Err(text_err("empty (or only whitespace)".into()));
    }
    if !text.chars().any(char::is_alphanumeric) {
        return Err(text_err("nothing to say: no letter or digit".into()));
    }
    Ok(())
}

impl Engine {
    /// Speaks every request, in one batch; one result per request, in order.
    pub fn synthesize(&self, requests: &[Request]) -> Vec<Result<Audio>> {
        self.synthesize_timed(requests).0
    }

    /// [`Engine::synthesize`], with where the time went (the whole batch).
    pub fn synthesize_timed(&self, requests: &[Request]) -> (Vec<Result<Audio>>, SpeakTimings) {
        self.synthesize_observed(requests, &mut |_| {})
    }

    /// [`Engine::synthesize_timed`], calling `observe` as the batch goes (progress bars).
    pub fn synthesize_observed(
        &self,
        requests: &[Request],
        observe: &mut dyn FnMut(Progress),
    ) -> (Vec<Result<Audio>>, SpeakTimings) {
        let mut results: Vec<Option<Result<Audio>>> = Vec::with_capacity(requests.len());
        let mut prepared: Vec<(usize, Prepared)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match self.prepare(i, r) {
                Ok(p) => {
                    prepared.push((i, p));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut timings = SpeakTimings::default();
        let mut run = |set: &[(usize, Prepared)], timings: &mut SpeakTimings| -> Result<Vec<Result<Audio>>> {
            let rows: Vec<Row<'_>> = set
                .iter()
                .flat_map(|(i, p)| {
                    p.segments.iter().enumerate().map(move |(j, s)| Row {
                        index: *i,
                        segment: j,
                        tokens: &s.tokens,
                        voice: &p.voice,
                        options: &requests[*i].options,
                        seed: segment_seed(requests[*i].options.seed, j, 0),
                    })
                })
                .collect();
            let (spoken, t) = self.run_rows_redrawing(&rows, observe)?;
            timings.t3_seconds += t.t3_seconds;
            timings.s3gen_seconds += t.s3gen_seconds;
            let mut spoken = spoken.into_iter();
            Ok(set.iter().map(|(_, p)| self.assemble(p, spoken.by_ref().take(p.segments.len()).collect())).collect())
        };
        if !prepared.is_empty() {
            match run(&prepared, &mut timings) {
                Ok(audios) => {
                    for ((i, _), a) in prepared.iter().zip(audios) {
                        results[*i] = Some(a);
                    }
                }
                // the batch failed as a whole: each request alone, so that each gets its own result
                Err(e) if prepared.len() == 1 => results[prepared[0].0] = Some(Err(e)),
                Err(_) => {
                    for one in prepared.chunks(1) {
                        let r = run(one, &mut timings).and_then(|mut a| a.remove(0));
                        results[one[0].0] = Some(r);
                    }
                }
            }
        }
        (results.into_iter().map(|r| r.expect("every request has a result")).collect(), timings)
    }

    /// The voice a request names (the built-in one, a file's, or one already computed), checked
    /// against the model.
    pub fn resolve_voice(&self, voice: &Voice) -> Result<Arc<Conditionals>> {
        let v = match voice {
            Voice::Builtin => Arc::new(self.voice.clone().ok_or(Error::NoVoice)?),
            Voice::File(path) => self.voice_from_file(path)?,
            Voice::Bytes { bytes, name } => self.voice_from_bytes(bytes, name)?.0,
            Voice::Ready(v) => {
                v.validate().map_err(|msg| Error::Voice { path: "(voice)".into(), msg })?;
                v.clone()
            }
        };
        self.check_voice(&v, "(voice)")?;
        Ok(v)
    }

    /// Checks a text (not empty, something to say, no control characters, within
    /// [`BatchOptions::max_text_chars`]) and splits it into segments, each tokenised for T3
    /// (`[SOT] ids [EOT]`).
    pub(crate) fn segment_text(&self, index: usize, text: &str) -> Result<Vec<PreparedSegment>> {
        check_text(index, text, self.batching.max_text_chars)?;
        let mut out = Vec::new();
        self.split_into(index, text, self.batching.max_segment_chars, &mut out)?;
        Ok(out)
    }

    /// Splits `text` with a budget of `max_chars` and tokenises each segment; a segment with more
    /// text tokens than T3 takes (the character budget is a guess at the token count: a model with
    /// a short text context, or text the tokenizer spells out character by character, can pass it)
    /// is split again with a budget in proportion, down to [`MIN_SEGMENT_CHARS`]. The last piece of
    /// a re-split segment keeps the segment's pause.
    fn split_into(&self, index: usize, text: &str, max_chars: usize, out: &mut Vec<PreparedSegment>) -> Result<()> {
        let max_tokens = self.t3.config().max_text_tokens.saturating_sub(2);
        for s in crate::segment::split_text(text, max_chars) {
            let pause_after = s.pause_after.seconds();
            if !s.is_speakable() {
                // punctuation or symbols alone (a `* * *` scene break): nothing to say, a pause
                if let Some(prev) = out.last_mut() {
                    prev.pause_after = (prev.pause_after + pause_after).min(crate::join::MAX_PAUSE_SECONDS);
                }
                continue;
            }
            match self.text_tokens_of(index, &s.text) {
                Ok(tokens) => out.push(PreparedSegment { pause_after, text: s.text, tokens }),
                Err(Error::TooLong { len, .. }) if max_chars > MIN_SEGMENT_CHARS => {
                    let chars = s.text.chars().count();
                    let budget = (chars * max_tokens / len.max(1)).clamp(MIN_SEGMENT_CHARS, max_chars - 1);
                    let before = out.len();
                    self.split_into(index, &s.text, budget, out)?;
                    if let Some(last) = out.get_mut(before..).and_then(|s| s.last_mut()) {
                        last.pause_after = pause_after;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A request checked against the model and split: settings, voice, text.
    pub(crate) fn prepare(&self, index: usize, r: &Request) -> Result<Prepared> {
        r.options.validate()?;
        let max = self.t3.config().max_speech_tokens;
        if r.options.max_new_tokens > max {
            return Err(Error::TooLong { what: "max_new_tokens".into(), len: r.options.max_new_tokens, max });
        }
        let segments = self.segment_text(index, &r.text)?;
        let voice = self.resolve_voice(&r.voice)?;
        Ok(Prepared { voice, segments })
    }

    /// A request's segments joined: their waveforms with the pauses between them.
    pub(crate) fn assemble(&self, p: &Prepared, spoken: Vec<Result<Spoken>>) -> Result<Audio> {
        let spoken = spoken.into_iter().collect::<Result<Vec<_>>>()?;
        let parts: Vec<(&[f32], f32)> = spoken.iter().zip(&p.segments).map(|(s, seg)| (&s.wav[..], seg.pause_after)).collect();
        let (samples, starts) = crate::join::join_with_starts(&parts, tts_s3gen::SAMPLE_RATE, crate::join::DEFAULT_CROSSFADE_MS)?;
        let segments = spoken
            .into_iter()
            .zip(&p.segments)
            .zip(starts)
            .map(|((s, seg), start)| SegmentInfo {
                text: seg.text.clone(),
                len: s.wav.len(),
                speech_tokens: s.speech_tokens,
                start,
            })
            .collect();
        Ok(Audio { samples, sample_rate: tts_s3gen::SAMPLE_RATE, segments })
    }

    /// [`Engine::run_rows`], then the rows T3 ended before any speech token (a sampled stop
    /// token first: the model's chance, not the input's) drawn again with another seed
    /// ([`redraw_seed`]), up to [`SILENT_SEGMENT_REDRAWS`] times, so that one such segment does not
    /// fail a whole chapter; a row still silent then fails its request ([`Error::NoSpeechTokens`]).
    /// Deterministic: the same request gives the same audio.
    fn run_rows_redrawing(
        &self,
        rows: &[Row<'_>],
        observe: &mut dyn FnMut(Progress),
    ) -> Result<(Vec<Result<Spoken>>, SpeakTimings)> {
        let (mut out, mut timings) = self.run_rows(rows, observe)?;
        for attempt in 1..=SILENT_SEGMENT_REDRAWS {
            let silent: Vec<usize> = (0..out.len()).filter(|&i| matches!(out[i], Err(Error::NoSpeechTokens { .. }))).collect();
            if silent.is_empty() {
                break;
            }
            let again: Vec<Row<'_>> =
                silent.iter().map(|&i| Row { seed: redraw_seed(rows[i].seed, attempt), ..rows[i] }).collect();
            let (redrawn, t) = self.run_rows(&again, observe)?;
            timings.t3_seconds += t.t3_seconds;
            timings.s3gen_seconds += t.s3gen_seconds;
            for (&i, r) in silent.iter().zip(redrawn) {
                out[i] = r;
            }
        }
        Ok((out, timings))
    }

    /// T3 then S3Gen over rows of any voices and settings: one T3 generator (continuous batching
    /// over at most `max_batch` slots), S3Gen in batches of at most `max_batch` rows of the same
    /// `cfm_steps`. A row whose T3 output has no speech token the flow knows fails alone
    /// ([`Error::NoSpeechTokens`]); an error of the backend fails the call.
    pub(crate) fn run_rows(
        &self,
        rows: &[Row<'_>],
        observe: &mut dyn FnMut(Progress),
    ) -> Result<(Vec<Result<Spoken>>, SpeakTimings)> {
        if rows.is_empty() {
            return Ok((Vec::new(), SpeakTimings::default()));
        }
        let cfg = self.t3.config();
        let t3_start = Instant::now();
        let reqs: Vec<tts_t3::Request> = rows.iter().map(Row::t3_request).collect();
        let longest = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        let new_cap = rows.iter().map(|r| r.options.max_new_tokens).max().unwrap_or(1);
        let max_len = cfg.kv_positions(longest, new_cap);
        let slots = rows.len().min(self.batching.max_batch);
        let mut generator = Generator::new(&self.t3, slots, max_len, new_cap)?;
        let rows_n = rows.len();
        let done = generator.run_observed(&reqs, self.batching.poll_every, &mut |p| {
            observe(Progress::T3 { rows: rows_n, finished: p.finished, steps: p.steps, max_steps: new_cap })
        })?; // in row order
        drop(generator); // its KV cache, before S3Gen's buffers
        let t3_seconds = t3_start.elapsed().as_secs_f64();
        // the reference keeps only tokens the flow knows (`speech_tokens < 6561`)
        let vocab = self.s3gen.config.flow_vocab_size as u32;
        let speech: Vec<Vec<u32>> = done.iter().map(|f| f.tokens.iter().copied().filter(|&t| t < vocab).collect()).collect();
        let mut wavs: Vec<Option<Vec<f32>>> = vec![None; rows.len()];
        let s3gen_start = Instant::now();
        let mut done_rows = rows.iter().zip(&speech).filter(|(_, s)| s.is_empty()).count();
        let mut steps: Vec<usize> = rows.iter().map(|r| r.options.cfm_steps).collect();
        steps.sort_unstable();
        steps.dedup();
        for n_steps in steps {
            let group: Vec<usize> =
                (0..rows.len()).filter(|&i| rows[i].options.cfm_steps == n_steps && !speech[i].is_empty()).collect();
            for chunk in group.chunks(self.batching.max_batch) {
                let reqs: Vec<tts_s3gen::Request<'_>> = chunk.iter().map(|&i| rows[i].s3gen_request(&speech[i])).collect();
                for (&i, w) in chunk.iter().zip(self.s3gen.synthesize(&reqs, n_steps)?) {
                    wavs[i] = Some(w);
                }
                done_rows += chunk.len();
                observe(Progress::S3Gen { rows: rows_n, done: done_rows });
            }
        }
        let timings = SpeakTimings { t3_seconds, s3gen_seconds: s3gen_start.elapsed().as_secs_f64() };
        let out = speech
            .into_iter()
            .zip(wavs)
            .zip(rows)
            .map(|((speech_tokens, wav), r)| match wav {
                Some(wav) => Ok(Spoken { speech_tokens, wav }),
                None => Err(Error::NoSpeechTokens { index: r.index, segment: r.segment }),
            })
            .collect();
        Ok((out, timings))
    }
}
