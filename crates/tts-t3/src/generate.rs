//! Batched generation: many requests decode together, each a (conditional, unconditional) CFG row
//! pair sharing its sampled token, each stopping on its own.
//!
//! Every per-step value (input tokens, positions, attention lengths, sampler settings and state,
//! histories) lives in preallocated device tensors, so one decode step — embed, the Llama stack over
//! the static KV cache, the sampler, the state advance — is captured once as a graph on Cuda and Emu
//! and replayed for every token; the host only polls the done flags every few steps. A finished
//! request's rows get attention length 0 (no attention work), and its slot can take a new request
//! while the others keep decoding (slot replacement, the basis of continuous batching).
use tts_kernels::{DType, Graph, Tensor, ops};

use crate::model::{KvCache, RowLayout, T3, Workspace};
use crate::{Error, Result};

/// Decode steps of up to this many rows (8 requests with CFG) run the fused decode ops
/// ([`T3::forward_decode`]: 5 launches per layer, 6 when the attention splits its keys; weights
/// streamed once by GEMV kernels); larger
/// batches the unfused stack, whose projections are GEMMs (cuBLAS tensor cores on Cuda). On a GPU
/// the GEMV kernels do their multiply-adds on CUDA cores, which stops paying around this batch size
/// by arithmetic (16 rows × 0.5 G weights ≈ the time to read the weights); the crossover has not
/// been measured on a GPU.
pub const FUSED_DECODE_MAX_ROWS: usize = 16;

/// `exaggeration` of `ChatterboxTTS.generate` (the emotion token's value; neutral).
pub const DEFAULT_EXAGGERATION: f32 = 0.5;

/// `max_new_tokens` of `ChatterboxTTS.generate` (1000 speech tokens: 40 s at 25 tokens per second).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1000;

/// Per-request sampling settings. `Default` is what `ChatterboxTTS.generate` uses: the sampler's
/// [`ops::SamplerSettings::ENGLISH_DEFAULT`] (the one place those values live) and
/// [`DEFAULT_MAX_NEW_TOKENS`].
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    pub temperature: f32,
    pub cfg_weight: f32,
    pub repetition_penalty: f32,
    pub min_p: f32,
    pub top_p: f32,
    /// 0 = off (the English reference has no top-k).
    pub top_k: u32,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// The token that ends the request (None: the model's stop_speech_token, 6562).
    pub stop_token: Option<u32>,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        let k = ops::SamplerSettings::ENGLISH_DEFAULT;
        SamplerSettings {
            temperature: k.temperature,
            cfg_weight: k.cfg_weight,
            repetition_penalty: k.repetition_penalty,
            min_p: k.min_p,
            top_p: k.top_p,
            top_k: k.top_k,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            seed: k.seed,
            stop_token: None,
        }
    }
}

impl SamplerSettings {
    /// The sampler op's view of these settings (the English pipeline).
    pub fn kernel_settings(&self) -> ops::SamplerSettings {
        ops::SamplerSettings {
            temperature: self.temperature,
            cfg_weight: self.cfg_weight,
            repetition_penalty: self.repetition_penalty,
            min_p: self.min_p,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            ..ops::SamplerSettings::ENGLISH_DEFAULT
        }
    }

    /// Checks every setting (what the sampler kernel accepts, and more: top_p > 0, at least one new
    /// token); an [`Error::Input`] names the field and its value. The model's limits (the stop token's
    /// vocabulary, `max_speech_tokens`) are checked by [`Generator::add`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, value: String, expected: &str| {
            Err(Error::Input { field, value, expected: expected.to_string() })
        };
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.temperature) {
            return bad("temperature", self.temperature.to_string(), "finite and > 0");
        }
        if !positive(self.repetition_penalty) {
            return bad("repetition_penalty", self.repetition_penalty.to_string(), "finite and > 0");
        }
        if !self.cfg_weight.is_finite() {
            return bad("cfg_weight", self.cfg_weight.to_string(), "finite");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p.to_string(), "in [0, 1]");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p.to_string(), "in (0, 1]");
        }
        if self.top_k > i32::MAX as u32 {
            return bad("top_k", self.top_k.to_string(), "at most 2^31 - 1");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "0".into(), "at least 1");
        }
        Ok(())
    }
}

