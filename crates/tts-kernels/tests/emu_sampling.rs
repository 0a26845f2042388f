//! The T3 sampler kernel (kernels/sampling.cu) against its Cpu reference op, on every kernel backend
//! of this build and machine (Emu in forward, reverse and random thread schedules; Cuda when a GPU is
//! usable), with fresh random inputs (the seed is printed; `TTS_TEST_SEED` replays it).
//!
//! What must agree:
//! - history, state and next_token exactly, after every step of a multi-step decode. The draw is
//!   exact by construction: the kernel and the Cpu op compute the same f32 logits and the same
//!   `exp`, and count probability mass in 64-bit fixed point (order-independent integer sums), so a
//!   uniform can never land "within rounding" of a CDF boundary on one side only. On Emu (same libm
//!   `expf` as the Cpu op) any token difference is a bug. On a real GPU (`expf` within 2 ulp of libm)
//!   a difference is accepted only where the Cpu reference shows a decision within 1e-5 (relative)
//!   of its threshold, and the test then re-syncs the device to the Cpu state.
//! - probs_out within an f32 bound derived from the summation order (see `probs_tolerance`), exactly 0
//!   where the Cpu reference removed the token. On Emu also bit for bit in the normaliser-free form:
//!   the top token's probability is exactly `1/S`, so every `p_j` must equal `fl(e_j · p_top)` with
//!   the reference's `e_j = exp(x_j − max)`: this checks every processed logit and removal exactly.
//! - requests that are done: no write at all (their rows stay poisoned on Emu).
use tts_kernels::cpu::{self, SamplerStages};
use tts_kernels::ops::{DONE_ERROR, DONE_MAX_TOKENS, DONE_RUNNING, DONE_STOP, Pipeline, SamplerSettings, SamplerState};
use tts_kernels::testing::{compare, fresh_seed, kernel_devices, random_f32, random_i32};
use tts_kernels::{BackendKind, DType, Device, Tensor, ops};

const EPS: f64 = 1.0 / (1u64 << 24) as f64; // f32 unit roundoff

/// A batch of requests as host data (what the op's tensors hold).
#[derive(Clone)]
struct Batch {
    vocab: usize,
    max_hist: usize,
    settings: Vec<SamplerSettings>,
    history: Vec<i32>,
    state: Vec<i32>,
    next: Vec<i32>,
}

impl Batch {
    fn n(&self) -> usize {
        self.settings.len()
    }
}

/// The tensors of a batch on one device (kept across steps: the decode loop never reads back).
struct OnDevice {
    settings: Tensor,
    settings_i: Tensor,
    history: Tensor,
    state: Tensor,
    next: Tensor,
}

impl OnDevice {
    fn new(dev: &Device, b: &Batch) -> OnDevice {
        let n = b.n();
        let sf: Vec<f32> = b.settings.iter().flat_map(|s| s.f32_row()).collect();
        let si: Vec<i32> = b.settings.iter().flat_map(|s| s.i32_row()).collect();
        OnDevice {
            settings: Tensor::from_f32(dev, DType::F32, &[n, 8], &sf).unwrap(),
            settings_i: Tensor::from_i32(dev, &[n, 4], &si).unwrap(),
            history: Tensor::from_i32(dev, &[n, b.max_hist], &b.history).unwrap(),
            state: Tensor::from_i32(dev, &[n, 4], &b.state).unwrap(),
            next: Tensor::from_i32(dev, &[n], &b.next).unwrap(),
        }
    }

    /// One step; returns probs_out (starts poisoned on Emu).
    fn step(&mut self, dev: &Device, vocab: usize, logits: &[f32]) -> Vec<f32> {
        let n = self.next.len();
        let lt = Tensor::from_f32(dev, DType::F32, &[2 * n, vocab], logits).unwrap();
        let mut probs = Tensor::uninit(dev, DType::F32, &[n, vocab]).unwrap();
        ops::sample_tokens(
            lt.view(),
            self.settings.view(),
            self.settings_i.view(),
            self.history.view_mut(),
            self.state.view_mut(),
            self.next.view_mut(),
            Some(probs.view_mut()),
        )
        .unwrap();
        probs.to_f32_vec().unwrap()
    }

    fn read(&self, like: &Batch) -> Batch {
        Batch {
            history: self.history.to_i32_vec().unwrap(),
            state: self.state.to_i32_vec().unwrap(),
            next: self.next.to_i32_vec().unwrap(),
            ..like.clone()
        }
    }

