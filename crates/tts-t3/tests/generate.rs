//! Batched generation on a tiny random T3 (a parity fixture's model): batching, slot replacement,
//! per-request stopping, and graph replay.
use std::path::{Path, PathBuf};

use tts_kernels::{BackendKind, Device, EmuOptions};
use tts_t3::{Error, Finished, Generator, Request, SamplerSettings, T3, Voice};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/t3_decode_teacher_forced_a")
}

fn request(model: &T3, seed: u64, max_new_tokens: usize, text_len: usize) -> Request {
    let c = &model.config();
    let mut text: Vec<u32> =
        (0..text_len as u32).map(|i| 3 + (i * 7 + seed as u32) % (c.text_tokens_dict_size as u32 - 3)).collect();
    text.insert(0, c.start_text_token);
    text.push(c.stop_text_token);
    Request {
        text_tokens: text,
        voice: Voice {
            speaker_emb: (0..c.speaker_embed_size).map(|i| ((i as f32) * 0.37).sin() * 0.1).collect(),
            prompt_tokens: (0..20u32).map(|i| (i * 13 + seed as u32) % c.start_speech_token).collect(),
        },
        exaggeration: 0.5,
        settings: SamplerSettings { max_new_tokens, seed, ..SamplerSettings::default() },
    }
}

/// Requests of `(seed, max_new_tokens, text_len)`.
fn requests(model: &T3, specs: &[(u64, usize, usize)]) -> Vec<Request> {
    specs.iter().map(|&(seed, max_new, text)| request(model, seed, max_new, text)).collect()
}

/// Each request alone, then all of them through 2 slots (slots refilled while the others keep
/// decoding): the same tokens. Returns the requests' results alone.
fn assert_batched_equals_alone(model: &T3, reqs: &[Request], label: &str) -> Vec<Finished> {
    let alone: Vec<Finished> = reqs.iter().map(|r| run(model, std::slice::from_ref(r), 1, 1).remove(0)).collect();
    let batched = run(model, reqs, 2, 3);
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert!(!a.raw.is_empty(), "{label}: request {i} generated nothing");
        assert_eq!(a.raw, b.raw, "{label}: request {i}: batched tokens differ from the request alone");
    }
    alone
}

fn run(model: &T3, reqs: &[Request], max_batch: usize, poll_every: usize) -> Vec<Finished> {
    let mut g = Generator::new(model, max_batch, 128, 40).unwrap();
    g.run(reqs, poll_every).unwrap()
}

/// `reqs` through `g` one eager step at a time (no graph), finished requests in id order.
fn run_eager(mut g: Generator, reqs: &[Request]) -> Vec<Finished> {
    for r in reqs {
        g.add(r).unwrap();
    }
    let mut done = Vec::new();
    while g.active() > 0 {
        g.step_eager().unwrap();
        done.extend(g.poll().unwrap());
    }
    done.sort_by_key(|f| f.id);
    done
}

#[test]
fn a_batch_equals_one_request_at_a_time_with_slot_replacement() {
    let model = T3::load(&model_dir(), &Device::cpu()).unwrap();
    let reqs = requests(&model, &[(1, 12, 9), (2, 30, 14), (3, 5, 4), (4, 20, 11), (5, 17, 7)]);
    let alone = assert_batched_equals_alone(&model, &reqs, "cpu");
    // 9 slots (18 rows) take the unfused decode stack (above FUSED_DECODE_MAX_ROWS); on Cpu both
    // stacks compute the same sums, so the tokens are the same
    const { assert!(2 * 9 > tts_t3::FUSED_DECODE_MAX_ROWS) };
    let wide = run(&model, &reqs, 9, 3);
    for (i, (a, b)) in alone.iter().zip(&wide).enumerate() {
        assert_eq!(a.raw, b.raw, "request {i}: the unfused decode stack differs from the fused one");
    }
    for (r, f) in reqs.iter().zip(&alone) {
        assert!(!f.raw.is_empty() && f.raw.len() <= r.settings.max_new_tokens, "{f:?}");
        if !f.stopped_on_stop_token {
            assert_eq!(f.raw.len(), r.settings.max_new_tokens, "a request stops at its own maximum");
        }
    }
}

/// `cpu-bf16` (bf16 weights and KV cache): the cache is bf16 (f32 on `cpu`), and a batch with slot
/// replacement gives each request's tokens alone. (Its values against the reference: the parity
/// cases on the `cpu-bf16` backend.)
#[test]
fn on_cpu_bf16_the_cache_is_bf16_and_a_batch_equals_one_request_at_a_time() {
    let dev = Device::cpu_bf16_weights();
    let model = T3::load(&model_dir(), &dev).unwrap();
    let cache = tts_t3::KvCache::new(model.config(), &dev, 2, 16).unwrap();
    assert_eq!(cache.dtype(), tts_kernels::DType::BF16);
    let f32_cache = tts_t3::KvCache::new(model.config(), &Device::cpu(), 2, 16).unwrap();
    assert_eq!(f32_cache.dtype(), tts_kernels::DType::F32);
    let reqs = requests(&model, &[(41, 12, 9), (42, 25, 14), (43, 5, 4), (44, 18, 11), (45, 9, 7)]);
    assert_batched_equals_alone(&model, &reqs, "cpu-bf16");
}

