//! CAMPPlus's network on a [`Device`] ([`DeviceCampPlus`]: im2col + GEMM convolutions, batch_norm,
//! segment_mean / segment_gate, stats_pool) against the host network, with fresh random weights and
//! audio (the seed is printed; `TTS_TEST_SEED` replays it). The host network itself is held to the
//! reference by the `campplus` parity kind and to naive transcriptions by its unit tests.
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, rel_l2};
use tts_kernels::{BackendKind, Device};
use tts_voice::Error;
use tts_voice::campplus::device::DeviceCampPlus;
use tts_voice::campplus::{CampPlus, CampPlusConfig, MIN_SAMPLES, WEIGHT_PREFIX, fbank, synthetic};

/// Small trunk sizes (the head is fixed: 32 channels over 80 bands); an odd embedding size.
fn small() -> CampPlusConfig {
    CampPlusConfig { campplus_growth_rate: 8, campplus_bn_size: 2, campplus_init_channels: 16, embedding_size: 13 }
}

/// A gliding tone with noise, `len` samples at 16 kHz.
fn tone(seed: u64, len: usize) -> Vec<f32> {
    let noise = random_f32(seed, len, 0.02);
    (0..len)
        .map(|i| {
            let t = i as f32 / 16000.0;
            0.3 * (2.0 * std::f32::consts::PI * (140.0 + 60.0 * t) * t).sin() + noise[i]
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// The device network on the Cpu backend is the host network in f32: the same function composed of
/// ops, within f32 rounding. Audio of ~3.3 s (odd frame count; two CAM segments after the strided
/// TDNN layer, the second one short).
#[test]
fn device_campplus_on_cpu_is_the_host_campplus() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small();
    let ck = synthetic::checkpoint(&cfg, seed).unwrap();
    let host = CampPlus::load(&ck, &cfg).unwrap();
    assert_eq!(host.backend(), BackendKind::Cpu);
    let dev = Device::cpu();
    let net = DeviceCampPlus::load(&ck, WEIGHT_PREFIX, cfg.sizes(), &dev).unwrap();
    let wav = tone(seed, 52_000 + (seed % 1600) as usize);
    let (feats, t) = fbank(&wav).unwrap();
    assert!((t - 1) / 2 + 1 > 100, "{t} frames: one CAM segment only");
    let got = net.forward(&feats, t).unwrap();
    let want = host.embed(&wav).unwrap();
    assert_eq!(got.len(), cfg.embedding_size);
    assert!(want.iter().all(|v| v.is_finite()) && want.iter().any(|&v| v != 0.0), "{want:?}");
    assert_close(&format!("device CAMPPlus on Cpu (seed {seed})"), &got, &want, 1e-4, 1e-5);
    // the fewest frames the model takes
    let (feats, t) = fbank(&tone(seed, MIN_SAMPLES)).unwrap();
    let got = net.forward(&feats, t).unwrap();
    assert_close(&format!("3 frames (seed {seed})"), &got, &host.embed(&tone(seed, MIN_SAMPLES)).unwrap(), 1e-4, 1e-5);
}

/// On the kernel backends (Emu; Cuda where a GPU is usable) the network runs in f32 too (weights,
/// activations, GEMMs): through `CampPlus::load_on`, which puts it there, the embedding is the
/// host's within f32 rounding (relative L2 and cosine printed); bad audio is still a typed error.
#[test]
fn campplus_on_kernel_backends_is_the_host_campplus_in_f32() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small();
    let host = CampPlus::synthetic(&cfg, seed).unwrap();
    let wav = tone(seed, 35_000 + (seed % 1600) as usize);
    let want = host.embed(&wav).unwrap();
    for (label, dev) in kernel_devices() {
        let model = CampPlus::synthetic_on(&cfg, seed, &dev).unwrap();
        assert_eq!(model.backend(), dev.kind());
        let got = model.embed(&wav).unwrap();
        println!("{label}: embedding rel L2 {:.2e}, cosine {:.9}", rel_l2(&got, &want), cosine(&got, &want));
        assert_close(&format!("{label} (seed {seed})"), &got, &want, 1e-4, 1e-5);
        assert!(matches!(model.embed(&wav[..MIN_SAMPLES - 1]), Err(Error::Audio { .. })), "{label}");
    }
}