    fn resync(&mut self, b: &Batch) {
        self.history.copy_from_i32(&b.history).unwrap();
        self.state.copy_from_i32(&b.state).unwrap();
        self.next.copy_from_i32(&b.next).unwrap();
    }
}

/// Relative error bound of the kernel's probabilities against the Cpu op's. Both compute
/// `p = e · (1/S)` from bit-identical `e = exp(x − max)`; they differ only in S. The Cpu op sums in
/// f64 (one final rounding); the kernel sums a contiguous chunk of ceil(V/block) values per thread
/// in f32 (≤ chunk − 1 roundings on the path of any term), then a 32-lane shuffle tree and a tree
/// over the warps (≤ 5 + 5 more). Then one rounding each for 1/S and for e · (1/S), on each side.
/// Absolute floor: 2 denormal ulps (a product in the subnormal range rounds absolutely).
fn probs_tolerance(vocab: usize) -> (f64, f64) {
    let (block, _) = ops::sample_launch_config(vocab);
    let chunk = vocab.div_ceil(block as usize) as f64;
    ((chunk - 1.0 + 10.0 + 1.0 + 4.0) * EPS, 2.0 * f32::from_bits(1) as f64)
}

/// The first token whose kernel probability is not exactly `fl(e_j · p_top)` (see the file docs).
fn exact_probs_mismatch(processed: &[f32], probs: &[f32]) -> Option<(usize, f32, f32)> {
    let m = processed.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let top = processed.iter().position(|&x| x == m)?;
    let inv = probs[top];
    processed.iter().zip(probs).enumerate().find_map(|(j, (&x, &p))| {
        let want = (x - m).exp() * inv;
        (p.to_bits() != want.to_bits()).then_some((j, p, want))
    })
}

/// Relative distance (as a fraction of the total) of the closest float-sensitive decision of a
/// request to its threshold, per the Cpu reference: the draw's target against the CDF boundaries,
/// min_p's `exp(x − max)` against min_p, and top_p's cumulative mass against its cut.
fn decision_margin(st: &SamplerStages, s: &SamplerSettings, step: u32) -> f64 {
    let mut margin = f64::INFINITY;
    let m = st.processed.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let w: Vec<u64> = st.processed.iter().map(|&v| cpu::mass_weight((v - m).exp())).collect();
    let total: u64 = w.iter().sum();
    let r = cpu::draw_bits(s.seed, step, 0); // the counter leaves out the batch slot
    let target = ((r as u128 * total as u128) >> 32) as u64;
    let mut cum = 0u64;
    for &wj in &w {
        cum += wj;
        margin = margin.min((cum as f64 - target as f64).abs() / total as f64);
    }
    if s.pipeline == Pipeline::English && s.min_p > 0.0 {
        let tm = st.temp.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for &v in &st.temp {
            margin = margin.min(((v - tm).exp() as f64 - s.min_p as f64).abs() / s.min_p as f64);
        }
    }
    if s.top_p < 1.0 {
        let before = if s.pipeline == Pipeline::English { &st.min_p } else { &st.top_k };
        let bm = before.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let w: Vec<u64> = before.iter().map(|&v| cpu::mass_weight((v - bm).exp())).collect();
        let total: u64 = w.iter().sum();
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by_key(|&j| (cpu::order_key(before[j]), j));
        let cut = (1.0f64 - s.top_p as f64) as f32 as f64 * total as f64;
        let mut cum = 0u64;
        for j in order {
            cum += w[j];
            margin = margin.min((cum as f64 - cut).abs() / total as f64);
        }
    }
    margin
}

/// Logits of one step for `n` requests: several shapes of distribution, chosen per request.
fn make_logits(seed: u64, n: usize, vocab: usize, peaks: &[Option<usize>]) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * n * vocab);
    for q in 0..n {
        let s = seed.wrapping_add(q as u64 * 7919);
        let kind = (s % 6) as usize;
        let mut c = random_f32(s, vocab, 2.5);
        let mut u: Vec<f32> = random_f32(s + 1, vocab, 0.6).iter().zip(&c).map(|(n, c)| 0.8 * c + n).collect();
        match kind {
            // ties: a few levels only (ties at every threshold), the uncond row equal on half the vocab
            1 => {
                for (j, (c, u)) in c.iter_mut().zip(u.iter_mut()).enumerate() {
                    *c = (*c).round() * 0.5;
                    if j % 2 == 0 {
                        *u = *c;
                    } else {
                        *u = (*u).round() * 0.5;
                    }
                }
            }
            // extreme spread: most tokens underflow (exp of −100s, denormals), ±1e4 magnitudes
            2 => {
                for (j, (c, u)) in c.iter_mut().zip(u.iter_mut()).enumerate() {
                    *c *= 40.0;
                    *u *= 40.0;
                    if j % 97 == 3 {
                        *c = -1.0e4;
                    }
                    if j % 89 == 5 {
                        *u = 1.0e4;
                    }
                }
            }
            // flat: every token ties (uniform; top_p cuts inside one tie group)
            3 => {
                c.fill(0.25);
                u.fill(-0.5);
            }
            // sharp peaks over noise (what T3 logits look like)
            _ => {
                for k in 0..12.min(vocab) {
                    c[(s as usize / 7 + k * 677) % vocab] += 3.0 + 0.45 * k as f32;
                }
            }
        }
        if let Some(t) = peaks.get(q).copied().flatten() {
            // drawn with certainty: every other token ends up > 700 below it (exp underflows to 0)
            c[t] = c.iter().chain(&u).fold(0.0f32, |a, &b| a.max(b.abs())) + 3000.0;
            u[t] = c[t];
        }
        out.extend_from_slice(&c);
        out.extend_from_slice(&u);
    }
    out
}