#[test]
fn a_request_stops_on_its_stop_token_and_post_processing_cuts_there() {
    let model = T3::load(&model_dir(), &Device::cpu()).unwrap();
    let free = run(&model, &[request(&model, 7, 20, 8)], 1, 1).remove(0);
    assert!(free.raw.len() >= 4, "{free:?}");
    // make the first token from the 4th on that was not drawn before the stop token: the same
    // draws then stop right there
    let k = (3..free.raw.len())
        .find(|&k| !free.raw[..k].contains(&free.raw[k]))
        .unwrap_or_else(|| panic!("20 draws repeat their first 3 tokens only: {:?}", free.raw));
    let mut r = request(&model, 7, 20, 8);
    r.settings.stop_token = Some(free.raw[k]);
    let f = run(&model, &[r], 1, 2).remove(0);
    assert!(f.stopped_on_stop_token);
    assert_eq!(f.raw, free.raw[..=k].to_vec());
    // what follows a sampled BOS, below the BOS id
    let bos = model.config().start_speech_token;
    let begin = free.raw[..k].iter().position(|&t| t == bos).map_or(0, |i| i + 1);
    assert_eq!(f.tokens, free.raw[begin..k].iter().copied().filter(|&t| t < bos).collect::<Vec<_>>());
}

/// `T3Config::kv_positions` is exactly what a request needs: a generator of that many positions
/// runs it to its `max_new_tokens` (same tokens as with room to spare), one fewer is refused.
#[test]
fn kv_positions_is_the_exact_cache_length_a_request_needs() {
    let seed = tts_kernels::testing::fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_backends());
    for (label, dev) in devices {
        let model = T3::load(&model_dir(), &dev).unwrap();
        let vocab = model.config().speech_tokens_dict_size as u32;
        for (max_new, text) in [(1, 3), (9, 5), (17, 11)] {
            eprintln!("{label}: max_new {max_new}, text {text}");
            let mut r = request(&model, seed, max_new, text);
            let need = model.config().kv_positions(r.text_tokens.len(), max_new);
            assert_eq!(need, model.config().prefill_positions(r.text_tokens.len()) + max_new);
            let run_with = |r: &Request, max_len: usize| {
                Generator::new(&model, 1, max_len, max_new).unwrap().run(std::slice::from_ref(r), 1).unwrap().remove(0)
            };
            // a stop token this request never draws (the draws do not depend on it): it runs to max_new
            let mut roomy = run_with(&r, need + 7);
            for _ in 0..10 {
                if !roomy.stopped_on_stop_token {
                    break;
                }
                r.settings.stop_token = (0..vocab).find(|t| !roomy.raw.contains(t));
                roomy = run_with(&r, need + 7);
            }
            assert!(!roomy.stopped_on_stop_token && roomy.raw.len() == max_new, "{roomy:?}");
            let exact = run_with(&r, need);
            assert_eq!(exact.raw, roomy.raw, "max_new {max_new}: the exact cache changed the tokens");
            let err = Generator::new(&model, 1, need - 1, max_new).unwrap().add(&r).unwrap_err();
            assert!(matches!(err, tts_t3::Error::TooLong { len, max, .. } if len == need && max == need - 1), "{label}: {err}");
        }
    }
}

#[test]
fn bad_requests_are_errors() {
    let model = T3::load(&model_dir(), &Device::cpu()).unwrap();
    let mut g = Generator::new(&model, 1, 64, 10).unwrap();
    let mut r = request(&model, 1, 5, 4);
    r.settings.temperature = 0.0;
    assert!(matches!(g.add(&r), Err(Error::Input { field: "temperature", .. })));
    let r = request(&model, 1, 11, 4);
    assert!(matches!(g.add(&r), Err(Error::TooLong { len: 11, max: 10, .. })));
    let r = request(&model, 1, 10, 40);
    assert!(matches!(g.add(&r), Err(Error::TooLong { what: "prefill positions and new tokens", .. })));
    let mut r = request(&model, 1, 5, 4);
    r.text_tokens.push(100_000);
    assert!(matches!(g.add(&r), Err(Error::Input { field: "text token", .. })));
    let mut r = request(&model, 1, 5, 4);
    r.settings.stop_token = Some(model.config().speech_tokens_dict_size as u32);
    assert!(matches!(g.add(&r), Err(Error::Input { field: "stop_token", .. })));
    g.add(&request(&model, 1, 5, 4)).unwrap();
    assert!(matches!(g.add(&request(&model, 2, 5, 4)), Err(Error::BatchFull { slots: 1 })));
}

