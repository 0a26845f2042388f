//! S3Tokenizer v2 against a naive f64 transcription of `AudioEncoderV2` (s3tokenizer 0.3.0,
//! `model_v2.py`) with fresh random weights, and its handling of bad input, `max_len` and long audio.
//! (Parity with the real package: the `s3_tokenizer` parity kind.)
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, rel_l2};
use tts_kernels::{BackendKind, Device};
use tts_voice::Error;
use tts_voice::s3_tokenizer::block::{Block, Rope, Scratch};
use tts_voice::s3_tokenizer::device_encoder::DeviceEncoder;
use tts_voice::s3_tokenizer::mel::{HOP, LogMel, MIN_SAMPLES, N_MELS};
use tts_voice::s3_tokenizer::{
    DigitAgreement, S3Tokenizer, TokenizerConfig, digit_agreement, synthetic, tokens_for_frames, windows,
};

/// A small config: 2 heads of 64 (the RoPE is 64-dim per head).
fn small(layers: usize) -> TokenizerConfig {
    TokenizerConfig { tokenizer_n_state: 128, tokenizer_n_head: 2, tokenizer_n_layer: layers }
}

// ------------------------------------------------------------------ the naive f64 reference

fn erf(z: f64) -> f64 {
    if z < 0.0 {
        return -erf(-z);
    }
    if z < 2.5 {
        // Maclaurin series: 2/√π Σ (−1)ⁿ z^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        return 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc continued fraction (Laplace), evaluated from the tail
    let mut k = z;
    for n in (1..80).rev() {
        k = z + (n as f64 / 2.0) / k;
    }
    1.0 - (-z * z).exp() / (std::f64::consts::PI.sqrt() * k)
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn w64(ck: &Checkpoint, name: &str) -> Vec<f64> {
    let shape = ck.shape(name).unwrap_or_else(|| panic!("{name} missing")).to_vec();
    ck.f32(name, &shape).unwrap().iter().map(|&v| v as f64).collect()
}

/// `x[t, k] · w[n, k]ᵀ + b`.
fn lin(x: &[f64], w: &[f64], b: Option<&[f64]>, k: usize) -> Vec<f64> {
    let n = w.len() / k;
    let mut out = Vec::with_capacity(x.len() / k * n);
    for row in x.chunks_exact(k) {
        for j in 0..n {
            let s: f64 = row.iter().zip(&w[j * k..(j + 1) * k]).map(|(a, b)| a * b).sum();
            out.push(s + b.map_or(0.0, |b| b[j]));
        }
    }
    out
}

fn layer_norm(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let d = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        out.extend(row.iter().enumerate().map(|(j, v)| (v - mean) / (var + 1e-5).sqrt() * w[j] + b[j]));
    }
    out
}

/// `x` `[T, D]` through `ResidualAttentionBlock` `p` (prefix), as model_v2.py writes it, in f64.
fn naive_block(ck: &Checkpoint, p: &str, x: &[f64], d: usize, heads: usize) -> Vec<f64> {
    let g = |n: &str| w64(ck, &format!("{p}{n}"));
    let t_len = x.len() / d;
    let a = layer_norm(x, &g("attn_ln.weight"), &g("attn_ln.bias"));
    let mut q = lin(&a, &g("attn.query.weight"), Some(&g("attn.query.bias")), d);
    let mut k = lin(&a, &g("attn.key.weight"), None, d);
    let v = lin(&a, &g("attn.value.weight"), Some(&g("attn.value.bias")), d);
    // RoPE, rotate-half, θ 10000 on 64-dim heads; then both scaled by 64^(−1/4)
    let s = 64f64.powf(-0.25);
    for x in [&mut q, &mut k] {
        for t in 0..t_len {
            for h in 0..heads {
                let base = t * d + h * 64;
                for j in 0..32 {
                    let ang = t as f64 / 10000f64.powf(2.0 * j as f64 / 64.0);
                    let (a, b) = (x[base + j], x[base + j + 32]);
                    x[base + j] = (a * ang.cos() - b * ang.sin()) * s;
                    x[base + j + 32] = (b * ang.cos() + a * ang.sin()) * s;
                }
            }
        }
    }
    let mut att = vec![0f64; t_len * d];
    for h in 0..heads {
        for i in 0..t_len {
            let sc: Vec<f64> =
                (0..t_len).map(|j| (0..64).map(|c| q[i * d + h * 64 + c] * k[j * d + h * 64 + c]).sum::<f64>()).collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..64 {
                att[i * d + h * 64 + c] = (0..t_len).map(|j| e[j] * v[j * d + h * 64 + c]).sum::<f64>() / z;
            }
        }
    }
    // FSMN: depthwise conv k31, zero pad 15/15, no bias, plus its input
    let fw = g("attn.fsmn_block.weight"); // (D, 1, 31)
    let mut fsmn = v.clone();
    for t in 0..t_len {
        for c in 0..d {
            for j in 0..31 {
                let src = t as isize + j as isize - 15;
                if (0..t_len as isize).contains(&src) {
                    fsmn[t * d + c] += fw[c * 31 + j] * v[src as usize * d + c];
                }
            }
        }
    }
    let o = lin(&att, &g("attn.out.weight"), Some(&g("attn.out.bias")), d);
    let x1: Vec<f64> = x.iter().zip(&o).zip(&fsmn).map(|((x, o), f)| x + o + f).collect();
    let m = layer_norm(&x1, &g("mlp_ln.weight"), &g("mlp_ln.bias"));
    let h: Vec<f64> = lin(&m, &g("mlp.0.weight"), Some(&g("mlp.0.bias")), d).into_iter().map(gelu).collect();
    let y = lin(&h, &g("mlp.2.weight"), Some(&g("mlp.2.bias")), 4 * d);
    x1.iter().zip(&y).map(|(a, b)| a + b).collect()
}

/// `Conv1d(k 3, stride 2, padding 1)` + GELU over `x` `[T, C]` (time-major), `[⌈T/2⌉, D]`.
fn naive_conv_gelu(x: &[f64], c: usize, w: &[f64], b: &[f64]) -> Vec<f64> {
    let (t_len, d) = (x.len() / c, b.len());
    let t_out = t_len.div_ceil(2);
    let mut out = vec![0f64; t_out * d];
    for i in 0..t_out {
        for o in 0..d {
            let mut s = b[o];
            for ci in 0..c {
                for k in 0..3 {
                    let src = (2 * i + k) as isize - 1;
                    if (0..t_len as isize).contains(&src) {
                        s += w[(o * c + ci) * 3 + k] * x[src as usize * c + ci];
                    }
                }
            }
            out[i * d + o] = gelu(s);
        }
    }
    out
}

fn naive_encoder(ck: &Checkpoint, cfg: &TokenizerConfig, mel: &LogMel) -> Vec<f64> {
    let d = cfg.tokenizer_n_state;
    let e = "tokenizer.encoder.";
    let mut x = vec![0f64; mel.frames * N_MELS];
    for m in 0..N_MELS {
        for t in 0..mel.frames {
            x[t * N_MELS + m] = mel.data[m * mel.frames + t] as f64;
        }
    }
    let x = naive_conv_gelu(&x, N_MELS, &w64(ck, &format!("{e}conv1.weight")), &w64(ck, &format!("{e}conv1.bias")));
    let mut x = naive_conv_gelu(&x, d, &w64(ck, &format!("{e}conv2.weight")), &w64(ck, &format!("{e}conv2.bias")));
    for i in 0..cfg.tokenizer_n_layer {
        x = naive_block(ck, &format!("{e}blocks.{i}."), &x, d, cfg.tokenizer_n_head);
    }
    x
}

/// `tanh(h·Wᵀ + b)·0.999` of the quantizer's `project_down`, in f64: `[T, 8]`.
fn naive_pre_round(ck: &Checkpoint, h: &[f64], d: usize) -> Vec<f64> {
    let q = "tokenizer.quantizer._codebook.project_down";
    let b = w64(ck, &format!("{q}.bias"));
    lin(h, &w64(ck, &format!("{q}.weight")), Some(&b), d).iter().map(|v| v.tanh() * 0.999f32 as f64).collect()
}

/// Audio whose spectrum changes along time, as speech does: runs of 10 to 40 ms, each a tone of its
/// own frequency (80 Hz to 4 kHz) and level (−40 to −6 dBFS) over fresh noise. (White noise alone
/// is stationary: every mel frame alike, the encoder rows alike, and with random weights a few
/// percent of seeds give the same code for every row.)
fn speechlike(seed: u64, len: usize) -> Vec<f32> {
    let noise = random_f32(seed, len, 0.02);
    let draws = random_f32(seed ^ 0x5EED, 3 * (len / 160 + 1), 1.0);
    let unit = |v: f32| 0.5 + 0.5 * (v / 2.0).tanh(); // a normal draw mapped into (0, 1)
    let mut wav = Vec::with_capacity(len);
    let (mut k, mut phase) = (0, 0f64);
    while wav.len() < len {
        let run = 160 + (unit(draws[k]) * 480.0) as usize;
        let freq = 80.0 * 50f64.powf(unit(draws[k + 1]) as f64);
        let level = 10f32.powf(-(6.0 + 34.0 * unit(draws[k + 2])) / 20.0);
        k += 3;
        for _ in 0..run.min(len - wav.len()) {
            phase += 2.0 * std::f64::consts::PI * freq / 16000.0;
            wav.push(level * phase.sin() as f32 + noise[wav.len()]);
        }
    }
    wav
}

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

// ------------------------------------------------------------------ tests

/// One block on fresh random weights and inputs, against the f64 transcription: short (fewer rows
/// than the FSMN's 31 taps) and longer odd lengths, so the convolution's borders and the RoPE angles
/// of many positions are exercised.
#[test]
fn attention_block_matches_a_naive_f64_block() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small(1);
    let (d, heads) = (cfg.tokenizer_n_state, cfg.tokenizer_n_head);
    let ck = synthetic::checkpoint(&cfg, seed).unwrap();
    let p = "tokenizer.encoder.blocks.0.";
    let block = Block::load(&ck, p, d, heads).unwrap();
    for t_len in [5, 41 + (seed % 23) as usize] {
        let x = random_f32(seed ^ t_len as u64, t_len * d, 1.0);
        let want = naive_block(&ck, p, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), d, heads);
        let mut got = x.clone();
        let mut scratch = Scratch::new(t_len, d);
        // poisoned scratch: every buffer must be written before it is read
        let mut poisoned = Scratch::new(t_len, d);
        block.forward(&mut got, &Rope::new(t_len), &mut scratch).unwrap();
        let mut again = x.clone();
        block.forward(&mut again, &Rope::new(t_len), &mut poisoned).unwrap();
        assert_eq!(got, again);
        assert_close(&format!("block, T = {t_len}"), &got, &f32s(&want), 1e-4, 1e-5);
    }
    // rows that do not fit the scratch or the RoPE table, a ragged row: errors, not panics
    let mut x = vec![0.5f32; 9 * d];
    assert!(block.forward(&mut x, &Rope::new(9), &mut Scratch::new(8, d)).is_err());
    assert!(block.forward(&mut x, &Rope::new(8), &mut Scratch::new(9, d)).is_err());
    assert!(block.forward(&mut x[..9 * d - 1], &Rope::new(9), &mut Scratch::new(9, d)).is_err());
    assert!(block.forward(&mut x, &Rope::new(9), &mut Scratch::new(9, d / 2)).is_err());
}

