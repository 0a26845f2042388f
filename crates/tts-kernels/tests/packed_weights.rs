//! `ops::pack_linear_weight` and `ops::pack_gemm_weight`: on Cpu the weight is regrouped for the
//! decode GEMV (bit for bit the row-major result for decode rows in whole chunks, within f32 rounding
//! otherwise) or into panels for the many-row GEMM (within f32 rounding, the bias added at the
//! store); on `cpu-bf16` where the GEMV or GEMM takes `vdpbf16ps` or AMX tiles, within the
//! rounding of x to bf16 on top. Every other access to a packed weight is an error; on kernel backends packing changes
//! nothing.
use tts_kernels::testing::random_f32;
use tts_kernels::{DType, Device, Tensor, ops};

type Packer = fn(Tensor) -> tts_kernels::Result<Tensor>;
const PACKERS: [(&str, Packer); 2] = [("gemv", ops::pack_linear_weight), ("gemm", ops::pack_gemm_weight)];

fn linear(dev: &Device, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Vec<f32> {
    let m = x.shape()[0];
    let mut out = Tensor::from_f32(dev, DType::F32, &[m, w.shape()[0]], &vec![f32::NAN; m * w.shape()[0]]).unwrap();
    ops::linear(x.view(), w.view(), b.map(|b| b.view()), out.view_mut()).unwrap();
    out.to_f32_vec().unwrap()
}

#[test]
fn packed_cpu_weights_give_the_row_major_result() {
    for dev in [Device::cpu(), Device::cpu_bf16_weights()] {
        let wd = dev.weight_dtype();
        // cpu-bf16 on AMX, or on AVX-512 BF16 where vdpbf16ps pays, packs bf16 pair panels (x
        // rounded to bf16)
        let bf16_gemm = wd == DType::BF16 && tts_kernels::cpu::isa::bf16_panels_pay();
        // and its decode GEMV on the avx512bf16 path always takes vdpbf16ps, on the amx path the
        // AMX GEMM's panels (x rounded to bf16 either way)
        let bf16_gemv = wd == DType::BF16 && tts_kernels::cpu::isa::active().allows(tts_kernels::cpu::Isa::Avx512Bf16);
        // (m, n, k): decode rows, odd row counts, a prefill-sized m, widths off the chunk size
        for (i, &(m, n, k)) in
            [(2, 96, 64), (1, 7, 48), (3, 45, 1024), (33, 130, 256), (300, 17, 32), (5, 9, 37), (2, 3, 200)].iter().enumerate()
        {
            let seed = 100 + i as u64;
            let x = Tensor::from_f32(&dev, DType::F32, &[m, k], &random_f32(seed, m * k, 1.0)).unwrap();
            let wv = random_f32(seed + 50, n * k, 0.5);
            let w = Tensor::from_f32(&dev, wd, &[n, k], &wv).unwrap();
            let b = Tensor::from_f32(&dev, DType::F32, &[n], &random_f32(seed + 70, n, 1.0)).unwrap();
            for (name, pack) in PACKERS {
                let packed = pack(Tensor::from_f32(&dev, wd, &[n, k], &wv).unwrap()).unwrap();
                assert_eq!(packed.shape(), &[n, k]);
                assert_eq!(packed.to_f32_vec().unwrap(), w.to_f32_vec().unwrap(), "{name}: unpacks to the same values");
                for bias in [None, Some(&b)] {
                    let want = linear(&dev, &x, &w, bias);
                    let got = linear(&dev, &x, &packed, bias);
                    let label = format!("{name} {} [{m}, {k}] x [{n}, {k}], bias {}", dev.describe(), bias.is_some());
                    assert!(got.iter().all(|v| v.is_finite()), "{label}: every output written");
                    // GEMV, decode-sized rows over whole chunks: the row-major GEMV's summation order
                    if name == "gemv" && m <= 16 && k % 16 == 0 && !bf16_gemv {
                        assert_eq!(got, want, "{label}: bit-identical");
                    } else {
                        // two f32 summation orders of k products (and the bias): each within
                        // (k + 1)·u·Σ|terms| of the exact sum (u = 2^-24)
                        let (xs, ws) = (x.to_f32_vec().unwrap(), w.to_f32_vec().unwrap());
                        let bs = b.to_f32_vec().unwrap();
                        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                            let (i, j) = (idx / n, idx % n);
                            let mag: f64 = (0..k).map(|c| (xs[i * k + c] as f64 * ws[j * k + c] as f64).abs()).sum::<f64>()
                                + bias.map_or(0.0, |_| bs[j].abs() as f64);
                            let mut tol = 2.0 * (k as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0 * mag;
                            if (bf16_gemm && name == "gemm") || (bf16_gemv && name == "gemv") {
                                // x rounded to bf16 at the GEMM's or GEMV's input: 2^-9 of each
                                // term's size
                                tol += 2f64.powi(-9) * mag;
                            }
                            assert!(((g - w).abs() as f64) <= tol, "{label}: {g} vs {w} (bound {tol:e})");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_packed_weight_refuses_every_other_access() {
    for (_, pack) in PACKERS {
        refuses_every_other_access(pack);
    }
    // nor packs one way and then the other
    let dev = Device::cpu();
    for ((_, first), (_, second)) in [(PACKERS[0], PACKERS[1]), (PACKERS[1], PACKERS[0])] {
        let w = first(Tensor::from_f32(&dev, DType::F32, &[3, 5], &random_f32(2, 15, 1.0)).unwrap()).unwrap();
        assert!(second(w).is_err());
    }
}

fn refuses_every_other_access(pack: Packer) {
    let dev = Device::cpu_bf16_weights();
    let mut w = pack(Tensor::from_f32(&dev, DType::BF16, &[8, 32], &random_f32(1, 256, 1.0)).unwrap()).unwrap();
    let msg = |e: tts_kernels::Error| e.to_string();
    assert!(msg(w.view().narrow_rows(0, 4).map(|_| ()).unwrap_err()).contains("packed"));
    assert!(msg(w.view().reshape(&[256]).map(|_| ()).unwrap_err()).contains("packed"));
    assert!(msg(w.view().host_bf16().map(|_| ()).unwrap_err()).contains("packed"));
    assert!(msg(w.copy_from_f32(&[0.0; 256]).unwrap_err()).contains("packed"));
    // an op other than linear that would read it as row-major
    let mut out = Tensor::zeros(&dev, DType::F32, &[2, 32]).unwrap();
    let ids = Tensor::from_i32(&dev, &[2], &[0, 1]).unwrap();
    assert!(ops::embed_pos(ids.view(), None, w.view(), out.view_mut()).is_err());
    // only 2-D float weights pack
    let ids3 = Tensor::from_i32(&dev, &[3], &[1, 2, 3]).unwrap();
    assert!(pack(ids3).is_err());
    assert!(pack(Tensor::zeros(&dev, DType::F32, &[2, 3, 4]).unwrap()).is_err());
    assert!(pack(w).is_err(), "packing twice");
}

#[cfg(feature = "emu")]
#[test]
fn packing_is_the_identity_on_kernel_backends() {
    let dev = Device::emu(Default::default()).unwrap();
    let v = random_f32(3, 6 * 16, 1.0);
    for (_, pack) in PACKERS {
        let w = pack(Tensor::from_f32(&dev, DType::BF16, &[6, 16], &v).unwrap()).unwrap();
        // row views still work: the layout is unchanged
        let rows = w.view().narrow_rows(2, 2).unwrap().to_f32_vec().unwrap();
        let want: Vec<f32> = v[32..64].iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        assert_eq!(rows, want);
    }
}
