//! A device created on one thread works from another (a server's worker thread), tensors can be
//! dropped on any thread, and one thread can drive two devices: every entry point that talks to the
//! driver or cuBLAS binds the device's context first (issue 12, §4.1).
//!
//! Runs on every kernel device of this build and machine (`testing::kernel_devices`: Emu here, and
//! Cuda on a GPU machine, where `TTS_REQUIRE_CUDA=1` makes a missing GPU a failure). On Emu it checks
//! the plumbing; the property it guards is Cuda's (unverified until the GPU check runs it).
use tts_kernels::testing::{compare, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

/// `out = x · wᵀ` on `dev`, read back.
fn linear_on(dev: &Device, x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let dt = dev.compute_dtype();
    let xt = Tensor::from_f32(dev, dt, &[m, k], x).unwrap();
    let wt = Tensor::from_f32(dev, dt, &[n, k], w).unwrap();
    let mut ot = Tensor::uninit(dev, DType::F32, &[m, n]).unwrap();
    ops::linear(xt.view(), wt.view(), None, ot.view_mut()).unwrap();
    dev.synchronize().unwrap();
    ot.to_f32_vec().unwrap()
}

#[test]
fn a_device_made_on_one_thread_computes_on_another_and_tensors_drop_anywhere() {
    let seed = fresh_seed();
    let (m, n, k) = (5, 67, 129);
    let x = round_bf16(&random_f32(seed, m * k, 1.0));
    let w = round_bf16(&random_f32(seed ^ 9, n * k, 1.0));
    let want = linear_on(&Device::cpu(), &x, &w, m, n, k);
    for (label, dev) in kernel_devices() {
        // made here, used and dropped on a worker thread, then used here again
        let (got, kept) = std::thread::scope(|s| {
            s.spawn(|| {
                let got = linear_on(&dev, &x, &w, m, n, k);
                let kept = Tensor::from_f32(&dev, DType::F32, &[3], &[1.0, 2.0, 3.0]).unwrap();
                (got, kept)
            })
            .join()
            .unwrap()
        });
        let c = compare(&got, &want, 1e-2, 1e-2);
        assert!(c.ok(), "{label} (seed {seed}), on a worker thread: {c:?}");
        assert_eq!(kept.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0], "{label}: a tensor made on the worker, read here");
        // a tensor made here, dropped on another thread
        let t = Tensor::zeros(&dev, DType::F32, &[1 << 16]).unwrap();
        std::thread::spawn(move || drop(t)).join().unwrap();
        let again = linear_on(&dev, &x, &w, m, n, k);
        assert_eq!(again, got, "{label}: the same product on the creating thread differs");
    }
}

#[test]
fn one_thread_drives_two_devices_alternately() {
    let seed = fresh_seed();
    let (m, n, k) = (3, 33, 65);
    let x = round_bf16(&random_f32(seed, m * k, 1.0));
    let w = round_bf16(&random_f32(seed ^ 3, n * k, 1.0));
    let want = linear_on(&Device::cpu(), &x, &w, m, n, k);
    let devs = kernel_devices();
    if devs.is_empty() {
        eprintln!("one_thread_drives_two_devices_alternately: skipped (no Emu in this build and no GPU)");
        return;
    }
    // two devices: GPU 0 and GPU 1 where there are two, else GPU 0 and a second handle of it (its own
    // stream, cuBLAS handle and modules), else two Emu devices
    let gpu0 = devs.iter().find(|(_, d)| d.kind() == tts_kernels::BackendKind::Cuda).map(|(_, d)| d.clone());
    let (a, b) = match gpu0 {
        Some(g0) => match Device::cuda(1) {
            Ok(g1) => (g0, g1),
            Err(_) => {
                eprintln!("one_thread_drives_two_devices_alternately: one GPU; two handles of it");
                (g0, Device::cuda(0).unwrap())
            }
        },
        None => (devs[0].1.clone(), devs[devs.len() - 1].1.clone()),
    };
    assert!(!a.same(&b), "the two devices must be distinct handles");
    let xa = Tensor::from_f32(&a, a.compute_dtype(), &[m, k], &x).unwrap();
    let xb = Tensor::from_f32(&b, b.compute_dtype(), &[m, k], &x).unwrap();
    let ra = linear_on(&a, &x, &w, m, n, k);
    let rb = linear_on(&b, &x, &w, m, n, k);
    for (r, d) in [(&ra, &a), (&rb, &b)] {
        let c = compare(r, &want, 1e-2, 1e-2);
        assert!(c.ok(), "{} (seed {seed}): {c:?}", d.describe());
    }
    // tensors of both stay readable after the other device ran
    assert_eq!(xa.to_f32_vec().unwrap(), x);
    assert_eq!(xb.to_f32_vec().unwrap(), x);
}