/// The whole encoder (convolutions as GEMMs, two blocks) and the stages of `tokenize`, on a fresh
/// random mel of an odd frame count, against the f64 transcription.
#[test]
fn encoder_matches_a_naive_f64_encoder_and_tokens_follow_from_it() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small(2);
    let ck = synthetic::checkpoint(&cfg, seed).unwrap();
    let tok = S3Tokenizer::load(&ck, &cfg).unwrap();
    let len = 40 * HOP + 17 + (seed % 3000) as usize;
    let wav = speechlike(seed, len);
    let mel = tok.log_mel(&wav).unwrap();
    assert_eq!(mel.frames, len / HOP);
    let hidden = tok.encode(&mel).unwrap();
    let t_tok = tokens_for_frames(mel.frames);
    assert_eq!(hidden.len(), t_tok * cfg.tokenizer_n_state);
    let want = naive_encoder(&ck, &cfg, &mel);
    assert_close("encoder", &hidden, &f32s(&want), 1e-4, 1e-5);
    let pre = tok.fsq_pre_round(&hidden);
    assert_eq!(pre.len(), 8 * t_tok);
    let tokens = tok.tokenize(&wav, None).unwrap();
    assert_eq!(tokens, tts_voice::s3_tokenizer::codes(&pre));
    assert!(tokens.iter().all(|&c| c < 6561));
    // the codes of the f64 encoder's rows, digit by digit, where a value is clear of a rounding
    // edge (±0.5) by more than the f32 path's error
    let want_pre = naive_pre_round(&ck, &want, cfg.tokenizer_n_state);
    let DigitAgreement { clear, first_mismatch } = digit_agreement(&pre, &want_pre, 1e-3);
    if let Some(i) = first_mismatch {
        panic!("token {} digit {}: {} against {}", i / 8, i % 8, pre[i], want_pre[i]);
    }
    assert!(clear * 10 >= pre.len() * 9, "only {clear} of {} digits clear of a rounding edge", pre.len());
    // the rows follow the audio: a varying input gives more than one code
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert!(distinct.len() > 1, "varying audio gave one code only: {tokens:?}");
    // max_len keeps the first 4·max_len frames: the tokens of that mel (not a prefix of the
    // full tokens: the log-mel floor and the attention see the whole input)
    let cut = tok.tokenize(&wav, Some(3)).unwrap();
    assert_eq!(cut, tok.tokenize_mel(&mel.truncated(12)).unwrap());
    assert_eq!(cut.len(), 3);
    assert_eq!(tok.tokenize(&wav, Some(10_000)).unwrap(), tokens);
}