fn settings_menu(seed: u64) -> Vec<SamplerSettings> {
    let e = SamplerSettings { seed, ..SamplerSettings::ENGLISH_DEFAULT };
    let t = SamplerSettings {
        pipeline: Pipeline::Turbo,
        temperature: 0.8,
        cfg_weight: 0.0,
        repetition_penalty: 1.2,
        min_p: 0.0,
        top_p: 0.95,
        top_k: 50,
        seed,
    };
    vec![
        e,
        SamplerSettings { top_p: 0.9, ..e },
        SamplerSettings { top_k: 5, ..e },
        SamplerSettings { temperature: 1.0, repetition_penalty: 1.0, min_p: 0.0, top_p: 1.0, ..e },
        SamplerSettings { top_p: 0.5, top_k: 20, min_p: 0.01, ..e },
        SamplerSettings { temperature: 1.3, cfg_weight: 1.0, min_p: 0.0, top_p: 0.7, repetition_penalty: 2.0, ..e },
        t,
        SamplerSettings { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, ..t },
        SamplerSettings { top_p: 0.0, ..e },
        SamplerSettings { top_k: 1, min_p: 0.0, ..e },
        SamplerSettings { min_p: 1.0, ..e }, // keeps exactly the tokens tied at the max (exp(0) == 1 is not < 1)
        // CFG weights whose product rounds (0.5 and 1 are exact): shows a fused multiply-add
        SamplerSettings { cfg_weight: 0.3, temperature: 0.7, min_p: 0.0, ..e },
        SamplerSettings { cfg_weight: 0.7, top_p: 0.8, ..e },
        SamplerSettings { temperature: 0.5, min_p: 0.0, top_p: 0.999, top_k: 3, ..t },
    ]
}

/// A batch of `n` requests with mixed settings, histories and states (some already done, one about
/// to run out of history room, one at max_new_tokens, one with an invalid hist_len).
fn make_batch(seed: u64, n: usize, vocab: usize, max_hist: usize) -> Batch {
    let menu = settings_menu(0);
    let mut b =
        Batch { vocab, max_hist, settings: Vec::new(), history: vec![0; n * max_hist], state: Vec::new(), next: vec![-5; n] };
    let bos = (vocab as i32 - 1).max(0);
    for q in 0..n {
        let s = seed.wrapping_add(q as u64 * 104_729);
        let seed_q = s.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
        b.settings.push(SamplerSettings { seed: seed_q, ..menu[(s as usize / 3 + q) % menu.len()] });
        let len = 1 + (s % 12) as usize;
        let row = &mut b.history[q * max_hist..(q + 1) * max_hist];
        row.copy_from_slice(&random_i32(s + 5, max_hist, 0, vocab as i32));
        row[0] = bos;
        if q % 5 == 4 && len > 3 {
            row[2] = row[1]; // a repeat: penalised once
            row[3] = -1; // out of range: ignored
        }
        let st = match q % 9 {
            0 => SamplerState { done: DONE_STOP, ..SamplerState::new(50, 3) },
            3 => SamplerState { hist_len: max_hist as i32 - 2, ..SamplerState::new(1000, -1) }, // 1 more, then full
            5 => SamplerState { hist_len: 4, ..SamplerState::new(3, -1) },                      // at max_new_tokens
            7 if q > 20 => SamplerState { hist_len: 0, ..SamplerState::new(10, -1) },           // invalid
            _ => SamplerState { hist_len: len as i32, ..SamplerState::new(len as i32 + 1 + (q % 3) as i32, -1) },
        };
        b.state.extend_from_slice(&st.row());
    }
    b
}

