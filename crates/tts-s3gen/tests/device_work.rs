//! What one synthesis asks of the device: allocations and host round trips (issue 12 §4.3). The CFM
//! loop and HiFT's stages must neither allocate nor wait for the device from the host, so a
//! synthesis costs the same whatever the number of Euler steps. Counted by `Device::stats` on the
//! tiny random S3Gen of the `s3gen_wav_a` fixture, on Emu (the kernel backends' code path) and Cpu.
mod common;

use common::{Owned, model_dir};
use tts_kernels::testing::fresh_seed;
use tts_kernels::{BackendKind, Device, DeviceStats, EmuOptions};
use tts_s3gen::{FlowRequest, Request, S3Gen};

/// Two requests of different lengths (fresh random tokens, prompt mel and x-vector).
fn owned(seed: u64, vocab: usize, spk: usize) -> Vec<Owned> {
    common::requests(seed, vocab, spk, &[(3, 6, 0), (0, 9, 0)])
}

fn synthesis_stats(model: &S3Gen, reqs: &[Owned], seed: u64, n_steps: usize) -> (DeviceStats, Vec<Vec<f32>>) {
    let r: Vec<Request<'_>> = reqs
        .iter()
        .enumerate()
        .map(|(i, o)| Request {
            flow: FlowRequest { seed: seed + i as u64, ..o.flow() },
            source_phases: None,
            source_noise: None,
        })
        .collect();
    let before = model.device().stats();
    let wavs = model.synthesize(&r, n_steps).unwrap();
    (model.device().stats().since(&before), wavs)
}

#[test]
fn a_synthesis_costs_the_same_device_work_whatever_the_number_of_cfm_steps() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![Device::cpu()];
    devices.extend(Device::emu(EmuOptions::default()));
    for dev in devices {
        let model = S3Gen::load(&model_dir(), &dev).unwrap();
        let reqs = owned(seed, model.config.flow_vocab_size, model.config.spk_embed_dim);
        let mut seen = Vec::new();
        for steps in [1, 2, 5] {
            let (st, wavs) = synthesis_stats(&model, &reqs, seed, steps);
            eprintln!("{}: {steps} CFM steps: {st:?}", dev.kind());
            assert!(wavs.iter().all(|w| !w.is_empty() && w.iter().all(|v| v.is_finite())), "{steps} steps: bad audio");
            seen.push((steps, st));
        }
        // the time embeddings of all steps are computed up front: 2B rows per step of the sinusoid
        // (compute dtype), time_mlp's two f32 outputs, its SiLU and the Mish (compute dtype)
        let (rows, c4) = (2 * reqs.len() as u64, 4 * model.config.decoder_channels as u64);
        let a = dev.compute_dtype().size() as u64;
        let per_step = rows * (320 * a + c4 * (4 + a + 4 + a));
        let (s0, first) = seen[0];
        for &(steps, st) in &seen[1..] {
            let what = format!("{}: {s0} vs {steps} CFM steps", dev.kind());
            let counts = |s: &DeviceStats| (s.allocations, s.downloads, s.uploads, s.synchronizes);
            assert_eq!(counts(&st), counts(&first), "{what}: the device work grew with the steps");
            assert_eq!(st.allocated_bytes - first.allocated_bytes, (steps - s0) as u64 * per_step, "{what}: bytes");
        }
        // What one synthesis of this batch is, exactly. 4 read-backs: the flow's mel, HiFT's F0,
        // source and waveform. No explicit synchronize. 20 uploads, all before the launches they
        // feed: the flow's token lengths, token ids, two relative position tables, upsampled
        // lengths, x-vectors, prompt mels, noise, doubled lengths and the time sinusoids of every
        // step (10); HiFT's frame lengths, mel, phases, noise, sample and STFT-frame lengths, and
        // the lengths after each of its 3 upsamplings and the reflection pad (10). Allocations: the
        // encoder's and HiFT's intermediate tensors (once each) and the CFM's setup (its input, time
        // embeddings, velocity, and the estimator's scratch: 16 tensors on Emu, 15 on Cpu, whose
        // convs need no im2col buffer), counted for this fixture model and batch; a change means
        // S3Gen's allocation pattern changed, which must be looked at.
        let want_allocations = if dev.kind() == BackendKind::Cpu { 226 } else { 309 };
        let what = format!("{}: {first:?}", dev.kind());
        assert_eq!(first.downloads, 4, "{what}");
        assert_eq!(first.synchronizes, 0, "{what}");
        assert_eq!(first.uploads, 20, "{what}");
        assert_eq!(first.allocations, want_allocations, "{what}");
    }
}
