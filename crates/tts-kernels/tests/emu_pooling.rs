//! The CAMPPlus ops `batch_norm` (kernels/batchnorm.cu) and `segment_mean`, `segment_gate`,
//! `stats_pool` (kernels/pooling.cu): the Cpu ops against f64 transcriptions of their definitions,
//! then every kernel backend of this build and machine (Emu in three schedules, one with the race
//! checker; Cuda when a GPU is usable) against the Cpu ops, bit for bit where the op promises it.
//! Fresh random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, columns
//! outside the normalised ones and outputs that start poisoned (NaN).
use tts_kernels::ops::BatchNormCols;
use tts_kernels::testing::{assert_bits_eq, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

/// (rows, row width, col_offset, channels, residual, relu).
type BnCase = (usize, usize, usize, usize, bool, bool);
const BN_CASES: [BnCase; 5] = [
    (1, 1, 0, 1, false, false),
    (37, 13, 4, 7, false, true),
    (300, 130, 0, 130, true, true),
    (53, 40, 33, 7, true, false),
    (9, 260, 128, 96, false, true),
];

/// x, scale, shift and a residual.
type BnInputs = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// `x` `[rows, row]` with NaN in every column outside the normalised ones, scale and shift
/// (some scales negative), a residual.
fn bn_inputs(seed: u64, case: BnCase) -> BnInputs {
    let (rows, row, off, c, ..) = case;
    let mut x = random_f32(seed, rows * row, 2.0);
    for r in x.chunks_exact_mut(row) {
        r[..off].fill(f32::NAN);
        r[off + c..].fill(f32::NAN);
    }
    (x, random_f32(seed + 1, c, 1.5), random_f32(seed + 2, c, 0.5), random_f32(seed + 3, rows * c, 1.0))
}

fn run_bn(
    dev: &Device,
    case: BnCase,
    inp: &(Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>),
    dt: [DType; 3],
) -> tts_kernels::Result<Vec<f32>> {
    let (rows, row, col_offset, c, residual, relu) = case;
    let (x, scale, shift, res) = inp;
    let xt = Tensor::from_f32(dev, dt[0], &[rows, row], x)?;
    let st = Tensor::from_f32(dev, DType::F32, &[c], scale)?;
    let ht = Tensor::from_f32(dev, DType::F32, &[c], shift)?;
    let rt = Tensor::from_f32(dev, dt[1], &[rows, c], res)?;
    let mut out = Tensor::from_f32(dev, dt[2], &[rows, c], &vec![f32::NAN; rows * c])?;
    let p = BatchNormCols { col_offset, relu };
    ops::batch_norm(xt.view(), st.view(), ht.view(), residual.then(|| rt.view()), out.view_mut(), p)?;
    out.to_f32_vec()
}

#[test]
fn batch_norm_on_cpu_is_the_affine_map() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (i, &case) in BN_CASES.iter().enumerate() {
        let (rows, row, off, c, residual, relu) = case;
        let inp = bn_inputs(seed + 10 * i as u64, case);
        let got = run_bn(&Device::cpu(), case, &inp, [DType::F32; 3]).unwrap();
        let (x, scale, shift, res) = &inp;
        let want: Vec<f32> = (0..rows * c)
            .map(|i| {
                let (r, ch) = (i / c, i % c);
                let mut y = x[r * row + off + ch] as f64 * scale[ch] as f64 + shift[ch] as f64;
                if residual {
                    y += res[i] as f64;
                }
                (if relu { y.max(0.0) } else { y }) as f32
            })
            .collect();
        assert_close(&format!("case {case:?} (seed {seed})"), &got, &want, 1e-6, 1e-6);
    }
}

