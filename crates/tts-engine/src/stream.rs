//! Streaming: audio chunks synthesised from windows of speech tokens while T3 is still decoding,
//! so that the first words play long before the utterance is finished.
//!
//! The approach of the chatterbox-streaming fork, with the joins made exact where they can be:
//! - T3 decodes the request's segments (continuous batching, as [`Engine::synthesize`]); the stream
//!   follows the first unfinished segment and reads its tokens as they come
//!   ([`tts_t3::Generator::tokens_so_far`]).
//! - A chunk is emitted once the segment has `size + lookahead` tokens past what was emitted: the
//!   first chunk is small ([`StreamOptions::first_chunk_tokens`]) for a fast start, each later one
//!   twice the last, up to [`StreamOptions::max_chunk_tokens`].
//! - S3Gen synthesises the chunk's tokens with up to [`StreamOptions::context_tokens`] earlier tokens
//!   before them (left context for the flow's encoder and the vocoder, cut from the output) and
//!   `lookahead` tokens after them (the flow looks ahead; the audio of those tokens is held back,
//!   not emitted, and the next chunk, which has them with their right context, crossfades from it
//!   over [`StreamOptions::crossfade_tokens`]).
//! - Each chunk draws exactly the noise the whole utterance would draw at its frames and samples
//!   ([`tts_s3gen::noise::cfm_noise`], [`tts_s3gen::noise::source_noise`]) and the same NSF
//!   phases, so a streamed utterance differs from the one-shot one only by the context each chunk
//!   saw.
//! - Between segments: the same pause and fades as [`Engine::synthesize`] ([`crate::join`]).
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tts_s3gen::{FlowRequest, MEL_FRAMES_PER_TOKEN, SAMPLES_PER_MEL_FRAME};
use tts_t3::Generator;

use crate::speak::Engine;
use crate::synthesize::{PreparedSegment, Request, Row, SILENT_SEGMENT_REDRAWS, segment_seed};
use crate::voice::Conditionals;
use crate::{Error, Result};

/// Output samples per speech token (2 mel frames of 480 samples at 24 kHz: 40 ms).
pub const SAMPLES_PER_TOKEN: usize = MEL_FRAMES_PER_TOKEN * SAMPLES_PER_MEL_FRAME;

/// How a stream cuts its chunks (in speech tokens, 25 per second of audio).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOptions {
    /// Tokens of the first chunk of each segment (10: 0.4 s of audio).
    pub first_chunk_tokens: usize,
    /// The largest chunk (100: 4 s).
    pub max_chunk_tokens: usize,
    /// Earlier tokens each chunk is synthesised with, not emitted (50: 2 s; at least 1: S3Gen
    /// fades a window's first 40 ms in).
    pub context_tokens: usize,
    /// Tokens after a chunk synthesised with it and held back (the flow's encoder looks 3 tokens
    /// ahead: 4).
    pub lookahead_tokens: usize,
    /// The crossfade between the held-back audio and the next chunk, in tokens (at most
    /// `lookahead_tokens`; 2: 80 ms).
    pub crossfade_tokens: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            first_chunk_tokens: 10,
            max_chunk_tokens: 100,
            context_tokens: 50,
            lookahead_tokens: 4,
            crossfade_tokens: 2,
        }
    }
}

impl StreamOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, value: usize, expected: String| {
            Err(Error::Setting { field, value: value.to_string(), expected })
        };
        if self.first_chunk_tokens == 0 {
            return bad("first_chunk_tokens", 0, "at least 1".into());
        }
        if self.max_chunk_tokens < self.first_chunk_tokens {
            return bad(
                "max_chunk_tokens",
                self.max_chunk_tokens,
                format!("at least first_chunk_tokens ({})", self.first_chunk_tokens),
            );
        }
        if self.crossfade_tokens > self.lookahead_tokens {
            return bad(
                "crossfade_tokens",
                self.crossfade_tokens,
                format!("at most lookahead_tokens ({})", self.lookahead_tokens),
            );
        }
        // S3Gen fades the first 40 ms of what it synthesises in (the utterance's start): a later
        // chunk must have that in its context, cut
        if self.context_tokens == 0 {
            return bad("context_tokens", 0, "at least 1 (S3Gen fades the first token of a window in)".into());
        }
        Ok(())
    }
}

