//! Batched synthesis equals one request at a time: requests of different lengths and different
//! prompts in one pass (padding masks in every conv, attention and overlap-add), on Cpu and (with the
//! `emu` feature) on Emu. The model is the tiny random S3Gen of the `s3gen_wav_a` fixture.
mod common;

use common::{Owned, model_dir};
use tts_kernels::Device;
use tts_kernels::testing::{fresh_seed, rel_l2};
use tts_s3gen::{FlowRequest, HiftRequest, MEL_BINS, Request, S3Gen};

/// Different prompt lengths (one with a prompt mel one frame longer than 2·Tp, as embed_ref allows),
/// different token counts.
fn requests(seed: u64, vocab: usize, spk: usize) -> Vec<Owned> {
    common::requests(seed, vocab, spk, &[(3, 7, 0), (5, 2, 1), (0, 11, 0), (4, 4, 0)])
}

fn flow_requests<'a>(reqs: &[&'a Owned]) -> Vec<FlowRequest<'a>> {
    reqs.iter().map(|o| o.flow()).collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

/// Batched vs alone, stage by stage. Bit-for-bit equality is not promised: a GEMM over more rows may
/// take another summation path (last bits; on a bf16 backend a last-bit change can flip a bf16
/// rounding of a GEMM input). The bounds are therefore rounding-level: `tol` relative to the
/// largest value for the mel and F0, and for the waveform with F0 shared (the NSF source integrates
/// F0 over every sample, which turns F0's last bits into phase).
fn batch_equals_alone(dev: Device, label: &str, tol: f64) {
    let seed = fresh_seed();
    let model = S3Gen::load(&model_dir(), &dev).unwrap();
    let owned = requests(seed, model.config.flow_vocab_size, model.config.spk_embed_dim);
    let all: Vec<&Owned> = owned.iter().collect();
    let batched = model.flow.inference(&dev, &flow_requests(&all), 4).unwrap();
    let hreq =
        |mel: &'static [f32], f0: Option<&'static [f32]>, seed: u64| HiftRequest { mel, phases: None, noise: None, f0, seed };
    let leak = |v: &[f32]| -> &'static [f32] { Box::leak(v.to_vec().into_boxed_slice()) };
    let mels: Vec<&'static [f32]> = batched.mels.iter().map(|m| leak(m)).collect();
    let voc_batched =
        model.hift.inference(&dev, &mels.iter().zip(&owned).map(|(m, o)| hreq(m, None, o.seed)).collect::<Vec<_>>()).unwrap();
    for (i, o) in owned.iter().enumerate() {
        let what = format!("{label} request {i} (seed {seed})");
        let alone = model.flow.inference(&dev, &flow_requests(&[o]), 4).unwrap();
        let frames = 2 * (o.prompt_tokens.len() + o.tokens.len()) - o.prompt_feat.len() / MEL_BINS;
        assert_eq!(batched.mels[i].len(), frames * MEL_BINS, "{what}");
        let e = max_rel(&batched.mels[i], &alone.mels[0]);
        eprintln!("{what}: mel max diff / max |mel| {e:e}");
        assert!(e <= tol, "{what}: batched mel differs from alone by {e:e}");
        // the vocoder on the same mel, alone
        let voc_alone = model.hift.inference(&dev, &[hreq(mels[i], None, o.seed)]).unwrap();
        let e = max_rel(&voc_batched.f0[i], &voc_alone.f0[0]);
        assert!(e <= tol, "{what}: batched F0 differs from alone by {e:e}");
        let forced = model.hift.inference(&dev, &[hreq(mels[i], Some(leak(&voc_batched.f0[i])), o.seed)]).unwrap();
        assert_eq!(voc_batched.wav[i].len(), frames * 480, "{what}");
        assert!(voc_batched.wav[i].iter().all(|v| v.is_finite()), "{what}");
        let e = rel_l2(&voc_batched.wav[i], &forced.wav[0]);
        eprintln!("{what}: waveform rel L2 {e:e}");
        assert!(e <= tol, "{what}: batched waveform differs from alone by {e:e} (rel L2)");
    }
}

#[test]
fn cpu_batch_equals_alone() {
    // f32: last-bit differences only
    batch_equals_alone(Device::cpu(), "cpu", 1e-5);
}

#[test]
fn cpu_bf16_batch_equals_alone() {
    // bf16 GEMM inputs (on AVX-512 BF16 and AMX CPUs): rounding-level, as Cuda
    batch_equals_alone(Device::cpu_bf16_weights(), "cpu-bf16", 1e-2);
}