#[test]
fn batch_norm_kernel_gives_the_cpu_bits() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        for (i, &case) in BN_CASES.iter().enumerate() {
            let inp = bn_inputs(seed + 10 * i as u64, case);
            let cpu = |inp: &BnInputs| run_bn(&Device::cpu(), case, inp, [DType::F32; 3]).unwrap();
            let got = run_bn(&dev, case, &inp, [DType::F32; 3]).unwrap();
            assert_bits_eq(&format!("{label}: f32, case {case:?} (seed {seed})"), &got, &cpu(&inp));
            // x and the residual in the compute dtype: the Cpu bits over the rounded inputs, and
            // rounded once more for an output in the compute dtype
            let rounded = (round_bf16(&inp.0), inp.1.clone(), inp.2.clone(), round_bf16(&inp.3));
            let want = cpu(&rounded);
            let got = run_bn(&dev, case, &inp, [act, act, DType::F32]).unwrap();
            assert_bits_eq(&format!("{label}: {act:?} in, case {case:?} (seed {seed})"), &got, &want);
            let got = run_bn(&dev, case, &inp, [act, act, act]).unwrap();
            assert_bits_eq(&format!("{label}: {act:?} in and out, case {case:?} (seed {seed})"), &got, &round_bf16(&want));
        }
    }
}

/// (T, C, seg_len): one frame, a short last segment, exact segments, one segment shorter than
/// seg_len, many channels.
const POOL_CASES: [(usize, usize, usize); 6] =
    [(1, 3, 100), (2, 1, 100), (253, 7, 100), (300, 5, 100), (37, 130, 100), (61, 9, 7)];

fn run_segment_mean(
    dev: &Device,
    x: &[f32],
    (t, c, seg): (usize, usize, usize),
    dt: [DType; 2],
) -> tts_kernels::Result<Vec<f32>> {
    let s = t.div_ceil(seg);
    let xt = Tensor::from_f32(dev, dt[0], &[t, c], x)?;
    let mut out = Tensor::from_f32(dev, dt[1], &[s, c], &vec![f32::NAN; s * c])?;
    ops::segment_mean(xt.view(), out.view_mut(), seg)?;
    out.to_f32_vec()
}

fn run_segment_gate(
    dev: &Device,
    y: &[f32],
    z: &[f32],
    (t, c, seg): (usize, usize, usize),
    dt: [DType; 2],
) -> tts_kernels::Result<Vec<f32>> {
    let s = t.div_ceil(seg);
    let mut yt = Tensor::from_f32(dev, dt[0], &[t, c], y)?;
    let zt = Tensor::from_f32(dev, dt[1], &[s, c], z)?;
    ops::segment_gate(yt.view_mut(), zt.view(), seg)?;
    yt.to_f32_vec()
}

fn run_stats_pool(dev: &Device, x: &[f32], (t, c): (usize, usize), dt: [DType; 2]) -> tts_kernels::Result<Vec<f32>> {
    let xt = Tensor::from_f32(dev, dt[0], &[t, c], x)?;
    let mut out = Tensor::from_f32(dev, dt[1], &[2 * c], &vec![f32::NAN; 2 * c])?;
    ops::stats_pool(xt.view(), out.view_mut())?;
    out.to_f32_vec()
}

