//! Slot-level continuous batching for a server: requests join a running T3 generator while others
//! decode, and S3Gen runs batched over the segments that are ready, whichever requests they belong
//! to.
//!
//! A [`Continuous`] session lives as long as its engine. [`Continuous::submit`] checks and splits a
//! request at once (a bad one is refused there, alone) and queues each of its segments as a row;
//! [`Continuous::step`] does one round of work and returns the requests it completed:
//! 1. queued rows take the generator's free slots (prefill and first draw, [`Generator::add`]);
//! 2. the generator decodes `poll_every` steps, then the host polls which rows finished;
//! 3. S3Gen runs over the rows T3 has finished, in batches of at most `max_batch` rows of one
//!    `cfm_steps`, when T3 is idle, when as many rows as half the slots are waiting, or when the
//!    oldest has waited [`S3GEN_MAX_WAIT_ROUNDS`] rounds;
//! 4. a request whose segments are all spoken is joined ([`crate::join`]) and returned.
//!
//! Each row keeps its request's voice, settings and seed (segment `j` seeded `seed + j`), and a
//! segment T3 ends before any speech token is queued again with its redraw's seed ([`segment_seed`]), as
//! [`Engine::synthesize`] does: a request gives the same tokens here as through
//! `Engine::synthesize` alone (T3's rows are batch-invariant), whatever else runs beside it.
//! [`Continuous::cancel`] drops a request's queued rows and frees its slots at once (the client has
//! gone).
//!
//! The generator is made when rows wait and none exists, with as many slots as rows wait (at least
//! the session's `min_slots`, so that later requests can join it; at most `max_batch`) rounded up to
//! a power of two, and positions for the longest waiting row (at least
//! [`TEXT_TOKENS_HEADROOM`] text tokens) and the largest `max_new_tokens`; it is dropped when it has
//! nothing to decode. A row that does not fit the running generator waits until it drains. (On the
//! Cpu a decode step costs in proportion to its slots, so the generator is not made larger than the
//! work at hand unless `min_slots` says so: a server sets it to its batch size.)
use std::collections::{HashMap, VecDeque};

use tts_t3::Generator;

use crate::speak::{Engine, Spoken};
use crate::synthesize::{Audio, Prepared, Request, Row, SILENT_SEGMENT_REDRAWS, segment_seed};
use crate::{Error, Result};

/// Text tokens a new generator leaves room for at least, so that later, longer segments can join it.
pub const TEXT_TOKENS_HEADROOM: usize = 128;
/// Rounds a T3-finished row waits at most for S3Gen while T3 keeps decoding.
pub const S3GEN_MAX_WAIT_ROUNDS: usize = 4;

/// The caller's handle for a request.
pub type Ticket = u64;

/// A request being spoken.
struct Pending {
    request: Request,
    prepared: Prepared,
    spoken: Vec<Option<Spoken>>,
    left: usize,
}

/// One segment of a request, on its way through T3 and S3Gen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RowKey {
    ticket: Ticket,
    segment: usize,
    /// 0 for the first draw, then each redraw of a silent segment.
    attempt: u32,
}

/// What a round did (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// T3 decode steps run, and the slots that decoded in them.
    pub t3_steps: usize,
    pub t3_rows: usize,
    /// Speech tokens of the rows T3 finished.
    pub t3_tokens: usize,
    /// Rows S3Gen spoke.
    pub s3gen_rows: usize,
}

/// A continuous-batching session over one engine (see the module docs).
pub struct Continuous<'e> {
    engine: &'e Engine,
    generator: Option<Generator<'e>>,
    requests: HashMap<Ticket, Pending>,
    queue: VecDeque<RowKey>,
    in_t3: HashMap<usize, RowKey>,
    /// T3 done, waiting for S3Gen: the row, its speech tokens, the rounds it has waited.
    ready: Vec<(RowKey, Vec<u32>, usize)>,
    last: RoundStats,
    min_slots: usize,
}