/// The T3 part of a voice: the speaker embedding and the speech-token prompt (`conds.pt`'s `t3`).
#[derive(Debug, Clone)]
pub struct Voice {
    pub speaker_emb: Vec<f32>,
    pub prompt_tokens: Vec<u32>,
}

/// One text to speak.
#[derive(Debug, Clone)]
pub struct Request {
    /// Text token ids with SOT and EOT.
    pub text_tokens: Vec<u32>,
    pub voice: Voice,
    pub exaggeration: f32,
    pub settings: SamplerSettings,
}

/// A request that finished: its speech tokens, post-processed as the reference does
/// ([`post_process`]: what follows a sampled BOS, cut at the stop token, ids ≥ the BOS id dropped),
/// and why it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub id: usize,
    pub tokens: Vec<u32>,
    /// Raw sampled tokens (including a final stop token), before post-processing.
    pub raw: Vec<u32>,
    pub stopped_on_stop_token: bool,
}

/// Columns of the sampler's settings tensors (see kernels/sampling.cu).
const SETTINGS_F32: usize = 8;
const SETTINGS_I32: usize = 4;
const STATE: usize = 4;

struct Slot {
    id: usize,
    stop: u32,
    /// Decode steps left before max_new_tokens is reached (the host's count; stop tokens end earlier).
    remaining: usize,
}

/// How far a [`Generator::run_observed`] is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunProgress {
    /// Requests in the run, finished so far, decoding now.
    pub requests: usize,
    pub finished: usize,
    pub active: usize,
    /// Decode steps of the generator so far.
    pub steps: usize,
    /// Tokens sampled by the finished requests.
    pub tokens_of_finished: usize,
}

/// A batch of decoding requests on one device.
pub struct Generator<'m> {
    model: &'m T3,
    max_batch: usize,
    max_len: usize,
    max_hist: usize,
    cache: KvCache,
    ws: Workspace,
    h: Tensor,
    tokens: Tensor,
    speech_pos: Tensor,
    rows: RowLayout,
    settings: Tensor,
    settings_i: Tensor,
    history: Tensor,
    state: Tensor,
    next_token: Tensor,
    slots: Vec<Option<Slot>>,
    next_id: usize,
    graph: Option<Graph>,
    /// Decode steps run (graph replays or eager steps).
    pub steps: usize,
}

impl<'m> Generator<'m> {
    /// A batch of up to `max_batch` requests, each with up to `max_len` positions (prefill + generated
    /// tokens) and `max_new_tokens_cap` generated tokens.
    pub fn new(model: &'m T3, max_batch: usize, max_len: usize, max_new_tokens_cap: usize) -> Result<Generator<'m>> {
        if max_batch == 0 || max_len == 0 || max_new_tokens_cap == 0 {
            return Err(Error::Misuse(format!(
                "a generator of {max_batch} requests, {max_len} positions and {max_new_tokens_cap} new tokens: all must be positive"
            )));
        }
        let (dev, cfg) = (&model.dev, &model.cfg);
        let rows = 2 * max_batch;
        let i32s = |n: usize, v: i32| Tensor::from_i32(dev, &[n], &vec![v; n]);
        // empty slots look done to the sampler (state column 1) and inactive to attention (lens 0)
        let mut state0 = vec![0i32; max_batch * STATE];
        for q in 0..max_batch {
            state0[q * STATE + 1] = 1;
        }
        let slot_ids: Vec<i32> = (0..rows as i32).collect();
        // empty slots carry valid (default) settings: the sampler checks every row it is given
        let idle = SamplerSettings::default().kernel_settings();
        let settings_f: Vec<f32> = (0..max_batch).flat_map(|_| idle.f32_row()).collect();
        let settings_i: Vec<i32> = (0..max_batch).flat_map(|_| idle.i32_row()).collect();
        Ok(Generator {
            model,
            max_batch,
            max_len,
            max_hist: max_new_tokens_cap + 1,
            cache: KvCache::new(cfg, dev, rows, max_len)?,
            ws: Workspace::new(cfg, dev, rows)?,
            h: Tensor::zeros(dev, DType::F32, &[rows, cfg.hidden_size])?,
            tokens: i32s(rows, cfg.start_speech_token as i32)?,
            speech_pos: i32s(rows, 0)?,
            rows: RowLayout {
                positions: i32s(rows, 0)?,
                slots: Tensor::from_i32(dev, &[rows], &slot_ids)?,
                lens: i32s(rows, 0)?,
            },
            settings: Tensor::from_f32(dev, DType::F32, &[max_batch, SETTINGS_F32], &settings_f)?,
            settings_i: Tensor::from_i32(dev, &[max_batch, SETTINGS_I32], &settings_i)?,
            history: Tensor::zeros(dev, DType::I32, &[max_batch, max_new_tokens_cap + 1])?,
            state: Tensor::from_i32(dev, &[max_batch, STATE], &state0)?,
            next_token: i32s(max_batch, 0)?,
            slots: (0..max_batch).map(|_| None).collect(),
            next_id: 0,
            graph: None,
            steps: 0,
        })
    }

    /// Requests currently decoding.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(|s| s.is_none())
    }