struct StepCheck<'a> {
    label: &'a str,
    what: String,
    cuda: bool,
}

/// Compares a device's batch after one step with the Cpu's; returns whether to re-sync (Cuda only).
fn check_step(
    c: &StepCheck<'_>,
    before: &Batch,
    want: &Batch,
    got: &Batch,
    logits: &[f32],
    want_probs: &[f32],
    got_probs: &[f32],
) -> bool {
    let (v, mh) = (want.vocab, want.max_hist);
    let (rel, abs) = probs_tolerance(v);
    let mut resync = false;
    for q in 0..want.n() {
        let w = |b: &Batch| (b.state[q * 4..q * 4 + 4].to_vec(), b.next[q], b.history[q * mh..(q + 1) * mh].to_vec());
        let sampled = want.state[q * 4] != before.state[q * 4];
        let what = format!("{}: {} request {q} ({:?})", c.label, c.what, before.settings[q]);
        let prow = &got_probs[q * v..(q + 1) * v];
        if !sampled {
            assert_eq!(w(got), w(want), "{what}: a request that did not sample must only have its done flag set");
            if !c.cuda {
                assert!(prow.iter().all(|p| p.is_nan()), "{what}: probs_out of a done request was written");
            }
            continue;
        }
        let n = before.state[q * 4] as usize;
        let st = cpu::sampler_stages(
            &logits[2 * q * v..(2 * q + 1) * v],
            &logits[(2 * q + 1) * v..(2 * q + 2) * v],
            &before.history[q * mh..q * mh + n],
            &before.settings[q],
        );
        let want_row = &want_probs[q * v..(q + 1) * v];
        let cmp = compare(prow, want_row, rel, abs);
        let removed_ok = st.processed.iter().zip(prow).all(|(x, p)| *x != f32::NEG_INFINITY || *p == 0.0);
        let exact_bad = if c.cuda { None } else { exact_probs_mismatch(&st.processed, prow) };
        if w(got) != w(want) || !cmp.ok() || !removed_ok || exact_bad.is_some() {
            let margin = decision_margin(&st, &before.settings[q], (n - 1) as u32);
            if c.cuda && margin < 1e-5 {
                eprintln!("{what}: differs at a rounding boundary (margin {margin:e}): accepted on a GPU, re-syncing");
                resync = true;
                continue;
            }
            assert_eq!(w(got), w(want), "{what}: state, next_token, history (decision margin {margin:e})");
            assert!(removed_ok, "{what}: nonzero probability for a token the reference removed");
            assert!(cmp.ok(), "{what}: probs_out: {cmp:?} (rel {rel:e}, abs {abs:e})");
            if let Some((j, got_p, want_p)) = exact_bad {
                panic!(
                    "{what}: probs_out[{j}] = {got_p:e}, but e_j · p_top = {want_p:e} (the processed logit or its removal differs)"
                );
            }
        }
    }
    resync
}

fn run_decode(seed: u64, vocab: usize, n: usize, steps: usize) {
    let max_hist = 16;
    let cpu_dev = Device::cpu();
    let batch0 = make_batch(seed, n, vocab, max_hist);
    for (label, dev) in kernel_devices() {
        let cuda = dev.kind() == BackendKind::Cuda;
        let mut want_dev = OnDevice::new(&cpu_dev, &batch0);
        let mut got_dev = OnDevice::new(&dev, &batch0);
        let mut before = batch0.clone();
        let mut counts = [0usize; 4];
        for step in 0..steps {
            // at step 1, make the first still-running request draw its stop token with certainty
            let mut peaks = vec![None; n];
            if step == 1 {
                let q = (0..n).find(|&q| before.state[q * 4 + 1] == DONE_RUNNING && before.state[q * 4] >= 1).unwrap();
                let stop = (seed as usize + 11) % vocab;
                before.state[q * 4 + 3] = stop as i32;
                want_dev.resync(&before);
                got_dev.resync(&before);
                peaks[q] = Some(stop);
            }
            let logits = make_logits(seed.wrapping_add(1000 * step as u64 + 1), n, vocab, &peaks);
            let want_probs = want_dev.step(&cpu_dev, vocab, &logits);
            let got_probs = got_dev.step(&dev, vocab, &logits);
            let want = want_dev.read(&before);
            let got = got_dev.read(&before);
            let c = StepCheck { label: &label, what: format!("V {vocab} step {step} seed {seed}"), cuda };
            if check_step(&c, &before, &want, &got, &logits, &want_probs, &got_probs) {
                got_dev.resync(&want);
            }
            if step == 1 {
                let q = peaks.iter().position(Option::is_some).unwrap();
                assert_eq!(want.state[q * 4 + 1], DONE_STOP, "{label}: the stop token must finish request {q}");
            }
            for q in 0..n {
                if want.state[q * 4 + 1] != before.state[q * 4 + 1] {
                    counts[want.state[q * 4 + 1] as usize] += 1;
                }
            }
            before = want;
        }
        // every way of finishing happened at least once
        assert!(counts[DONE_STOP as usize] >= 1 && counts[DONE_MAX_TOKENS as usize] >= 1, "{label}: finishes {counts:?}");
        if n > 21 {
            assert!(counts[DONE_ERROR as usize] >= 1, "{label}: finishes {counts:?}");
        }
        eprintln!(
            "{label}: V {vocab}: {n} requests x {steps} steps agree (finished: stop {}, max {}, error {})",
            counts[1], counts[2], counts[3]
        );
    }
}

