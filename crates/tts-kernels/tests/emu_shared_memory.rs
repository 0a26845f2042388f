//! Shared memory at launch (issue 12 §4.5) with a real kernel: the sampler's history bitmap is
//! V/8 bytes of dynamic shared memory next to the kernel's static scratch. At the T3 vocabulary
//! (8194) that is far below 48 KiB; at the largest vocabulary the op accepts the bitmap alone is
//! 48 KiB, so static + dynamic pass 48 KiB and the launch code must opt in (Emu refuses the launch
//! otherwise, as a GPU would). Every kernel device of the build runs one step, twice (the first
//! launch of a fresh Emu device learns the static size, the second goes through the launch code's
//! own opt-in), against the Cpu op.
use tts_kernels::ops::{self, SAMPLE_MAX_VOCAB, SamplerSettings, SamplerState};
use tts_kernels::testing::{compare, fresh_seed, kernel_devices, random_f32, random_i32};
use tts_kernels::{BackendKind, DType, Device, Error, SHARED_MEM_DEFAULT_LIMIT, Tensor};

const EPS: f64 = 1.0 / (1u64 << 24) as f64;

/// One sampler step of `n` requests: (history, state, next_token, probs) after it.
struct Step {
    history: Vec<i32>,
    state: Vec<i32>,
    next: Vec<i32>,
    probs: Vec<f32>,
}

struct Case {
    vocab: usize,
    max_hist: usize,
    logits: Vec<f32>,
    settings: Vec<SamplerSettings>,
    history: Vec<i32>,
    state: Vec<i32>,
}

fn case(seed: u64, vocab: usize) -> Case {
    let n = 2;
    let max_hist = 16;
    let e = SamplerSettings { seed, ..SamplerSettings::ENGLISH_DEFAULT };
    let settings = vec![e, SamplerSettings { top_k: 50, top_p: 0.9, seed: seed ^ 0x5555, ..e }];
    let mut history = random_i32(seed + 1, n * max_hist, 0, vocab as i32);
    history[0] = vocab as i32 - 1;
    history[max_hist] = vocab as i32 - 1;
    let state: Vec<i32> =
        (0..n).flat_map(|q| SamplerState { hist_len: 3 + q as i32, ..SamplerState::new(10, -1) }.row()).collect();
    Case { vocab, max_hist, logits: random_f32(seed + 2, 2 * n * vocab, 2.0), settings, history, state }
}

fn step(dev: &Device, c: &Case) -> tts_kernels::Result<Step> {
    let n = c.settings.len();
    let sf: Vec<f32> = c.settings.iter().flat_map(|s| s.f32_row()).collect();
    let si: Vec<i32> = c.settings.iter().flat_map(|s| s.i32_row()).collect();
    let lt = Tensor::from_f32(dev, DType::F32, &[2 * n, c.vocab], &c.logits)?;
    let st = Tensor::from_f32(dev, DType::F32, &[n, 8], &sf)?;
    let sit = Tensor::from_i32(dev, &[n, 4], &si)?;
    let mut hist = Tensor::from_i32(dev, &[n, c.max_hist], &c.history)?;
    let mut state = Tensor::from_i32(dev, &[n, 4], &c.state)?;
    let mut next = Tensor::from_i32(dev, &[n], &[-5, -5])?;
    let mut probs = Tensor::uninit(dev, DType::F32, &[n, c.vocab])?;
    ops::sample_tokens(
        lt.view(),
        st.view(),
        sit.view(),
        hist.view_mut(),
        state.view_mut(),
        next.view_mut(),
        Some(probs.view_mut()),
    )?;
    Ok(Step { history: hist.to_i32_vec()?, state: state.to_i32_vec()?, next: next.to_i32_vec()?, probs: probs.to_f32_vec()? })
}

#[test]
fn the_sampler_runs_at_the_real_and_the_largest_vocabulary() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (_, largest) = ops::sample_launch_config(SAMPLE_MAX_VOCAB);
    assert_eq!(largest, SHARED_MEM_DEFAULT_LIMIT, "the bitmap alone fills 48 KiB: with the static scratch it needs the opt-in");
    for vocab in [8194, SAMPLE_MAX_VOCAB - 37, SAMPLE_MAX_VOCAB] {
        let c = case(seed ^ vocab as u64, vocab);
        let want = step(&Device::cpu(), &c).unwrap();
        // the kernel's f32 sums (see emu_sampling.rs, probs_tolerance)
        let (block, _) = ops::sample_launch_config(vocab);
        let rel = (vocab.div_ceil(block as usize) as f64 + 15.0) * EPS;
        for (label, dev) in kernel_devices() {
            for launch in 0..2 {
                let what = format!("{label}, vocab {vocab}, launch {launch}, seed {seed}");
                let got = step(&dev, &c).unwrap_or_else(|e| panic!("{what}: {e}"));
                let cmp = compare(&got.probs, &want.probs, rel, 2.0 * f32::from_bits(1) as f64);
                assert!(cmp.ok(), "{what}: probabilities {cmp:?}");
                if dev.kind() != BackendKind::Cuda {
                    // Emu: the same expf as the Cpu op, so the same draws
                    assert_eq!((&got.next, &got.state, &got.history), (&want.next, &want.state, &want.history), "{what}");
                }
            }
        }
    }
}

#[test]
fn a_vocabulary_above_the_largest_is_a_clear_error() {
    let c = case(fresh_seed(), SAMPLE_MAX_VOCAB + 1);
    for (label, dev) in std::iter::once(("cpu".to_string(), Device::cpu())).chain(kernel_devices()) {
        match step(&dev, &c) {
            Err(e @ Error::Shape { .. }) => assert!(e.to_string().contains(&SAMPLE_MAX_VOCAB.to_string()), "{label}: {e}"),
            other => panic!("{label}: expected a shape error, got {:?}", other.err()),
        }
    }
}