    /// Puts a request into a free slot: conditioning, prefill of its two CFG rows, and the draw of its
    /// first token. Returns its id. Errors when no slot is free or the request does not fit.
    pub fn add(&mut self, req: &Request) -> Result<usize> {
        let m = self.model;
        let cfg = &m.cfg;
        req.settings.validate()?;
        let stop = req.settings.stop_token.unwrap_or(cfg.stop_speech_token);
        if stop as usize >= cfg.speech_tokens_dict_size {
            return Err(Error::Input {
                field: "stop_token",
                value: stop.to_string(),
                expected: format!("below the vocabulary size {}", cfg.speech_tokens_dict_size),
            });
        }
        if req.settings.max_new_tokens > cfg.max_speech_tokens {
            return Err(Error::TooLong {
                what: "new speech tokens",
                len: req.settings.max_new_tokens,
                max: cfg.max_speech_tokens,
            });
        }
        if req.settings.max_new_tokens + 1 > self.max_hist {
            return Err(Error::TooLong { what: "new speech tokens", len: req.settings.max_new_tokens, max: self.max_hist - 1 });
        }
        let q = self.slots.iter().position(|s| s.is_none()).ok_or(Error::BatchFull { slots: self.max_batch })?;
        let l0 = cfg.prefill_positions(req.text_tokens.len());
        let need = cfg.kv_positions(req.text_tokens.len(), req.settings.max_new_tokens);
        if need > self.max_len {
            return Err(Error::TooLong { what: "prefill positions and new tokens", len: need, max: self.max_len });
        }
        let cond = m.cond_embeddings(&req.voice.speaker_emb, &req.voice.prompt_tokens, req.exaggeration)?;
        let emb = m.prefill_embeddings(&cond, &req.text_tokens)?.to_f32_vec()?;
        // rows: both sequences' first l0-1 positions, then the two last positions side by side, so
        // that the two logits rows the sampler needs are adjacent
        let d = cfg.hidden_size;
        let (s0, s1) = (2 * q, 2 * q + 1);
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(2 * l0);
        order.extend((0..l0 - 1).map(|p| (s0, p)));
        order.extend((0..l0 - 1).map(|p| (s1, p)));
        order.extend([(s0, l0 - 1), (s1, l0 - 1)]);
        let mut rows_emb = Vec::with_capacity(2 * l0 * d);
        for &(s, p) in &order {
            let src = (s - s0) * l0 + p;
            rows_emb.extend_from_slice(&emb[src * d..(src + 1) * d]);
        }
        let mut h = Tensor::from_f32(&m.dev, DType::F32, &[2 * l0, d], &rows_emb)?;
        let layout = RowLayout::causal(&m.dev, &order)?;
        let mut ws = Workspace::new(cfg, &m.dev, 2 * l0)?;
        m.forward(&mut h, &layout, &mut self.cache, &mut ws, 2)?;

        // sampler settings and state of the slot
        let s = &req.settings;
        let ks = s.kernel_settings();
        self.settings.view_mut().narrow_rows(q, 1)?.copy_from_f32(&ks.f32_row())?;
        self.settings_i.view_mut().narrow_rows(q, 1)?.copy_from_i32(&ks.i32_row())?;
        let mut hist = vec![0i32; self.max_hist];
        hist[0] = cfg.start_speech_token as i32;
        self.history.view_mut().narrow_rows(q, 1)?.copy_from_i32(&hist)?;
        let st = [1, 0, s.max_new_tokens as i32, stop as i32];
        self.state.view_mut().narrow_rows(q, 1)?.copy_from_i32(&st)?;
        // row state: the last prefill position was fed; the next input gets RoPE position l0 and
        // learned speech position 1
        for (t, v) in [(&mut self.rows.positions, l0 as i32 - 1), (&mut self.speech_pos, 0), (&mut self.rows.lens, l0 as i32)] {
            t.view_mut().narrow_rows(2 * q, 2)?.copy_from_i32(&[v, v])?;
        }
        // the first token, from the prefill logits
        ops::sample_tokens(
            ws.logits.view().narrow_rows(0, 2)?,
            self.settings.view().narrow_rows(q, 1)?,
            self.settings_i.view().narrow_rows(q, 1)?,
            self.history.view_mut().narrow_rows(q, 1)?,
            self.state.view_mut().narrow_rows(q, 1)?,
            self.next_token.view_mut().narrow_rows(q, 1)?,
            None,
        )?;
        ops::advance_decode_state(
            self.next_token.view().narrow_rows(q, 1)?,
            self.state.view().narrow_rows(q, 1)?,
            self.tokens.view_mut().narrow_rows(2 * q, 2)?,
            self.rows.positions.view_mut().narrow_rows(2 * q, 2)?,
            self.speech_pos.view_mut().narrow_rows(2 * q, 2)?,
            self.rows.lens.view_mut().narrow_rows(2 * q, 2)?,
        )?;
        let id = self.next_id;
        self.next_id += 1;
        self.slots[q] = Some(Slot { id, stop, remaining: s.max_new_tokens - 1 });
        Ok(id)
    }