#[test]
fn bad_input_is_a_typed_error() {
    let cfg = TokenizerConfig { tokenizer_n_state: 64, tokenizer_n_head: 1, tokenizer_n_layer: 1 };
    let tok = S3Tokenizer::synthetic(&cfg, 7).unwrap();
    for (wav, needle) in [
        (vec![], "no samples"),
        (vec![0.01; MIN_SAMPLES - 1], "too short"),
        ([vec![0.01; 1000], vec![f32::INFINITY]].concat(), "sample 1000 is inf"),
    ] {
        let e = tok.tokenize(&wav, None).unwrap_err();
        assert!(matches!(e, Error::Audio { .. }) && e.to_string().contains(needle), "{e}");
    }
    let e = tok.tokenize(&[0.01; 2000], Some(0)).unwrap_err();
    assert!(matches!(e, Error::Input { field: "max_len", .. }), "{e}");
    // the shortest input: one token; silence is fine
    assert_eq!(tok.tokenize(&vec![0.0; MIN_SAMPLES], None).unwrap().len(), 1);
    let e = tok.encode(&LogMel { frames: 0, data: vec![] }).unwrap_err();
    assert!(matches!(e, Error::Input { field: "mel", .. }), "{e}");
    // a checkpoint of other dimensions: the tensor and the file are named
    let other = synthetic::checkpoint(&TokenizerConfig { tokenizer_n_layer: 0, ..small(0) }, 1).unwrap();
    let e = S3Tokenizer::load(&other, &cfg).err().expect("misshapen weights must be refused");
    let msg = e.to_string();
    assert!(msg.contains("synthetic S3 tokenizer") && msg.contains("tokenizer.encoder.conv1.weight"), "{e}");
    let bad = TokenizerConfig { tokenizer_n_head: 3, ..cfg };
    assert!(matches!(S3Tokenizer::load(&other, &bad), Err(Error::Config { .. })));
}