impl<'e> Continuous<'e> {
    /// A session whose generators have at least `min_slots` slots (clamped to the engine's
    /// `max_batch`; 1 makes them as small as the work waiting).
    pub fn new(engine: &'e Engine, min_slots: usize) -> Continuous<'e> {
        Continuous {
            engine,
            generator: None,
            requests: HashMap::new(),
            queue: VecDeque::new(),
            in_t3: HashMap::new(),
            ready: Vec::new(),
            last: RoundStats::default(),
            min_slots: min_slots.max(1),
        }
    }

    /// Checks and splits `request` and queues its segments under `ticket`. A bad request is
    /// refused here (its error names the problem) and nothing of it is queued. A ticket already in
    /// use is an internal error.
    pub fn submit(&mut self, ticket: Ticket, request: Request) -> Result<()> {
        if self.requests.contains_key(&ticket) {
            return Err(Error::Internal(format!("ticket {ticket} is already in use")));
        }
        let prepared = self.engine.prepare(0, &request)?;
        let n = prepared.segments.len();
        self.queue.extend((0..n).map(|segment| RowKey { ticket, segment, attempt: 0 }));
        self.requests.insert(ticket, Pending { request, prepared, spoken: (0..n).map(|_| None).collect(), left: n });
        Ok(())
    }

    /// Drops request `ticket`: its queued rows, its rows waiting for S3Gen, and its T3 slots (free
    /// for the next round). False when the ticket is not known (done or never submitted).
    pub fn cancel(&mut self, ticket: Ticket) -> Result<bool> {
        if self.requests.remove(&ticket).is_none() {
            return Ok(false);
        }
        self.queue.retain(|k| k.ticket != ticket);
        self.ready.retain(|(k, _, _)| k.ticket != ticket);
        let ids: Vec<usize> = self.in_t3.iter().filter(|(_, k)| k.ticket == ticket).map(|(&id, _)| id).collect();
        for id in ids {
            self.in_t3.remove(&id);
            if let Some(g) = self.generator.as_mut() {
                g.cancel(id)?;
            }
        }
        Ok(true)
    }

    /// Nothing queued, decoding or waiting.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests submitted and not yet returned or cancelled.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// T3 slots decoding now, and slots in all (0 when no generator exists).
    pub fn slots(&self) -> (usize, usize) {
        self.generator.as_ref().map_or((0, 0), |g| (g.active(), g.capacity()))
    }

    /// Rows waiting for a T3 slot.
    pub fn queued_rows(&self) -> usize {
        self.queue.len()
    }

    /// What the last [`Continuous::step`] did.
    pub fn last_round(&self) -> RoundStats {
        self.last
    }

    fn row(&self, key: RowKey) -> Option<Row<'_>> {
        let p = self.requests.get(&key.ticket)?;
        let seg = &p.prepared.segments[key.segment];
        Some(Row {
            index: 0,
            segment: key.segment,
            tokens: &seg.tokens,
            voice: &p.prepared.voice,
            options: &p.request.options,
            seed: segment_seed(p.request.options.seed, key.segment, key.attempt),
        })
    }

    /// Fails request `ticket` with `e` (its other rows are dropped).
    fn fail(&mut self, ticket: Ticket, e: Error, done: &mut Vec<(Ticket, Result<Audio>)>) -> Result<()> {
        if self.cancel(ticket)? {
            done.push((ticket, Err(e)));
        }
        Ok(())
    }

    /// One round of work (see the module docs); the requests it completed, each with its audio or
    /// its own error. An error of the backend itself is returned as the round's error: the session
    /// should then be dropped (its requests answered with that error by the caller).
    pub fn step(&mut self) -> Result<Vec<(Ticket, Result<Audio>)>> {
        let mut done = Vec::new();
        self.last = RoundStats::default();
        self.admit(&mut done)?;
        if let Some(g) = self.generator.as_mut()
            && g.active() > 0
        {
            self.last.t3_rows = g.active();
            for _ in 0..self.engine.batching.poll_every.max(1) {
                g.step()?;
                self.last.t3_steps += 1;
            }
            let finished = g.poll()?;
            let vocab = self.engine.s3gen.config.flow_vocab_size as u32;
            for f in finished {
                let Some(key) = self.in_t3.remove(&f.id) else { continue };
                self.last.t3_tokens += f.tokens.len();
                let speech: Vec<u32> = f.tokens.into_iter().filter(|&t| t < vocab).collect();
                if !speech.is_empty() {
                    self.ready.push((key, speech, 0));
                } else if key.attempt < SILENT_SEGMENT_REDRAWS {
                    self.queue.push_front(RowKey { attempt: key.attempt + 1, ..key });
                } else {
                    self.fail(key.ticket, Error::NoSpeechTokens { index: 0, segment: key.segment }, &mut done)?;
                }
            }
        }
        let t3_busy = self.generator.as_ref().is_some_and(|g| g.active() > 0) || !self.queue.is_empty();
        let half = self.generator.as_ref().map_or(1, |g| g.capacity().div_ceil(2));
        let oldest = self.ready.iter().map(|r| r.2).max().unwrap_or(0);
        if !self.ready.is_empty() && (!t3_busy || self.ready.len() >= half || oldest >= S3GEN_MAX_WAIT_ROUNDS) {
            self.speak_ready(&mut done)?;
        } else {
            for r in &mut self.ready {
                r.2 += 1;
            }
        }
        if self.generator.as_ref().is_some_and(|g| g.active() == 0) {
            self.generator = None; // its KV cache, before S3Gen's buffers grow
        }
        Ok(done)
    }