    /// One decode step of every slot (finished and empty ones cost no attention work and are not
    /// sampled). On Cuda and Emu the step is captured on first use and replayed after.
    pub fn step(&mut self) -> Result<()> {
        if !self.model.dev.captures_graphs() {
            self.steps += 1;
            self.count_step();
            return self.step_eager();
        }
        if self.graph.is_none() {
            if self.steps == 0 {
                // the first step runs eagerly: it warms cuBLAS (handle, workspace, algorithms) on
                // the stream before any capture, as CUDA graphs with cuBLAS inside require
                self.step_eager()?;
                self.steps += 1;
                self.count_step();
                return Ok(());
            }
            let dev = self.model.dev.clone();
            let graph = dev.capture(|| self.step_eager())?;
            self.graph = Some(graph);
        }
        self.graph.as_ref().expect("captured above").replay()?;
        self.steps += 1;
        self.count_step();
        Ok(())
    }

    /// One decode step issued op by op (what the graph records).
    pub fn step_eager(&mut self) -> Result<()> {
        let m = self.model;
        let rows = 2 * self.max_batch;
        ops::embed_pos(
            self.tokens.view(),
            Some((self.speech_pos.view(), m.w.speech_pos.view())),
            m.w.speech_emb.view(),
            self.h.view_mut(),
        )?;
        if rows <= FUSED_DECODE_MAX_ROWS {
            m.forward_decode(&mut self.h, &self.rows, &mut self.cache, &mut self.ws)?;
        } else {
            m.forward(&mut self.h, &self.rows, &mut self.cache, &mut self.ws, rows)?;
        }
        ops::sample_tokens(
            self.ws.logits.view().narrow_rows(0, rows)?,
            self.settings.view(),
            self.settings_i.view(),
            self.history.view_mut(),
            self.state.view_mut(),
            self.next_token.view_mut(),
            None,
        )?;
        ops::advance_decode_state(
            self.next_token.view(),
            self.state.view(),
            self.tokens.view_mut(),
            self.rows.positions.view_mut(),
            self.speech_pos.view_mut(),
            self.rows.lens.view_mut(),
        )?;
        Ok(())
    }