#[test]
fn poolings_on_cpu_are_their_definitions() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let dev = Device::cpu();
    for (i, &(t, c, seg)) in POOL_CASES.iter().enumerate() {
        let s = seed + 10 * i as u64;
        // an offset makes the std's cancellation matter
        let x: Vec<f32> = random_f32(s, t * c, 1.0).iter().map(|v| v + 3.0).collect();
        let col = |ch: usize, f0: usize, f1: usize| (f0..f1).map(|f| x[f * c + ch] as f64).collect::<Vec<f64>>();
        let segs = t.div_ceil(seg);
        let got = run_segment_mean(&dev, &x, (t, c, seg), [DType::F32; 2]).unwrap();
        let mut want = vec![0f32; segs * c];
        for ch in 0..c {
            let mean = col(ch, 0, t).iter().sum::<f64>() / t as f64;
            for sg in 0..segs {
                let v = col(ch, sg * seg, t.min((sg + 1) * seg));
                want[sg * c + ch] = (mean + v.iter().sum::<f64>() / v.len() as f64) as f32;
            }
        }
        assert_close(&format!("segment_mean {t}x{c}/{seg} (seed {seed})"), &got, &want, 1e-5, 1e-6);

        let y = random_f32(s + 1, t * c, 1.0);
        let z = random_f32(s + 2, segs * c, 4.0);
        let got = run_segment_gate(&dev, &y, &z, (t, c, seg), [DType::F32; 2]).unwrap();
        let want: Vec<f32> =
            (0..t * c).map(|i| (y[i] as f64 / (1.0 + (-(z[i / c / seg * c + i % c] as f64)).exp())) as f32).collect();
        assert_close(&format!("segment_gate {t}x{c}/{seg} (seed {seed})"), &got, &want, 1e-6, 1e-7);

        if t >= 2 {
            let got = run_stats_pool(&dev, &x, (t, c), [DType::F32; 2]).unwrap();
            let mut want = vec![0f32; 2 * c];
            for ch in 0..c {
                let v = col(ch, 0, t);
                let m = v.iter().sum::<f64>() / t as f64;
                want[ch] = m as f32;
                want[c + ch] = (v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (t - 1) as f64).sqrt() as f32;
            }
            assert_close(&format!("stats_pool {t}x{c} (seed {seed})"), &got, &want, 1e-5, 1e-6);
        }
    }
}

#[test]
fn pooling_kernels_give_the_cpu_results() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        for (i, &(t, c, seg)) in POOL_CASES.iter().enumerate() {
            let s = seed + 10 * i as u64;
            let x: Vec<f32> = random_f32(s, t * c, 1.0).iter().map(|v| v + 3.0).collect();
            let what = |op: &str, d: &str| format!("{label}: {op} {t}x{c}/{seg}, {d} (seed {seed})");
            // sums in the same order: the same bits; bf16 in, then bf16 out rounded once
            let want = run_segment_mean(&cpu, &x, (t, c, seg), [DType::F32; 2]).unwrap();
            assert_bits_eq(
                &what("segment_mean", "f32"),
                &run_segment_mean(&dev, &x, (t, c, seg), [DType::F32; 2]).unwrap(),
                &want,
            );
            let want = run_segment_mean(&cpu, &round_bf16(&x), (t, c, seg), [DType::F32; 2]).unwrap();
            assert_bits_eq(
                &what("segment_mean", "bf16 in"),
                &run_segment_mean(&dev, &x, (t, c, seg), [act, DType::F32]).unwrap(),
                &want,
            );
            assert_bits_eq(
                &what("segment_mean", "bf16 in/out"),
                &run_segment_mean(&dev, &x, (t, c, seg), [act, act]).unwrap(),
                &round_bf16(&want),
            );
            if t >= 2 {
                let want = run_stats_pool(&cpu, &x, (t, c), [DType::F32; 2]).unwrap();
                assert_bits_eq(&what("stats_pool", "f32"), &run_stats_pool(&dev, &x, (t, c), [DType::F32; 2]).unwrap(), &want);
                let want = run_stats_pool(&cpu, &round_bf16(&x), (t, c), [DType::F32; 2]).unwrap();
                assert_bits_eq(
                    &what("stats_pool", "bf16 in"),
                    &run_stats_pool(&dev, &x, (t, c), [act, DType::F32]).unwrap(),
                    &want,
                );
            }
            // the sigmoid goes through each backend's expf: within a few ulps
            let y = random_f32(s + 1, t * c, 1.0);
            let z = random_f32(s + 2, t.div_ceil(seg) * c, 4.0);
            let want = run_segment_gate(&cpu, &y, &z, (t, c, seg), [DType::F32; 2]).unwrap();
            let got = run_segment_gate(&dev, &y, &z, (t, c, seg), [DType::F32; 2]).unwrap();
            assert_close(&what("segment_gate", "f32"), &got, &want, 1e-6, 1e-30);
            let want = run_segment_gate(&cpu, &round_bf16(&y), &round_bf16(&z), (t, c, seg), [DType::F32; 2]).unwrap();
            let got = run_segment_gate(&dev, &y, &z, (t, c, seg), [act, act]).unwrap();
            // y in the compute dtype is rounded once more after the product
            assert_close(&what("segment_gate", "bf16"), &got, &round_bf16(&want), 2f64.powi(-8), 1e-30);
        }
    }
}

