//! Cpu reference ops (conv family): the im2col of a 1-D convolution and the overlap-add of a
//! transposed one. Mirrors `kernels/conv.cu`; the op wrappers are in [`crate::ops::im2col`] and
//! [`crate::ops::col2im_transpose`] (time-major `[batch, time, channels]` throughout).
/// How an im2col reads positions outside a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (PyTorch's `padding=` and `F.pad` with zeros).
    Zero,
    /// Reflection about the first and last valid sample (`F.pad(mode="reflect")`,
    /// `ReflectionPad1d`, `torch.stft(center=True)`): index −i reads i, index S−1+i reads S−1−i.
    Reflect,
}

/// The geometry of one im2col (`ops::im2col`, [`im2col`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Im2col {
    /// Kernel taps K (≥ 1).
    pub kernel: usize,
    /// Stride (≥ 1).
    pub stride: usize,
    /// Dilation (≥ 1).
    pub dilation: usize,
    /// Padding before the first sample; the padding after the last is implied by the output length.
    pub pad_left: usize,
    /// Nearest-neighbour upsampling of the input applied before the taps (1 = none).
    pub upsample: usize,
    /// What positions outside the sequence read.
    pub pad: PadMode,
}

/// The geometry of one depthwise convolution (`ops::depthwise_conv1d`, [`depthwise_conv1d`]): zero
/// padding, stride 1, the output as long as the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseConv {
    /// The column of `x`'s rows where the convolved channels start (the channels are
    /// `col_offset..col_offset + C`, `C` from the weight).
    pub col_offset: usize,
    /// Padding before the first row; taps past the last row read zero too.
    pub pad_left: usize,
    /// Whether the input itself is added to the output (the FSMN memory's `conv(v) + v`).
    pub residual: bool,
}

/// The sizes of one [`depthwise_conv1d`]: `batch` sequences of `len` rows `row` wide; `taps`
/// taps over `channels` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseShape {
    pub batch: usize,
    pub len: usize,
    pub row: usize,
    pub channels: usize,
    pub taps: usize,
}

/// `out[b, t, c] = Σ_j w[j, c] · x[b, t + j − pad_left, col_offset + c] (+ x[b, t, col_offset + c])`
/// over the taps `j` whose row lies in `0..len`, summed from 0 for increasing `j` with each product
/// and sum rounded alone, the input added last (kernels/conv.cu's `depthwise_conv1d` in the same
/// order: the same bits). `x`: `[batch, len, row]`, `w`: `[taps, channels]` tap-major, `out`:
/// `[batch, len, channels]`; the caller has checked the sizes and `col_offset + channels ≤ row`.
pub fn depthwise_conv1d(x: &[f32], w: &[f32], out: &mut [f32], s: DepthwiseShape, p: DepthwiseConv) {
    use rayon::prelude::*;
    let c = s.channels;
    if c == 0 || s.len == 0 {
        return;
    }
    out[..s.batch * s.len * c].par_chunks_mut(c).with_min_len(4).enumerate().for_each(|(bt, dst)| {
        let (b, t) = (bt / s.len, bt % s.len);
        let src = |i: usize| &x[(b * s.len + i) * s.row + p.col_offset..][..c];
        dst.fill(0.0);
        // taps j with 0 ≤ t + j − pad_left < len
        let j0 = p.pad_left.saturating_sub(t).min(s.taps);
        let j1 = s.taps.min((s.len + p.pad_left).saturating_sub(t));
        for j in j0..j1 {
            for ((o, &v), &wj) in dst.iter_mut().zip(src(t + j - p.pad_left)).zip(&w[j * c..(j + 1) * c]) {
                *o += wj * v;
            }
        }
        if p.residual {
            for (o, &v) in dst.iter_mut().zip(src(t)) {
                *o += v;
            }
        }
    });
}

/// The row of the (upsampled) source sequence of length `s` that position `pos` reads, or `None`
/// for a zero: positions inside `0..s` read themselves; with `reflect`, `-i` reads `i` and `s - 1 + i`
/// reads `s - 1 - i`; a position still outside `0..s` (after at most one reflection) reads zero.
pub fn im2col_source(pos: i64, s: i64, reflect: bool) -> Option<i64> {
    let mut i = pos;
    if reflect {
        if i < 0 {
            i = -i;
        } else if i >= s {
            i = 2 * (s - 1) - i;
        }
    }
    (0..s).contains(&i).then_some(i)
}