#[test]
fn sampler_matches_cpu_vocab_8194() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    run_decode(seed, 8194, 9, 3);
}

#[test]
fn sampler_matches_cpu_vocab_401() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    run_decode(seed, 401, 23, 4);
}

#[test]
fn sampler_matches_cpu_vocab_33() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    run_decode(seed, 33, 40, 5);
}

#[test]
fn sampler_handles_a_single_token_vocab() {
    let seed = fresh_seed();
    run_decode(seed, 1, 11, 2);
}

/// Upper critical value of the chi-square distribution with `df` degrees of freedom at significance
/// 1e-6 (Wilson–Hilferty; within ~1% of the exact quantile for df >= 3). A correct sampler fails a
/// test with probability 1e-6; a token probability off by a few percent fails it almost surely at
/// the sample sizes used.
fn chi2_critical_1e6(df: usize) -> f64 {
    let z = 4.753_424; // upper 1e-6 quantile of N(0, 1)
    let d = df as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Chi-square statistic of `counts` against probabilities `p` (tokens with p = 0 must have count 0).
fn chi2(counts: &[usize], p: &[f32], what: &str) -> (f64, usize) {
    let n: usize = counts.iter().sum();
    let (mut stat, mut df) = (0.0, 0usize);
    for (j, (&c, &pj)) in counts.iter().zip(p).enumerate() {
        if pj == 0.0 {
            assert_eq!(c, 0, "{what}: token {j} was removed but drawn {c} times");
            continue;
        }
        let e = n as f64 * pj as f64;
        assert!(e >= 5.0, "{what}: expected count {e} of token {j} too small for a chi-square test");
        stat += (c as f64 - e).powi(2) / e;
        df += 1;
    }
    (stat, df - 1)
}

fn stat_logits() -> (Vec<f32>, Vec<f32>) {
    let c = vec![0.0, 0.3, -0.5, 1.2, 0.9, -2.0, 0.1, 0.7, -0.2, 1.5, -1.0, 0.4, -4.0];
    let u: Vec<f32> = c.iter().map(|x| 0.5 * x - 0.1).collect();
    (c, u)
}

fn stat_settings() -> SamplerSettings {
    // CFG, a penalised token, temperature, min_p and top_p all shape the distribution
    SamplerSettings {
        temperature: 0.9,
        cfg_weight: 0.3,
        repetition_penalty: 1.3,
        min_p: 0.04,
        top_p: 0.93,
        ..SamplerSettings::ENGLISH_DEFAULT
    }
}

#[test]
fn cpu_draws_follow_the_processed_probabilities() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (c, u) = stat_logits();
    let s = SamplerSettings { seed, ..stat_settings() };
    let hist = [12, 3];
    let st = cpu::sampler_stages(&c, &u, &hist, &s);
    assert!(st.probs.iter().filter(|&&p| p == 0.0).count() >= 2, "the settings must remove some tokens: {:?}", st.probs);
    let mut counts = vec![0usize; c.len()];
    for i in 0..200_000u32 {
        // vary both counter words: steps of one request, and requests of one step
        let (step, q) = (i % 1000, i / 1000);
        counts[cpu::draw_token(&st.processed, s.seed, step, q).unwrap()] += 1;
    }
    let (stat, df) = chi2(&counts, &st.probs, "cpu");
    let crit = chi2_critical_1e6(df);
    eprintln!("cpu: chi2 {stat:.2} (df {df}, critical {crit:.2}); counts {counts:?}; probs {:?}", st.probs);
    assert!(stat < crit, "cpu draws: chi2 {stat} >= {crit} (df {df})");
}