#[test]
fn campplus_ops_refuse_bad_arguments() {
    let dev = Device::cpu();
    let t = |shape: &[usize], dtype: DType| Tensor::zeros(&dev, dtype, shape).unwrap();
    let f = DType::F32;
    let p = |col_offset| BatchNormCols { col_offset, relu: true };
    /// x, scale, shift, residual, out, columns, the words the error must name.
    type BnCall = (Tensor, Tensor, Tensor, Option<Tensor>, Tensor, BatchNormCols, &'static str);
    let bn_cases: Vec<BnCall> = vec![
        (t(&[4, 8], f), t(&[4], f), t(&[4], f), None, t(&[4, 4], f), p(5), "channels 5..9"),
        (t(&[4, 8], f), t(&[4], f), t(&[3], f), None, t(&[4, 4], f), p(0), "shift [3]"),
        (t(&[4, 8], f), t(&[0], f), t(&[0], f), None, t(&[4, 0], f), p(0), "scale [0]"),
        (t(&[4, 8], f), t(&[4], f), t(&[4], f), None, t(&[5, 4], f), p(0), "out [5, 4]"),
        (t(&[4, 8], f), t(&[4], f), t(&[4], f), Some(t(&[4, 5], f)), t(&[4, 4], f), p(0), "residual [4, 5]"),
        (t(&[4, 8], f), t(&[4], DType::BF16), t(&[4], f), None, t(&[4, 4], f), p(0), "scale"),
        (t(&[4, 8], DType::BF16), t(&[4], f), t(&[4], f), None, t(&[4, 4], f), p(0), "x"),
    ];
    for (x, sc, sh, res, mut out, p, names) in bn_cases {
        let msg = ops::batch_norm(x.view(), sc.view(), sh.view(), res.as_ref().map(|r| r.view()), out.view_mut(), p)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("batch_norm") && msg.contains(names), "{names}: {msg}");
    }
    let mean = |x: &[usize], out: &[usize], seg: usize| {
        ops::segment_mean(t(x, f).view(), t(out, f).view_mut(), seg).unwrap_err().to_string()
    };
    for (msg, names) in [
        (mean(&[250, 4], &[2, 4], 100), "out [2, 4]"),
        (mean(&[250, 4], &[3, 4], 0), "segments of 0"),
        (mean(&[0, 4], &[0, 4], 100), "x [0, 4]"),
        (mean(&[2, 250, 4], &[3, 4], 100), "x [2, 250, 4]"),
    ] {
        assert!(msg.contains("segment_mean") && msg.contains(names), "{names}: {msg}");
    }
    let gate = |y: &[usize], z: &[usize], seg: usize| {
        ops::segment_gate(t(y, f).view_mut(), t(z, f).view(), seg).unwrap_err().to_string()
    };
    for (msg, names) in [(gate(&[250, 4], &[2, 4], 100), "z [2, 4]"), (gate(&[250, 4], &[3, 4], 0), "segments of 0")] {
        assert!(msg.contains("segment_gate") && msg.contains(names), "{names}: {msg}");
    }
    let stats = |x: &[usize], out: &[usize]| ops::stats_pool(t(x, f).view(), t(out, f).view_mut()).unwrap_err().to_string();
    for (msg, names) in
        [(stats(&[1, 4], &[8]), "x [1, 4]"), (stats(&[5, 4], &[4]), "out [4]"), (stats(&[5, 0], &[0]), "x [5, 0]")]
    {
        assert!(msg.contains("stats_pool") && msg.contains(names), "{names}: {msg}");
    }
}