/// Above 3000 frames (30 s) the package tokenizes 30 s windows every 26 s and joins them: the
/// first window gives the first 700 tokens, the last its tail, and the count follows `merge`.
#[test]
fn long_audio_is_tokenized_in_30_s_windows() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = TokenizerConfig { tokenizer_n_state: 64, tokenizer_n_head: 1, tokenizer_n_layer: 1 };
    let tok = S3Tokenizer::synthetic(&cfg, seed).unwrap();
    let secs = 57 + (seed % 5) as usize;
    let wav = random_f32(seed, secs * 16000 + 123, 0.2);
    let mel = tok.log_mel(&wav).unwrap();
    let tokens = tok.tokenize(&wav, None).unwrap();
    let wins = windows::windows(mel.frames);
    assert_eq!(wins.len(), 3);
    let segs: Vec<Vec<u32>> = wins.iter().map(|&(s, e)| tok.tokenize_mel(&mel.frame_range(s, e)).unwrap()).collect();
    assert_eq!(segs[0].len(), 750);
    assert_eq!(tokens.len(), 700 + 650 + segs[2].len() - 50);
    assert_eq!(&tokens[..700], &segs[0][..700]);
    assert_eq!(&tokens[700..1350], &segs[1][50..700]);
    assert_eq!(&tokens[1350..], &segs[2][50..]);
    // the windows see other context than one pass over the whole mel would (so the checks above
    // tell the two apart wherever a rounding flips; checked against the real package ad hoc)
    let d = cfg.tokenizer_n_state;
    let whole = tok.encode(&mel).unwrap();
    let second = tok.encode(&mel.frame_range(wins[1].0, wins[1].1)).unwrap();
    assert_ne!(&whole[700 * d..1350 * d], &second[50 * d..700 * d]);
    // exactly 30 s: one pass; with max_len the cut comes first (here under 30 s: one pass)
    let wav30 = &wav[..3000 * HOP];
    assert_eq!(tok.tokenize(wav30, None).unwrap().len(), 750);
    assert_eq!(tok.tokenize(&wav, Some(600)).unwrap(), tok.tokenize_mel(&mel.truncated(2400)).unwrap());
}