/// A piece of a request's audio, in order: mono samples at 24 kHz.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioChunk {
    pub samples: Vec<f32>,
    /// The segment of the request's text it belongs to.
    pub segment: usize,
    /// The speech tokens `[start, end)` of the segment whose audio it holds (the pause after a
    /// segment comes with the segment's last chunk).
    pub tokens: std::ops::Range<usize>,
    /// The last chunk of the request.
    pub is_last: bool,
}

/// Where one segment's stream stands.
#[derive(Default)]
struct SegmentState {
    /// Its id in the generator, once added.
    id: Option<usize>,
    /// Its tokens once T3 finished it (flow-vocabulary tokens only).
    finished: Option<Vec<u32>>,
    /// Tokens emitted so far.
    emitted: usize,
    /// Chunks emitted so far.
    chunks: usize,
    /// The held-back audio after `emitted` (the previous chunk's lookahead).
    tail: Vec<f32>,
    /// Times the segment was drawn again because T3 ended it before any speech token (as
    /// [`Engine::synthesize`] does: [`crate::synthesize::redraw_seed`]).
    redraws: u32,
}

/// The chunks of one request, produced as they are pulled ([`Iterator::next`] runs T3 decode
/// steps and S3Gen until the next chunk is ready). Errors end the stream.
pub struct SpeechStream<'e> {
    engine: &'e Engine,
    voice: Arc<Conditionals>,
    request: Request,
    segments: Vec<PreparedSegment>,
    state: Vec<SegmentState>,
    generator: Generator<'e>,
    reqs: Vec<tts_t3::Request>,
    /// Segments not yet added to the generator.
    queue: VecDeque<usize>,
    ids: HashMap<usize, usize>,
    /// The segment being streamed.
    current: usize,
    opts: StreamOptions,
    failed: bool,
    /// The end of the previous segment when no pause follows it (and its fade-out gains): mixed
    /// into the next segment's start.
    carry: Option<(Vec<f32>, Vec<f32>)>,
}

impl Engine {
    /// Streams a request's audio ([`SpeechStream`]); its text, voice and settings are checked
    /// before anything runs.
    pub fn synthesize_stream(&self, request: Request, opts: StreamOptions) -> Result<SpeechStream<'_>> {
        opts.validate()?;
        let prepared = self.prepare(0, &request)?;
        let cfg = self.t3.config();
        let reqs: Vec<tts_t3::Request> = prepared
            .segments
            .iter()
            .enumerate()
            .map(|(j, s)| {
                Row {
                    index: 0,
                    segment: j,
                    tokens: &s.tokens,
                    voice: &prepared.voice,
                    options: &request.options,
                    seed: segment_seed(request.options.seed, j, 0),
                }
                .t3_request()
            })
            .collect();
        let longest = prepared.segments.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
        let new_cap = request.options.max_new_tokens;
        let slots = prepared.segments.len().min(self.batching.max_batch);
        let generator = Generator::new(&self.t3, slots, cfg.kv_positions(longest, new_cap), new_cap)?;
        let n = prepared.segments.len();
        Ok(SpeechStream {
            engine: self,
            voice: prepared.voice,
            request,
            segments: prepared.segments,
            state: (0..n).map(|_| SegmentState::default()).collect(),
            generator,
            reqs,
            queue: (0..n).collect(),
            ids: HashMap::new(),
            current: 0,
            opts,
            failed: false,
            carry: None,
        })
    }
}

