//! `ops::pack_linear_weight`: on Cpu the weight is regrouped for the decode GEMV and `linear` gives
//! the row-major result (bit for bit for widths in whole chunks, within f32 rounding otherwise);
//! every other access to a packed weight is an error; on kernel backends packing changes nothing.
use tts_kernels::testing::random_f32;
use tts_kernels::{DType, Device, Tensor, ops};

fn linear(dev: &Device, x: &Tensor, w: &Tensor) -> Vec<f32> {
    let m = x.shape()[0];
    let mut out = Tensor::from_f32(dev, DType::F32, &[m, w.shape()[0]], &vec![f32::NAN; m * w.shape()[0]]).unwrap();
    ops::linear(x.view(), w.view(), None, out.view_mut()).unwrap();
    out.to_f32_vec().unwrap()
}

#[test]
fn packed_cpu_weights_give_the_row_major_result() {
    for dev in [Device::cpu(), Device::cpu_bf16_weights()] {
        let wd = dev.weight_dtype();
        // (m, n, k): decode rows, odd row counts, a prefill-sized m, widths off the chunk size
        for (i, &(m, n, k)) in
            [(2, 96, 64), (1, 7, 48), (3, 45, 1024), (33, 130, 256), (300, 17, 32), (5, 9, 37), (2, 3, 200)].iter().enumerate()
        {
            let seed = 100 + i as u64;
            let x = Tensor::from_f32(&dev, DType::F32, &[m, k], &random_f32(seed, m * k, 1.0)).unwrap();
            let wv = random_f32(seed + 50, n * k, 0.5);
            let w = Tensor::from_f32(&dev, wd, &[n, k], &wv).unwrap();
            let want = linear(&dev, &x, &w);
            let packed = ops::pack_linear_weight(Tensor::from_f32(&dev, wd, &[n, k], &wv).unwrap()).unwrap();
            assert_eq!(packed.shape(), &[n, k]);
            assert_eq!(packed.to_f32_vec().unwrap(), w.to_f32_vec().unwrap(), "unpacks to the same values");
            let got = linear(&dev, &x, &packed);
            let label = format!("{} [{m}, {k}] x [{n}, {k}]", dev.describe());
            assert!(got.iter().all(|v| v.is_finite()), "{label}: every output written");
            // decode-sized rows over whole chunks: the same summation order as the row-major GEMV
            if m <= 16 && k % 16 == 0 {
                assert_eq!(got, want, "{label}: bit-identical");
            } else {
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{label}: {g} vs {w}");
                }
            }
        }
    }
}

#[test]
fn a_packed_weight_refuses_every_other_access() {
    let dev = Device::cpu_bf16_weights();
    let mut w =
        ops::pack_linear_weight(Tensor::from_f32(&dev, DType::BF16, &[8, 32], &random_f32(1, 256, 1.0)).unwrap()).unwrap();
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
    assert!(ops::pack_linear_weight(ids3).is_err());
    assert!(ops::pack_linear_weight(Tensor::zeros(&dev, DType::F32, &[2, 3, 4]).unwrap()).is_err());
    assert!(ops::pack_linear_weight(w).is_err(), "packing twice");
}

#[cfg(feature = "emu")]
#[test]
fn packing_is_the_identity_on_kernel_backends() {
    let dev = Device::emu(Default::default()).unwrap();
    let v = random_f32(3, 6 * 16, 1.0);
    let w = ops::pack_linear_weight(Tensor::from_f32(&dev, DType::BF16, &[6, 16], &v).unwrap()).unwrap();
    // row views still work: the layout is unchanged
    let rows = w.view().narrow_rows(2, 2).unwrap().to_f32_vec().unwrap();
    let want: Vec<f32> = v[32..64].iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
    assert_eq!(rows, want);
}