/// `cpu-bf16` (bf16 weights; on AVX-512 BF16 and AMX CPUs bf16 GEMM inputs, and on AMX the
/// attention's operands too) against the f32 `cpu` backend, the whole flow and the vocoder's F0 on
/// the same requests: within bf16 tolerance.
#[test]
fn cpu_bf16_is_within_bf16_tolerance_of_cpu() {
    let seed = fresh_seed();
    let (cpu, bf16) = (Device::cpu(), Device::cpu_bf16_weights());
    let (m32, m16) = (S3Gen::load(&model_dir(), &cpu).unwrap(), S3Gen::load(&model_dir(), &bf16).unwrap());
    let owned = requests(seed, m32.config.flow_vocab_size, m32.config.spk_embed_dim);
    let all: Vec<&Owned> = owned.iter().collect();
    let want = m32.flow.inference(&cpu, &flow_requests(&all), 4).unwrap();
    let got = m16.flow.inference(&bf16, &flow_requests(&all), 4).unwrap();
    // the bf16 tolerance the parity cases hold Emu's and Cuda's flow output to (s3gen_cfm_a:
    // |got − want| ≤ 0.01·|want| + 0.2 per value)
    for (i, (g, w)) in got.mels.iter().zip(&want.mels).enumerate() {
        assert_eq!(g.len(), w.len());
        let worst = g.iter().zip(w).map(|(g, w)| (g - w).abs() as f64 - 1e-2 * w.abs() as f64).fold(f64::MIN, f64::max);
        let e = rel_l2(g, w);
        eprintln!(
            "request {i}: cpu-bf16 mel rel L2 {e:e}, worst excess {worst:.3} over 0.01·|want| ({})",
            tts_kernels::cpu::isa::describe()
        );
        assert!(e > 0.0 && worst <= 0.2, "request {i}: cpu-bf16 mel off by {worst} over 0.01·|want| (rel L2 {e:e}, seed {seed})");
    }
}

/// Emu (built with `--features emu` at the workspace root, as the test command does) and Cuda when
/// this machine has them.
#[test]
fn kernel_backends_batch_equals_alone() {
    match Device::emu(tts_kernels::EmuOptions::default()) {
        // Emu's GEMM stand-in sums every row in the same order whatever the batch: bit for bit
        Ok(d) => batch_equals_alone(d, "emu", 0.0),
        Err(e) => eprintln!("emu: skipped ({e})"),
    }
    match Device::cuda(0) {
        // bf16 GEMM inputs: cuBLAS may pick another algorithm for more rows, flipping a bf16 rounding
        Ok(d) => batch_equals_alone(d, "cuda", 1e-2),
        Err(e) if std::env::var("TTS_REQUIRE_CUDA").is_ok_and(|v| v == "1") => {
            panic!("TTS_REQUIRE_CUDA=1 but the Cuda backend is unavailable: {e}")
        }
        Err(e) => eprintln!("cuda: skipped ({e})"),
    }
}

#[test]
fn bad_requests_are_errors_naming_the_problem() {
    let dev = Device::cpu();
    let model = S3Gen::load(&model_dir(), &dev).unwrap();
    let req = |f: FlowRequest<'static>| Request { flow: f, source_phases: None, source_noise: None };
    let leak = |v: Vec<f32>| -> &'static [f32] { Box::leak(v.into_boxed_slice()) };
    let (spk, feat) = (leak(vec![0.1f32; model.config.spk_embed_dim]), leak(vec![0f32; 2 * MEL_BINS]));
    let ok = FlowRequest { prompt_tokens: &[1], prompt_feat: feat, embedding: spk, tokens: &[1, 2], noise: None, seed: 1 };
    assert!(model.synthesize(&[req(ok)], 2).is_ok());
    let cases: Vec<(FlowRequest<'static>, &str)> = vec![
        (FlowRequest { tokens: &[], ..ok }, "no speech tokens"),
        (FlowRequest { tokens: &[1, 100_000], ..ok }, "outside the flow vocabulary"),
        (FlowRequest { embedding: &[1.0], ..ok }, "x-vector"),
        (FlowRequest { prompt_feat: leak(vec![0.0; 7]), ..ok }, "prompt mel"),
        (FlowRequest { noise: Some(leak(vec![0.0; 3])), ..ok }, "noise"),
        (FlowRequest { embedding: leak(vec![f32::NAN; 64]), ..ok }, "non-finite"),
    ];
    for (f, want) in cases {
        let e = model.synthesize(&[req(f)], 2).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} does not mention {want:?}");
    }
    assert!(model.synthesize(&[], 2).unwrap_err().to_string().contains("empty"));
    let e = S3Gen::load(&model_dir().join("missing"), &dev).err().unwrap().to_string();
    assert!(e.contains("s3gen.safetensors"), "{e}");
}