impl SpeechStream<'_> {
    /// Segments of the request's text.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The next chunk, running T3 and S3Gen as far as it needs.
    fn advance(&mut self) -> Result<Option<AudioChunk>> {
        loop {
            if self.current == self.segments.len() {
                return Ok(None);
            }
            // free slots take the next segments, in order
            while !self.queue.is_empty() && self.generator.has_free_slot() {
                let j = self.queue.pop_front().expect("not empty");
                let id = self.generator.add(&self.reqs[j])?;
                self.state[j].id = Some(id);
                self.ids.insert(id, j);
            }
            let vocab = self.engine.s3gen.config.flow_vocab_size as u32;
            for f in self.generator.poll()? {
                let j = self.ids[&f.id];
                self.state[j].finished = Some(f.tokens.into_iter().filter(|&t| t < vocab).collect());
            }
            let j = self.current;
            let (tokens, finished) = match &self.state[j].finished {
                Some(t) => (t.clone(), true),
                None => {
                    let Some(id) = self.state[j].id else {
                        // drawn again and queued while every slot held a later segment: the poll
                        // above may have freed one (the loop's start adds it); else decode until
                        // one frees
                        if !self.generator.has_free_slot() {
                            for _ in 0..self.engine.batching.poll_every.max(1) {
                                self.generator.step()?;
                            }
                        }
                        continue;
                    };
                    let so_far = self.generator.tokens_so_far(id)?.unwrap_or_default();
                    // the tokens the flow knows, as the one-shot path keeps them
                    (so_far.into_iter().filter(|&t| t < vocab).collect::<Vec<_>>(), false)
                }
            };
            let st = &self.state[j];
            let size = self.chunk_size(st.chunks);
            let need = st.emitted + size + self.opts.lookahead_tokens;
            if finished || tokens.len() >= need {
                if finished && tokens.is_empty() {
                    // nothing streamed yet (a segment with no tokens has emitted none): draw again
                    if self.state[j].emitted == 0 && self.state[j].redraws < SILENT_SEGMENT_REDRAWS {
                        self.state[j] = SegmentState { redraws: self.state[j].redraws + 1, ..SegmentState::default() };
                        self.reqs[j].settings.seed = self.seed(j);
                        self.queue.push_front(j);
                        continue;
                    }
                    return Err(Error::NoSpeechTokens { index: 0, segment: j });
                }
                // T3's final post-processing can drop tokens already streamed (a start-of-speech
                // token sampled mid-utterance drops what came before it): the segment then ends
                // where the stream is
                let end = if finished { tokens.len().max(st.emitted) } else { st.emitted + size };
                return self.emit(j, &tokens, end, finished).map(Some);
            }
            // decode until the chunk can be ready (one token per step), polling at least as often
            // as the engine does
            let steps = (need - tokens.len()).clamp(1, self.engine.batching.poll_every);
            for _ in 0..steps {
                self.generator.step()?;
            }
        }
    }

    /// The seed of segment `j` (its T3 draws and S3Gen noise): `seed + j`, or its redraw's.
    fn seed(&self, j: usize) -> u64 {
        segment_seed(self.request.options.seed, j, self.state[j].redraws)
    }

    /// Tokens of chunk `k` of a segment: the first size, doubled each chunk up to the largest.
    fn chunk_size(&self, k: usize) -> usize {
        let grown = self.opts.first_chunk_tokens.saturating_mul(1usize << k.min(20));
        grown.min(self.opts.max_chunk_tokens)
    }

    /// Synthesises and returns the chunk of segment `j` that ends at token `end` (the segment's
    /// last when `last`).
    fn emit(&mut self, j: usize, tokens: &[u32], end: usize, last: bool) -> Result<AudioChunk> {
        let o = &self.opts;
        let start = self.state[j].emitted;
        let mut out = if tokens.len() <= start {
            // nothing new (the final tokens are no longer than what was streamed): the held-back
            // audio ends the segment
            std::mem::take(&mut self.state[j].tail)
        } else {
            let from = start.saturating_sub(o.context_tokens);
            let until = if last { end } else { (end + o.lookahead_tokens).min(tokens.len()) };
            let wav = self.synthesize_window(j, tokens, from, until)?;
            let at = |t: usize| (t - from) * SAMPLES_PER_TOKEN;
            let mut out = wav[at(start)..at(end)].to_vec();
            // crossfade from the previous chunk's held-back audio (raised cosine, equal gain)
            let st = &mut self.state[j];
            let fade = st.tail.len().min(o.crossfade_tokens * SAMPLES_PER_TOKEN).min(out.len());
            for (i, s) in out.iter_mut().take(fade).enumerate() {
                let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / fade as f32).cos();
                *s = w * *s + (1.0 - w) * st.tail[i];
            }
            st.tail = if last { Vec::new() } else { wav[at(end)..].to_vec() };
            out
        };
        let st = &mut self.state[j];
        st.emitted = end;
        st.chunks += 1;
        let is_last_segment = j + 1 == self.segments.len();
        // the joins between segments, as crate::join makes them
        let rate = tts_s3gen::SAMPLE_RATE;
        let fade = crate::join::fade_samples(crate::join::DEFAULT_CROSSFADE_MS, rate);
        if start == 0 && j > 0 {
            if let Some((carry, g)) = self.carry.take() {
                // no pause: the previous segment's end overlaps this one's start
                let n = carry.len().min(out.len());
                let mut mixed = Vec::with_capacity(carry.len() + out.len() - n);
                mixed.extend((0..n).map(|i| carry[i] * g[i] + out[i] * (1.0 - g[i])));
                mixed.extend_from_slice(&carry[n..]);
                mixed.extend_from_slice(&out[n..]);
                out = mixed;
            } else {
                // after a pause: a fade-in
                let n = fade.min(out.len() / 2);
                for (i, s) in out.iter_mut().take(n).enumerate() {
                    *s *= 1.0 - crate::join::fade_out_gain(i, n);
                }
            }
        }
        if last {
            self.current += 1;
            if !is_last_segment {
                let seg_len = end * SAMPLES_PER_TOKEN;
                let n = fade.min(seg_len / 2).min(out.len());
                let pause = (self.segments[j].pause_after as f64 * rate as f64).round() as usize;
                if pause == 0 {
                    // held back, mixed into the next segment's start
                    let carry = out.split_off(out.len() - n);
                    let g = (0..n).map(|i| crate::join::fade_out_gain(i, n)).collect();
                    self.carry = Some((carry, g));
                } else {
                    let base = out.len() - n;
                    for (i, s) in out[base..].iter_mut().enumerate() {
                        *s *= crate::join::fade_out_gain(i, n);
                    }
                    out.resize(out.len() + pause, 0.0);
                }
            }
        }
        Ok(AudioChunk { samples: out, segment: j, tokens: start..end, is_last: last && is_last_segment })
    }

    /// S3Gen over tokens `[from, until)` of segment `j`, with the noise the whole segment draws
    /// there; the 24 kHz waveform of those tokens (960 samples each).
    fn synthesize_window(&self, j: usize, tokens: &[u32], from: usize, until: usize) -> Result<Vec<f32>> {
        let g = &self.voice.s3gen;
        let prompt = &g.prompt_token[..g.prompt_token_len.min(g.prompt_token.len())];
        let seed = self.seed(j);
        let prompt_frames = MEL_FRAMES_PER_TOKEN * prompt.len();
        let window = &tokens[from..until];
        let mut z = Vec::with_capacity(tts_s3gen::MEL_BINS * (prompt_frames + MEL_FRAMES_PER_TOKEN * window.len()));
        let (head, body) = (
            tts_s3gen::noise::cfm_noise(seed, 0..prompt_frames),
            tts_s3gen::noise::cfm_noise(
                seed,
                prompt_frames + MEL_FRAMES_PER_TOKEN * from..prompt_frames + MEL_FRAMES_PER_TOKEN * until,
            ),
        );
        // channel-major [80, prompt frames + window frames]
        let (p, w) = (prompt_frames, MEL_FRAMES_PER_TOKEN * window.len());
        for c in 0..tts_s3gen::MEL_BINS {
            z.extend_from_slice(&head[c * p..(c + 1) * p]);
            z.extend_from_slice(&body[c * w..(c + 1) * w]);
        }
        let source = tts_s3gen::noise::source_noise(seed, SAMPLES_PER_TOKEN * from..SAMPLES_PER_TOKEN * until);
        let req = tts_s3gen::Request {
            flow: FlowRequest {
                prompt_tokens: prompt,
                prompt_feat: &g.prompt_feat,
                embedding: &g.embedding,
                tokens: window,
                noise: Some(&z),
                seed,
            },
            source_phases: None,
            source_noise: Some(&source),
        };
        let wav = self.engine.s3gen.synthesize(&[req], self.request.options.cfm_steps)?.remove(0);
        if wav.len() != window.len() * SAMPLES_PER_TOKEN {
            return Err(Error::Internal(format!(
                "S3Gen gave {} samples for {} tokens, expected {}",
                wav.len(),
                window.len(),
                window.len() * SAMPLES_PER_TOKEN
            )));
        }
        Ok(wav)
    }
}

impl Iterator for SpeechStream<'_> {
    type Item = Result<AudioChunk>;

    fn next(&mut self) -> Option<Result<AudioChunk>> {
        if self.failed {
            return None;
        }
        match self.advance() {
            Ok(c) => c.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