/// The first `len` of `lens` outside `0..=max` as `(batch, value)`, if any.
pub(crate) fn check_lens(lens: Option<&[i32]>, max: usize) -> Result<(), (usize, i32)> {
    match lens {
        Some(l) => match l.iter().position(|&v| v < 0 || v as i64 > max as i64) {
            Some(b) => Err((b, l[b])),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Kernel sizes up to which [`im2col`] writes each row in order (the taps' sources gathered first).
const MAX_GATHER_TAPS: usize = 16;

/// `out[b, t, c·K + j] = src_b(t·stride + j·dilation − pad_left, c)` with `src_b(i, c) =
/// x[b, i / upsample, c]` over `0..lens[b]·upsample` (see [`im2col_source`] outside of it).
/// `x`: `[batch, l_in, channels]`, `out`: `[batch, l_out, channels·K]`. A length outside
/// `0..=l_in` is an error `(batch, len)` and nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn im2col(
    x: &[f32],
    lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    l_in: usize,
    channels: usize,
    l_out: usize,
    p: &Im2col,
) -> Result<(), (usize, i32)> {
    check_lens(lens, l_in)?;
    let k = p.kernel;
    let ck = channels * k;
    if ck == 0 || l_out == 0 {
        return Ok(());
    }
    let reflect = p.pad == PadMode::Reflect;
    // one output row per (b, t), rows in parallel (each row is written alone: same values)
    use rayon::prelude::*;
    out[..batch * l_out * ck].par_chunks_mut(ck).with_min_len(64).enumerate().for_each(|(bt, row)| {
        let (b, t) = (bt / l_out, bt % l_out);
        let len = lens.map_or(l_in, |l| l[b] as usize);
        let s = (len * p.upsample) as i64;
        let xb = &x[b * l_in * channels..(b + 1) * l_in * channels];
        let tap = |j: usize| {
            let pos = (t * p.stride + j * p.dilation) as i64 - p.pad_left as i64;
            im2col_source(pos, s, reflect).map(|i| &xb[(i as usize / p.upsample) * channels..][..channels])
        };
        if k <= MAX_GATHER_TAPS {
            // the row written in order, gathering from the k source frames (a write every k-th
            // element was ~1.4% of a 10 s S3Gen synthesis)
            let taps: [Option<&[f32]>; MAX_GATHER_TAPS] = std::array::from_fn(|j| if j < k { tap(j) } else { None });
            for (c, dst) in row.chunks_exact_mut(k).enumerate() {
                for (d, src) in dst.iter_mut().zip(&taps) {
                    *d = src.map_or(0.0, |s| s[c]);
                }
            }
        } else {
            for j in 0..k {
                let src = tap(j);
                for c in 0..channels {
                    row[c * k + j] = src.map_or(0.0, |s| s[c]);
                }
            }
        }
    });
    Ok(())
}

/// `out[b, t, c] = Σ_j cols[b, i, c·K + j] (+ bias[c])` over `j < K` ascending with
/// `i·stride + j − pad = t` and `i < lens[b]` (`l_in` without lens), summed in f32 in that order
/// from 0, the bias added last (exactly what `col2im_transpose_1d` computes).
/// `cols`: `[batch, l_in, channels·K]`, `out`: `[batch, l_out, channels]`. A length outside
/// `0..=l_in` is an error `(batch, len)` and nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn col2im_transpose(
    cols: &[f32],
    lens: Option<&[i32]>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    batch: usize,
    l_in: usize,
    channels: usize,
    l_out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<(), (usize, i32)> {
    check_lens(lens, l_in)?;
    let ck = channels * kernel;
    for b in 0..batch {
        let len = lens.map_or(l_in, |l| l[b] as usize);
        for t in 0..l_out {
            let tp = t + pad;
            let row = &mut out[(b * l_out + t) * channels..(b * l_out + t + 1) * channels];
            for (c, o) in row.iter_mut().enumerate() {
                let mut acc = 0f32;
                let mut j = tp % stride;
                while j < kernel && j <= tp {
                    let i = (tp - j) / stride;
                    if i < len {
                        acc += cols[(b * l_in + i) * ck + c * kernel + j];
                    }
                    j += stride;
                }
                *o = match bias {
                    Some(bv) => acc + bv[c],
                    None => acc,
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_f32, random_i32};
    use proptest::prelude::*;

    /// A direct `Conv1d` over the time-major input (torch semantics): `y[b, t, o] = Σ_{c, j}
    /// w[o, c, j] · src(t·stride + j·dilation − pad_left, c)`, with the padding / reflection /
    /// upsampling written out independently of [`im2col_source`], in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct_conv1d(
        x: &[f32],
        lens: &[i32],
        w: &[f32],
        batch: usize,
        l_in: usize,
        c_in: usize,
        c_out: usize,
        l_out: usize,
        p: &Im2col,
    ) -> Vec<f64> {
        let k = p.kernel;
        let mut y = vec![0f64; batch * l_out * c_out];
        for b in 0..batch {
            // the upsampled, masked source of this batch as an explicit vector
            let s = lens[b] as usize * p.upsample;
            let src: Vec<&[f32]> = (0..s).map(|i| &x[(b * l_in + i / p.upsample) * c_in..][..c_in]).collect();
            // the padded sequence torch would build: pad_left in front, enough behind
            let right = (l_out * p.stride + k * p.dilation).saturating_sub(s) + 1;
            let mut padded: Vec<Option<&[f32]>> = Vec::new();
            for q in 0..p.pad_left + s + right {
                let i = q as i64 - p.pad_left as i64; // position in the source
                let v = if (0..s as i64).contains(&i) {
                    Some(src[i as usize])
                } else if p.pad == PadMode::Reflect {
                    let r = if i < 0 { -i } else { 2 * s as i64 - 2 - i };
                    if (0..s as i64).contains(&r) { Some(src[r as usize]) } else { None }
                } else {
                    None
                };
                padded.push(v);
            }
            for t in 0..l_out {
                for o in 0..c_out {
                    let mut acc = 0f64;
                    for j in 0..k {
                        if let Some(v) = padded[t * p.stride + j * p.dilation] {
                            for c in 0..c_in {
                                acc += w[(o * c_in + c) * k + j] as f64 * v[c] as f64;
                            }
                        }
                    }
                    y[(b * l_out + t) * c_out + o] = acc;
                }
            }
        }
        y
    }

    /// `x [m, kk] · w[n, kk]ᵀ` in f64.
    fn matmul_t(x: &[f32], w: &[f32], m: usize, n: usize, kk: usize) -> Vec<f64> {
        let mut o = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..kk).map(|t| x[i * kk + t] as f64 * w[j * kk + t] as f64).sum();
            }
        }
        o
    }

    fn close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{what}: [{i}] {g} vs {w}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn im2col_then_gemm_is_a_direct_conv1d(
            batch in 1usize..4, l_in in 1usize..12, c_in in 1usize..4, c_out in 1usize..4,
            kernel in prop_oneof![1usize..6, 15usize..20], stride in 1usize..4, dilation in 1usize..4, pad_left in 0usize..7,
            upsample in 1usize..4, reflect in any::<bool>(), extra in 0usize..6, seed in any::<u64>(),
        ) {
            let p = Im2col { kernel, stride, dilation, pad_left, upsample, pad: if reflect { PadMode::Reflect } else { PadMode::Zero } };
            let mut lens = random_i32(seed, batch, 0, l_in as i32 + 1);
            lens[0] = l_in as i32;
            let s_max = l_in * upsample;
            let l_out = (s_max + 2 * pad_left).saturating_sub(dilation * (kernel - 1) + 1) / stride + 1 + extra;
            let mut x = random_f32(seed ^ 1, batch * l_in * c_in, 1.0);
            // rows past each length must not be read: poison them
            for b in 0..batch {
                for t in lens[b] as usize..l_in {
                    x[(b * l_in + t) * c_in..(b * l_in + t + 1) * c_in].fill(f32::NAN);
                }
            }
            let w = random_f32(seed ^ 2, c_out * c_in * kernel, 1.0);
            let mut cols = vec![f32::NAN; batch * l_out * c_in * kernel];
            im2col(&x, Some(&lens), &mut cols, batch, l_in, c_in, l_out, &p).unwrap();
            let got = matmul_t(&cols, &w, batch * l_out, c_out, c_in * kernel);
            let want = direct_conv1d(&x, &lens, &w, batch, l_in, c_in, c_out, l_out, &p);
            close(&got, &want, &format!("{p:?} lens {lens:?} l_out {l_out}"));
        }

        #[test]
        fn gemm_then_col2im_is_a_direct_conv_transpose1d(
            batch in 1usize..4, l_in in 1usize..10, c_in in 1usize..4, c_out in 1usize..4,
            kernel in 1usize..9, stride in 1usize..5, pad in 0usize..5, extra in 0usize..4, seed in any::<u64>(),
        ) {
            let mut lens = random_i32(seed, batch, 0, l_in as i32 + 1);
            lens[0] = l_in as i32;
            let l_out = ((l_in - 1) * stride + kernel).saturating_sub(2 * pad) + extra;
            let mut x = random_f32(seed ^ 1, batch * l_in * c_in, 1.0);
            for b in 0..batch {
                for t in lens[b] as usize..l_in {
                    x[(b * l_in + t) * c_in..(b * l_in + t + 1) * c_in].fill(f32::NAN);
                }
            }
            // torch weight (C_in, C_out, K), and its GEMM form [C_out·K, C_in]
            let w = random_f32(seed ^ 2, c_in * c_out * kernel, 1.0);
            let bias = random_f32(seed ^ 3, c_out, 1.0);
            let mut wt = vec![0f32; c_out * kernel * c_in];
            for c in 0..c_in {
                for o in 0..c_out {
                    for j in 0..kernel {
                        wt[(o * kernel + j) * c_in + c] = w[(c * c_out + o) * kernel + j];
                    }
                }
            }
            let cols: Vec<f32> = matmul_t(&x, &wt, batch * l_in, c_out * kernel, c_in).iter().map(|&v| v as f32).collect();
            let mut out = vec![f32::NAN; batch * l_out * c_out];
            col2im_transpose(&cols, Some(&lens), Some(&bias), &mut out, batch, l_in, c_out, l_out, kernel, stride, pad).unwrap();
            // direct scatter form: y[i·stride + j − pad] += w[c, o, j]·x[i, c] over valid inputs i
            let mut want = vec![0f64; batch * l_out * c_out];
            for b in 0..batch {
                for t in 0..l_out {
                    for o in 0..c_out {
                        want[(b * l_out + t) * c_out + o] = bias[o] as f64;
                    }
                }
                for i in 0..lens[b] as usize {
                    for j in 0..kernel {
                        let t = (i * stride + j) as i64 - pad as i64;
                        if t < 0 || t >= l_out as i64 {
                            continue;
                        }
                        for o in 0..c_out {
                            for c in 0..c_in {
                                want[(b * l_out + t as usize) * c_out + o] +=
                                    w[(c * c_out + o) * kernel + j] as f64 * x[(b * l_in + i) * c_in + c] as f64;
                            }
                        }
                    }
                }
            }
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                prop_assert!((g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "[{}] {} vs {} (lens {:?})", i, g, w, lens);
            }
        }
    }

    #[test]
    fn reflection_matches_torch_reflection_pad() {
        // F.pad([0, 1, 2, 3], (2, 2), mode="reflect") = [2, 1, 0, 1, 2, 3, 2, 1]
        let got: Vec<Option<i64>> = (-2..6).map(|i| im2col_source(i, 4, true)).collect();
        assert_eq!(got, [2, 1, 0, 1, 2, 3, 2, 1].map(Some));
        // beyond one reflection, and zero padding
        assert_eq!(im2col_source(-4, 4, true), None);
        assert_eq!(im2col_source(7, 4, true), None);
        assert_eq!(im2col_source(-1, 4, false), None);
        assert_eq!(im2col_source(0, 0, true), None);
        assert_eq!(im2col_source(-1, 1, true), None);
    }

    #[test]
    fn bad_lens_are_reported_and_nothing_is_written() {
        let p = Im2col { kernel: 1, stride: 1, dilation: 1, pad_left: 0, upsample: 1, pad: PadMode::Zero };
        let mut out = vec![7.0f32; 6];
        assert_eq!(im2col(&[1.0; 6], Some(&[3, 4]), &mut out, 2, 3, 1, 3, &p), Err((1, 4)));
        assert_eq!(im2col(&[1.0; 6], Some(&[-1, 3]), &mut out, 2, 3, 1, 3, &p), Err((0, -1)));
        assert_eq!(col2im_transpose(&[1.0; 6], Some(&[3, -2]), None, &mut out, 2, 3, 1, 3, 1, 1, 0), Err((1, -2)));
        assert!(out.iter().all(|&v| v == 7.0));
    }
}