#[test]
fn kernel_draws_follow_the_processed_probabilities() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (c, u) = stat_logits();
    let v = c.len();
    let Some((label, dev)) = kernel_devices().into_iter().next() else { return };
    let (n, steps, max_hist) = (128usize, 24usize, 32usize);
    let base = SamplerSettings { seed, ..stat_settings() };
    let settings: Vec<SamplerSettings> = (0..n).map(|q| SamplerSettings { seed: seed ^ ((q as u64) << 40), ..base }).collect();
    let sf: Vec<f32> = settings.iter().flat_map(|s| s.f32_row()).collect();
    let sft = Tensor::from_f32(&dev, DType::F32, &[n, 8], &sf).unwrap();
    let mut hist0 = vec![0i32; n * max_hist];
    for q in 0..n {
        hist0[q * max_hist] = 12;
    }
    let logits: Vec<f32> = (0..n).flat_map(|_| c.iter().chain(&u).copied()).collect();
    let lt = Tensor::from_f32(&dev, DType::F32, &[2 * n, v], &logits).unwrap();
    let mut counts = vec![0usize; v];
    let mut next = Tensor::uninit(&dev, DType::I32, &[n]).unwrap();
    let mut ht = Tensor::from_i32(&dev, &[n, max_hist], &hist0).unwrap();
    let st: Vec<i32> = (0..n).flat_map(|_| SamplerState::new(10_000, -1).row()).collect();
    let mut state = Tensor::from_i32(&dev, &[n, 4], &st).unwrap();
    // the history grows, so the penalty changes the distribution every step: to draw from one fixed
    // distribution, reset the history length (the step counter of the draw is hist_len − 1)
    let stages = cpu::sampler_stages(&c, &u, &[12], &base);
    for step in 0..steps {
        let st: Vec<i32> = (0..n).flat_map(|_| SamplerState { hist_len: 1, ..SamplerState::new(10_000, -1) }.row()).collect();
        state.copy_from_i32(&st).unwrap();
        // distinct counters: the seed of request q at this step
        let sf_step: Vec<i32> =
            settings.iter().flat_map(|s| SamplerSettings { seed: s.seed.wrapping_add(step as u64), ..*s }.i32_row()).collect();
        let sit_step = Tensor::from_i32(&dev, &[n, 4], &sf_step).unwrap();
        ops::sample_tokens(lt.view(), sft.view(), sit_step.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None)
            .unwrap();
        for (q, &t) in next.to_i32_vec().unwrap().iter().enumerate() {
            let want = cpu::draw_token(&stages.processed, settings[q].seed.wrapping_add(step as u64), 0, 0).unwrap();
            if dev.kind() == BackendKind::Emu {
                assert_eq!(t as usize, want, "{label}: request {q} step {step}: the kernel's draw differs from the Cpu op's");
            }
            counts[t as usize] += 1;
        }
    }
    let (stat, df) = chi2(&counts, &stages.probs, &label);
    let crit = chi2_critical_1e6(df);
    eprintln!("{label}: chi2 {stat:.2} (df {df}, critical {crit:.2}); counts {counts:?}");
    assert!(stat < crit, "{label}: chi2 {stat} >= {crit} (df {df})");
}

/// A uniform that lands exactly on a CDF boundary takes the next token ("first index whose cumulative
/// probability exceeds u · sum"). With 1024 equal tokens every weight is 2^40, so target =
/// floor(r · 2^50 / 2^32) = r · 2^18 equals the prefix (i + 1) · 2^40 exactly when r = (i + 1) · 2^22:
/// seeds are searched (about 1 in 4 M) until the Philox word is such a multiple.
#[test]
fn a_draw_exactly_on_a_cdf_boundary_takes_the_next_token() {
    let v = 1024usize;
    let mut found = Vec::new();
    let mut seed = fresh_seed();
    eprintln!("search starts at seed {seed}");
    while found.len() < 2 {
        let r = cpu::draw_bits(seed, 0, 0);
        if r != 0 && r.is_multiple_of(1 << 22) {
            found.push((seed, (r >> 22) as usize));
        }
        seed = seed.wrapping_add(1);
    }
    let flat = vec![0.0f32; v];
    let neutral = SamplerSettings {
        temperature: 1.0,
        cfg_weight: 0.0,
        repetition_penalty: 1.0,
        min_p: 0.0,
        top_p: 1.0,
        ..SamplerSettings::ENGLISH_DEFAULT
    };
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    for (seed, want) in found {
        assert_eq!(cpu::draw_token(&flat, seed, 0, 0), Some(want), "cpu reference, seed {seed}");
        let s = SamplerSettings { seed, ..neutral };
        for (label, dev) in &devices {
            let logits = Tensor::from_f32(dev, DType::F32, &[2, v], &vec![0.0; 2 * v]).unwrap();
            let sf = Tensor::from_f32(dev, DType::F32, &[1, 8], &s.f32_row()).unwrap();
            let si = Tensor::from_i32(dev, &[1, 4], &s.i32_row()).unwrap();
            let mut ht = Tensor::from_i32(dev, &[1, 4], &[0, 0, 0, 0]).unwrap();
            let mut state = Tensor::from_i32(dev, &[1, 4], &SamplerState::new(5, -1).row()).unwrap();
            let mut next = Tensor::uninit(dev, DType::I32, &[1]).unwrap();
            ops::sample_tokens(logits.view(), sf.view(), si.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None)
                .unwrap();
            assert_eq!(next.to_i32_vec().unwrap(), [want as i32], "{label}: seed {seed}: boundary draw");
        }
    }
}