    fn count_step(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            s.remaining = s.remaining.saturating_sub(1);
        }
    }

    /// Steps until the next poll: `poll_every`, but no further than the first request that must
    /// finish by its max_new_tokens (no decode steps are wasted after every request is done).
    fn steps_until_poll(&self, poll_every: usize) -> usize {
        let soonest = self.slots.iter().flatten().map(|s| s.remaining).min().unwrap_or(0);
        poll_every.max(1).min(soonest.max(1))
    }

    /// Launches per decode step (kernels and GEMMs) of the captured graph, once a step has run
    /// (None on Cpu, which runs eagerly).
    pub fn launches_per_step(&self) -> Option<usize> {
        self.graph.as_ref().map(|g| g.launch_count())
    }

    /// The kernels of one decode step in launch order, once captured.
    pub fn step_kernels(&self) -> Option<&[&'static str]> {
        self.graph.as_ref().map(|g| g.kernel_names())
    }

    /// Reads the done flags (one device-to-host copy) and returns the requests that finished since the
    /// last poll; their slots become free.
    pub fn poll(&mut self) -> Result<Vec<Finished>> {
        let state = self.state.to_i32_vec()?;
        let mut out = Vec::new();
        for q in 0..self.max_batch {
            let Some(slot) = &self.slots[q] else { continue };
            let row = &state[q * STATE..(q + 1) * STATE];
            if row[1] == 0 {
                continue;
            }
            let n = (row[0].max(1) as usize).min(self.max_hist);
            let hist = self.history.view().narrow_rows(q, 1)?.to_i32_vec()?;
            let raw: Vec<u32> = hist[1..n].iter().map(|&t| t as u32).collect();
            let stop = slot.stop;
            out.push(Finished {
                id: slot.id,
                tokens: post_process(&raw, self.model.cfg.start_speech_token, stop),
                stopped_on_stop_token: raw.last() == Some(&stop),
                raw,
            });
            self.slots[q] = None;
        }
        Ok(out)
    }

    /// Ends request `id` at once, without a result (its client has gone): its slot is free for
    /// the next [`Generator::add`], and its rows cost no attention work and are not sampled from the
    /// next step on. False when no slot holds `id` (finished and polled, or never added).
    pub fn cancel(&mut self, id: usize) -> Result<bool> {
        let Some(q) = self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.id == id)) else {
            return Ok(false);
        };
        // as an empty slot: done to the sampler (state column 1), inactive to attention (lens 0)
        let mut st = [0i32; STATE];
        st[1] = 1;
        self.state.view_mut().narrow_rows(q, 1)?.copy_from_i32(&st)?;
        self.rows.lens.view_mut().narrow_rows(2 * q, 2)?.copy_from_i32(&[0, 0])?;
        self.slots[q] = None;
        Ok(true)
    }

    /// Slots in all (the batch size it was made with).
    pub fn capacity(&self) -> usize {
        self.max_batch
    }

    /// Whether `req` fits this generator's positions and token cap (what [`Generator::add`] checks
    /// beyond a free slot and valid settings).
    pub fn fits(&self, text_tokens: usize, max_new_tokens: usize) -> bool {
        max_new_tokens < self.max_hist && self.model.cfg.kv_positions(text_tokens, max_new_tokens) <= self.max_len
    }

    /// The speech tokens request `id` has so far, post-processed as [`Finished::tokens`] (so a
    /// stop token and what follows it are not included), while it decodes: for streaming. One
    /// device-to-host copy of the state and one of the request's history row. `None` when no slot
    /// holds `id` (it finished and was polled, or never was added).
    pub fn tokens_so_far(&self, id: usize) -> Result<Option<Vec<u32>>> {
        let Some(q) = self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.id == id)) else {
            return Ok(None);
        };
        let state = self.state.view().narrow_rows(q, 1)?.to_i32_vec()?;
        let n = (state[0].max(1) as usize).min(self.max_hist);
        let hist = self.history.view().narrow_rows(q, 1)?.to_i32_vec()?;
        let raw: Vec<u32> = hist[1..n].iter().map(|&t| t as u32).collect();
        let stop = self.slots[q].as_ref().map_or(self.model.cfg.stop_speech_token, |s| s.stop);
        Ok(Some(post_process(&raw, self.model.cfg.start_speech_token, stop)))
    }

    /// Runs `requests` to completion with continuous batching: free slots take queued requests,
    /// the batch decodes, the host polls every `poll_every` steps. Results are in request order.
    pub fn run(&mut self, requests: &[Request], poll_every: usize) -> Result<Vec<Finished>> {
        self.run_observed(requests, poll_every, &mut |_| {})
    }

    /// [`Generator::run`], calling `observe` after every poll with the progress so far (for
    /// progress bars; it must not take long).
    pub fn run_observed(
        &mut self,
        requests: &[Request],
        poll_every: usize,
        observe: &mut dyn FnMut(RunProgress),
    ) -> Result<Vec<Finished>> {
        let mut progress = RunProgress { requests: requests.len(), ..RunProgress::default() };
        let mut results: Vec<Option<Finished>> = vec![None; requests.len()];
        let mut id_to_index = std::collections::HashMap::new();
        let mut queue = 0;
        loop {
            while queue < requests.len() && self.has_free_slot() {
                let id = self.add(&requests[queue])?;
                id_to_index.insert(id, queue);
                queue += 1;
            }
            for f in self.poll()? {
                let i = id_to_index[&f.id];
                progress.finished += 1;
                progress.tokens_of_finished += f.raw.len();
                results[i] = Some(f);
            }
            progress.steps = self.steps;
            progress.active = self.active();
            observe(progress);
            if queue == requests.len() && self.active() == 0 {
                break;
            }
            if self.active() > 0 {
                for _ in 0..self.steps_until_poll(poll_every) {
                    self.step()?;
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every request finished")).collect())
    }
}

/// The reference's post-processing of the sampled tokens (tts.py:257-262):
/// 1. `drop_invalid_tokens` (s3tokenizer/__init__.py:16-30) keeps what lies after the first start
///    token (BOS, 6561), when one was sampled, and before the first stop token (6562);
/// 2. `speech_tokens < 6561` drops every id from the BOS id up (the head is 8194 wide).
///
/// (A second BOS makes the reference fail, `.squeeze(0)` of two indices; here the first one counts.)
pub fn post_process(raw: &[u32], start_speech_token: u32, stop_speech_token: u32) -> Vec<u32> {
    let end = raw.iter().position(|&t| t == stop_speech_token).unwrap_or(raw.len());
    let begin = raw.iter().position(|&t| t == start_speech_token).map_or(0, |i| i + 1);
    raw.get(begin..end).unwrap_or_default().iter().copied().filter(|&t| t < start_speech_token).collect()
}

#[cfg(test)]
mod tests {
    use super::post_process;

    const BOS: u32 = 6561;
    const EOS: u32 = 6562;

    #[test]
    fn post_processing_cuts_at_the_stop_token_and_drops_ids_from_the_bos_up() {
        assert_eq!(post_process(&[5, 6560, 0, 7], BOS, EOS), vec![5, 6560, 0, 7]);
        assert_eq!(post_process(&[5, 8, EOS], BOS, EOS), vec![5, 8]);
        assert_eq!(post_process(&[5, 6563, 8193, 8, EOS], BOS, EOS), vec![5, 8]);
        assert_eq!(post_process(&[EOS], BOS, EOS), Vec::<u32>::new());
        assert_eq!(post_process(&[], BOS, EOS), Vec::<u32>::new());
    }

    /// drop_invalid_tokens: `x[first SOS + 1 : first EOS]`, everything before a sampled BOS goes.
    #[test]
    fn a_sampled_bos_drops_everything_before_it() {
        assert_eq!(post_process(&[5, 8, BOS, 9, 10, EOS], BOS, EOS), vec![9, 10]);
        assert_eq!(post_process(&[5, BOS, 9, 6600, 10], BOS, EOS), vec![9, 10]);
        assert_eq!(post_process(&[5, 8, BOS, EOS], BOS, EOS), Vec::<u32>::new());
        assert_eq!(post_process(&[BOS, 3, BOS, 4], BOS, EOS), vec![3, 4]);
        // a stop before the start (not a T3 output: it stops at its stop token) leaves nothing, as x[s:e] with s > e
        assert_eq!(post_process(&[5, EOS, BOS, 9], BOS, EOS), Vec::<u32>::new());
    }
}