    /// Queued rows into free slots (a new generator when none exists).
    fn admit(&mut self, done: &mut Vec<(Ticket, Result<Audio>)>) -> Result<()> {
        if self.queue.is_empty() {
            return Ok(());
        }
        if self.generator.is_none() {
            let cfg = self.engine.t3.config();
            let mut longest = 0;
            let mut new_cap = 1;
            for &k in &self.queue {
                if let Some(r) = self.row(k) {
                    longest = longest.max(r.tokens.len());
                    new_cap = new_cap.max(r.options.max_new_tokens);
                }
            }
            let text = longest.max(TEXT_TOKENS_HEADROOM.min(cfg.max_text_tokens + 2));
            let max_batch = self.engine.batching.max_batch;
            let slots = self.queue.len().max(self.min_slots).min(max_batch).next_power_of_two().min(max_batch);
            self.generator = Some(Generator::new(&self.engine.t3, slots, cfg.kv_positions(text, new_cap), new_cap)?);
        }
        let mut waiting = VecDeque::new();
        while let Some(key) = self.queue.pop_front() {
            let Some(req) = self.row(key).map(|r| r.t3_request()) else { continue };
            let g = self.generator.as_mut().expect("made above");
            if !g.has_free_slot() || !g.fits(req.text_tokens.len(), req.settings.max_new_tokens) {
                waiting.push_back(key); // a free slot, or the next generator
                continue;
            }
            match g.add(&req) {
                Ok(id) => {
                    self.in_t3.insert(id, key);
                }
                // the request's own fault (its settings or length), not the batch's
                Err(e @ (tts_t3::Error::Input { .. } | tts_t3::Error::TooLong { .. })) => {
                    self.fail(key.ticket, e.into(), done)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.queue = waiting;
        Ok(())
    }

    /// S3Gen over every row T3 has finished; the requests that are then complete are joined.
    fn speak_ready(&mut self, done: &mut Vec<(Ticket, Result<Audio>)>) -> Result<()> {
        let ready = std::mem::take(&mut self.ready);
        let mut steps: Vec<usize> =
            ready.iter().filter_map(|(k, _, _)| self.requests.get(&k.ticket).map(|p| p.request.options.cfm_steps)).collect();
        steps.sort_unstable();
        steps.dedup();
        let max_batch = self.engine.batching.max_batch;
        for n_steps in steps {
            let group: Vec<&(RowKey, Vec<u32>, usize)> = ready
                .iter()
                .filter(|(k, _, _)| self.requests.get(&k.ticket).is_some_and(|p| p.request.options.cfm_steps == n_steps))
                .collect();
            for chunk in group.chunks(max_batch) {
                let rows: Vec<Row<'_>> = chunk.iter().map(|(k, _, _)| self.row(*k).expect("filtered above")).collect();
                let reqs: Vec<tts_s3gen::Request<'_>> = rows.iter().zip(chunk).map(|(r, (_, s, _))| r.s3gen_request(s)).collect();
                let wavs = self.engine.s3gen.synthesize(&reqs, n_steps)?;
                self.last.s3gen_rows += chunk.len();
                let keys: Vec<(RowKey, Vec<u32>)> = chunk.iter().map(|(k, s, _)| (*k, s.clone())).collect();
                for ((key, speech_tokens), wav) in keys.into_iter().zip(wavs) {
                    let p = self.requests.get_mut(&key.ticket).expect("filtered above");
                    p.spoken[key.segment] = Some(Spoken { speech_tokens, wav });
                    p.left -= 1;
                    if p.left == 0 {
                        let p = self.requests.remove(&key.ticket).expect("present");
                        let spoken = p.spoken.into_iter().map(|s| Ok(s.expect("every segment spoken"))).collect();
                        done.push((key.ticket, self.engine.assemble(&p.prepared, spoken)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs until every request submitted is done; the results in completion order. For tests and
    /// simple callers (a server calls [`Continuous::step`] and submits between rounds).
    pub fn run_to_end(&mut self) -> Result<Vec<(Ticket, Result<Audio>)>> {
        let mut out = Vec::new();
        while !self.is_idle() {
            out.extend(self.step()?);
        }
        Ok(out)
    }
}