/// Runs one request (history = [BOS]) on `dev` and returns (token, probs_out).
fn one_request(dev: &Device, cond: &[f32], uncond: &[f32], s: &SamplerSettings, slot: usize, n_req: usize) -> (i32, Vec<f32>) {
    let v = cond.len();
    let mut logits = vec![0.0f32; 2 * n_req * v];
    logits[2 * slot * v..(2 * slot + 1) * v].copy_from_slice(cond);
    logits[(2 * slot + 1) * v..(2 * slot + 2) * v].copy_from_slice(uncond);
    let lt = Tensor::from_f32(dev, DType::F32, &[2 * n_req, v], &logits).unwrap();
    let other = SamplerSettings { seed: s.seed ^ 0xabc, ..*s };
    let all: Vec<SamplerSettings> = (0..n_req).map(|q| if q == slot { *s } else { other }).collect();
    let sf: Vec<f32> = all.iter().flat_map(|s| s.f32_row()).collect();
    let si: Vec<i32> = all.iter().flat_map(|s| s.i32_row()).collect();
    let sft = Tensor::from_f32(dev, DType::F32, &[n_req, 8], &sf).unwrap();
    let sit = Tensor::from_i32(dev, &[n_req, 4], &si).unwrap();
    let mut ht = Tensor::zeros(dev, DType::I32, &[n_req, 4]).unwrap();
    let st: Vec<i32> = (0..n_req).flat_map(|_| SamplerState::new(5, -1).row()).collect();
    let mut state = Tensor::from_i32(dev, &[n_req, 4], &st).unwrap();
    let mut next = Tensor::uninit(dev, DType::I32, &[n_req]).unwrap();
    let mut probs = Tensor::uninit(dev, DType::F32, &[n_req, v]).unwrap();
    ops::sample_tokens(
        lt.view(),
        sft.view(),
        sit.view(),
        ht.view_mut(),
        state.view_mut(),
        next.view_mut(),
        Some(probs.view_mut()),
    )
    .unwrap();
    (next.to_i32_vec().unwrap()[slot], probs.to_f32_vec().unwrap()[slot * v..(slot + 1) * v].to_vec())
}

/// top_p cutting inside one tie group, exactly on a token's cumulative mass: 64 equal tokens, so
/// token i (stable ascending order = index order) has cumulative probability (i + 1)/64, and HF
/// removes `cumulative <= 1 − top_p`. top_p 0.5 removes exactly 32 (cumulative 32/64 == 0.5 is
/// removed), 0.75 removes 16, 0.3 (1 − 0.3 = 0.7 in f32 is 0.69999999) removes 44.
#[test]
fn top_p_cut_exactly_on_a_tie_matches_a_stable_sort() {
    let v = 64usize;
    let flat = vec![0.5f32; v];
    let neutral = SamplerSettings {
        temperature: 1.0,
        cfg_weight: 0.0,
        repetition_penalty: 1.0,
        min_p: 0.0,
        ..SamplerSettings::ENGLISH_DEFAULT
    };
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    for (top_p, removed) in [(0.5f32, 32usize), (0.75, 16), (0.3, 44)] {
        let s = SamplerSettings { top_p, seed: fresh_seed(), ..neutral };
        let st = cpu::sampler_stages(&flat, &flat, &[0], &s);
        let want: Vec<f32> = (0..v).map(|j| if j < removed { 0.0 } else { 1.0 / (v - removed) as f32 }).collect();
        assert_eq!(st.processed.iter().filter(|x| **x == f32::NEG_INFINITY).count(), removed, "cpu stages, top_p {top_p}");
        for (label, dev) in &devices {
            let (tok, probs) = one_request(dev, &flat, &flat, &s, 0, 1);
            assert_eq!(probs, want, "{label}: top_p {top_p}");
            assert!(tok as usize >= removed, "{label}: top_p {top_p}: drew removed token {tok}");
        }
    }
}