#[test]
fn graph_replay_equals_eager_steps_on_emu() {
    // 2 requests: 4 CFG rows × 2 heads = 8 attention blocks. On the default emulated GPU (132 SMs)
    // the decode attention splits its keys (+1 combine launch per layer); with 8 SMs it does not.
    for sms in [tts_kernels::EMU_DEFAULT_MULTIPROCESSORS, 8] {
        let Ok(dev) = Device::emu(EmuOptions { multiprocessors: sms, ..EmuOptions::default() }) else {
            eprintln!("emu not built: skipped");
            return;
        };
        assert_eq!(dev.kind(), BackendKind::Emu);
        let model = T3::load(&model_dir(), &dev).unwrap();
        let reqs = [request(&model, 11, 9, 6), request(&model, 12, 6, 5)];
        // replayed graph
        let mut g = Generator::new(&model, 2, 96, 12).unwrap();
        let replayed = g.run(&reqs, 2).unwrap();
        let launches = g.launches_per_step().unwrap();
        let names = g.step_kernels().unwrap().to_vec();
        let eager = run_eager(Generator::new(&model, 2, 96, 12).unwrap(), &reqs);
        assert_eq!(replayed, eager, "{sms} SMs: graph replay differs from eager execution");
        let layers = model.config().num_hidden_layers;
        let blocks = 2 * reqs.len() * model.config().num_attention_heads;
        let split = blocks < sms as usize;
        assert_eq!(split, sms == tts_kernels::EMU_DEFAULT_MULTIPROCESSORS, "the test's two cases must cover both paths");
        eprintln!("{sms} SMs: launches per decode step: {launches} for {layers} layers (split attention: {split})");
        // per layer: rmsnorm_linear (QKV), rope_attention_decode (+ attention_cached_combine when split),
        // linear_add_residual (o), rmsnorm_linear_swiglu, linear_add_residual (down); per step:
        // embed, final norm + head, sampler, state advance
        let per_layer = if split { 6 } else { 5 };
        assert_eq!(launches, per_layer * layers + 4, "{sms} SMs: launches per decode step");
        let combines = names.iter().filter(|&&n| n == "attention_cached_combine_bf16").count();
        assert_eq!(combines, if split { layers } else { 0 }, "{sms} SMs: {names:?}");
    }
}

/// The kernel backends of this build and machine: Emu (8 emulated SMs, so that no decode step splits
/// its keys and a row's sums do not depend on the batch) and Cuda when usable (`TTS_REQUIRE_CUDA=1`:
/// required). On Cuda the decode attention splits by occupancy, so a row alone and the same row in a
/// batch may differ in the last bits of a logit; a sampled token flips only if the Philox draw lands
/// within that distance of a cumulative-probability boundary (~1e-6 per step).
fn kernel_backends() -> Vec<(String, Device)> {
    let mut out = Vec::new();
    match Device::emu(EmuOptions { multiprocessors: 8, ..EmuOptions::default() }) {
        Ok(d) => out.push(("emu".to_string(), d)),
        Err(e) => eprintln!("emu: skipped ({e})"),
    }
    match Device::cuda(0) {
        Ok(d) => out.push((d.describe(), d)),
        Err(e) if std::env::var("TTS_REQUIRE_CUDA").is_ok_and(|v| v == "1") => {
            panic!("TTS_REQUIRE_CUDA=1 but the Cuda backend is unavailable: {e}")
        }
        Err(e) => eprintln!("cuda: skipped ({e})"),
    }
    out
}

#[test]
fn on_kernel_backends_replay_equals_eager_and_a_batch_with_slot_replacement_equals_alone() {
    for (label, dev) in kernel_backends() {
        let model = T3::load(&model_dir(), &dev).unwrap();
        let reqs: Vec<Request> = [(21, 10, 9), (22, 16, 12), (23, 4, 5), (24, 12, 8)]
            .iter()
            .map(|&(seed, max_new, text)| request(&model, seed, max_new, text))
            .collect();
        // graph replay (Generator::run captures the step once and replays it) == eager steps, bit for bit
        let eager = run_eager(Generator::new(&model, 2, 128, 40).unwrap(), &reqs[..2]);
        let replayed = run(&model, &reqs[..2], 2, 1);
        assert_eq!(replayed, eager, "{label}: graph replay differs from eager execution");
        // 2 slots for 4 requests (slots refilled while others decode) == each request alone
        let alone: Vec<Finished> = reqs.iter().map(|r| run(&model, std::slice::from_ref(r), 1, 1).remove(0)).collect();
        let batched = run(&model, &reqs, 2, 3);
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            assert_eq!(a.raw, b.raw, "{label}: request {i}: batched tokens differ from the request alone");
        }
        // 9 slots (18 rows) take the unfused decode stack (GEMMs; on kernel backends it rounds the o and
        // down projections to bf16 where the fused one does not, so it is compared with itself): the
        // same requests in the opposite order, in other slots beside other rows, give the same tokens
        let wide_reqs: Vec<Request> = (0..9).map(|i| request(&model, 30 + i, 6, 4 + i as usize)).collect();
        let wide = run(&model, &wide_reqs, 9, 2);
        let reversed: Vec<Request> = wide_reqs.iter().rev().cloned().collect();
        let mut wide_rev = run(&model, &reversed, 9, 2);
        wide_rev.reverse();
        for (i, (a, b)) in wide.iter().zip(&wide_rev).enumerate() {
            assert_eq!(a.raw, b.raw, "{label}: request {i} in a batch of 9 (unfused stack) depends on its slot and companions");
        }
    }
}