/// The tokenizer with its encoder on `dev` and the host one, both from `ck`, and the mel of a fresh
/// speech-like utterance of an odd length (a frame count that is not a multiple of 4, more rows
/// than the FSMN's 31 taps).
fn device_and_host(ck: &Checkpoint, cfg: &TokenizerConfig, dev: &Device, seed: u64) -> (S3Tokenizer, S3Tokenizer, LogMel) {
    let on_dev = S3Tokenizer::load_on(ck, cfg, dev).unwrap();
    let host = S3Tokenizer::load(ck, cfg).unwrap();
    let len = 150 * HOP + 93 + (seed % 2000) as usize;
    let mel = host.log_mel(&speechlike(seed, len)).unwrap();
    (on_dev, host, mel)
}

/// The device encoder (ops: im2col, linear, GELU, layer_norm, the fused QKV GEMM, depthwise_conv1d,
/// rope_kv_write, attention_cached, feed_forward_residual) on the Cpu backend is the host encoder
/// in f32: the same function composed of other ops, within f32 rounding.
#[test]
fn device_encoder_on_cpu_is_the_host_encoder() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small(2);
    let ck = synthetic::checkpoint(&cfg, seed).unwrap();
    let dev = Device::cpu();
    let encoder = DeviceEncoder::load(&ck, "tokenizer.encoder.", &cfg, &dev).unwrap();
    let (_, host, mel) = device_and_host(&ck, &cfg, &dev, seed);
    let want = host.encode(&mel).unwrap();
    let got = encoder.forward(&mel).unwrap();
    assert_eq!(got.len(), tokens_for_frames(mel.frames) * cfg.tokenizer_n_state);
    assert_close(&format!("device encoder on Cpu (seed {seed})"), &got, &want, 1e-4, 1e-5);
    // `load_on` the Cpu backend keeps the host encoder
    assert_eq!(S3Tokenizer::load_on(&ck, &cfg, &dev).unwrap().encoder_backend(), BackendKind::Cpu);
    // a mel without frames is an error, not a panic
    assert!(encoder.forward(&mel.truncated(0)).is_err());
}

/// On the kernel backends (Emu; Cuda where a GPU is usable) the encoder runs in bf16 activations:
/// its output within the bf16 tolerance of the host's f32 encoder (relative L2), and every FSQ
/// digit whose value is clear of a rounding edge by more than that error the same as the host's.
/// The token agreement is printed.
#[test]
fn device_encoder_on_kernel_backends_is_within_bf16_of_the_host_encoder() {
    let seed = fresh_seed();
    println!("seed {seed}");
    let cfg = small(2);
    let ck = synthetic::checkpoint(&cfg, seed).unwrap();
    for (label, dev) in kernel_devices() {
        let (tok, host, mel) = device_and_host(&ck, &cfg, &dev, seed);
        assert_eq!(tok.encoder_backend(), dev.kind());
        let want = host.encode(&mel).unwrap();
        let got = tok.encode(&mel).unwrap();
        let err = rel_l2(&got, &want);
        println!("{label}: encoder rel L2 {err:.2e}");
        assert!(err < 1e-2, "{label}: encoder rel L2 {err} (seed {seed})");
        let (pre, want_pre) = (tok.fsq_pre_round(&got), host.fsq_pre_round(&want));
        let want_pre: Vec<f64> = want_pre.iter().map(|&v| v as f64).collect();
        let DigitAgreement { clear, first_mismatch } = digit_agreement(&pre, &want_pre, 0.05);
        if let Some(i) = first_mismatch {
            panic!("{label}: token {} digit {}: {} against {} (seed {seed})", i / 8, i % 8, pre[i], want_pre[i]);
        }
        assert!(clear * 2 >= pre.len(), "{label}: only {clear} of {} digits clear of a rounding edge", pre.len());
        let (a, b) = (tok.tokenize_mel(&mel).unwrap(), host.tokenize_mel(&mel).unwrap());
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        println!("{label}: {same} of {} tokens the host's ({:.1}%)", b.len(), 100.0 * same as f64 / b.len() as f64);
        assert_eq!(a.len(), b.len());
    }
}