/// The draw's counter is (step, 0, 0, 0): a request draws the same token in any batch slot.
#[test]
fn a_request_draws_the_same_token_in_any_batch_slot() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let v = 301usize;
    let c = random_f32(seed, v, 2.0);
    let u = random_f32(seed + 1, v, 2.0);
    let s = SamplerSettings { seed, min_p: 0.0, temperature: 1.5, ..SamplerSettings::ENGLISH_DEFAULT };
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let (want, _) = one_request(&devices[0].1, &c, &u, &s, 0, 1);
    for (label, dev) in &devices {
        for (slot, n_req) in [(0, 1), (3, 4), (6, 7)] {
            assert_eq!(one_request(dev, &c, &u, &s, slot, n_req).0, want, "{label}: slot {slot} of {n_req}");
        }
    }
}

#[test]
fn op_rejects_bad_shapes_dtypes_and_settings() {
    let dev = Device::cpu();
    let lt = Tensor::zeros(&dev, DType::F32, &[4, 10]).unwrap();
    let s = SamplerSettings::ENGLISH_DEFAULT;
    let sf = Tensor::from_f32(&dev, DType::F32, &[2, 8], &[s.f32_row(), s.f32_row()].concat()).unwrap();
    let si = Tensor::from_i32(&dev, &[2, 4], &[s.i32_row(), s.i32_row()].concat()).unwrap();
    let mut ht = Tensor::zeros(&dev, DType::I32, &[2, 5]).unwrap();
    let mut state = Tensor::from_i32(&dev, &[2, 4], &[1, 0, 3, -1, 1, 0, 3, -1]).unwrap();
    let mut next = Tensor::zeros(&dev, DType::I32, &[2]).unwrap();
    let bad_logits = Tensor::zeros(&dev, DType::F32, &[3, 10]).unwrap();
    let e = ops::sample_tokens(bad_logits.view(), sf.view(), si.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None);
    assert!(e.unwrap_err().to_string().contains("logits"));
    let mut bad_probs = Tensor::zeros(&dev, DType::F32, &[2, 9]).unwrap();
    let e = ops::sample_tokens(
        lt.view(),
        sf.view(),
        si.view(),
        ht.view_mut(),
        state.view_mut(),
        next.view_mut(),
        Some(bad_probs.view_mut()),
    );
    assert!(e.unwrap_err().to_string().contains("probs_out"));
    let mut f_state = Tensor::zeros(&dev, DType::F32, &[2, 4]).unwrap();
    let e = ops::sample_tokens(lt.view(), sf.view(), si.view(), ht.view_mut(), f_state.view_mut(), next.view_mut(), None);
    assert!(e.unwrap_err().to_string().contains("state"));
    let bad = SamplerSettings { temperature: -1.0, ..s };
    let bsf = Tensor::from_f32(&dev, DType::F32, &[2, 8], &[s.f32_row(), bad.f32_row()].concat()).unwrap();
    let e = ops::sample_tokens(lt.view(), bsf.view(), si.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None);
    assert!(e.unwrap_err().to_string().contains("request 1: temperature"));
    assert_eq!(state.to_i32_vec().unwrap(), [1, 0, 3, -1, 1, 0, 3, -1], "an error must leave the state alone");
    ops::sample_tokens(lt.view(), sf.view(), si.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None).unwrap();
    assert_eq!(state.to_i32_vec().unwrap()[0], 2);
}

/// The settings layout the kernel reads is the one SamplerSettings writes (seed bits unchanged).
#[test]
fn settings_rows_store_ints_and_seed_bit_exactly() {
    let s = SamplerSettings {
        top_k: 123_456,
        seed: u64::MAX - 12_345,
        pipeline: Pipeline::Turbo,
        ..SamplerSettings::ENGLISH_DEFAULT
    };
    let row = s.i32_row();
    assert_eq!(row[0], 123_456);
    assert_eq!(row[1], 1);
    assert_eq!((row[2] as u32 as u64) | ((row[3] as u32 as u64) << 32), u64::MAX - 12_345);
    assert_eq!(SamplerSettings::from_rows(&s.f32_row(), &row), s);
}
