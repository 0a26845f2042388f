//! The Emu harness must be able to fail: deliberately broken kernels (kernels/faults/faults.cu)
//! are caught by the same checks the real kernels go through (comparison against a Cpu reference
//! in forward, reverse and random schedules; poisoned red zones; strict barrier checks).
#![cfg(feature = "emu")]

use tts_kernels::testing::{compare, fresh_seed, launch_fault_kernel, random_f32};
use tts_kernels::{DType, Device, EmuOptions, Error, Schedule, Tensor};

fn emu(schedule: Schedule) -> Device {
    Device::emu(EmuOptions { schedule, ..EmuOptions::default() }).unwrap()
}

const SCHEDULES: [Schedule; 3] = [Schedule::Forward, Schedule::Reverse, Schedule::Random(7)];

/// y[i] = x[i + 1] within each block of `block` threads, 0 for the block's last thread.
fn shift_reference(x: &[f32], block: usize) -> Vec<f32> {
    (0..x.len()).map(|i| if (i % block) + 1 < block && i + 1 < x.len() { x[i + 1] } else { 0.0 }).collect()
}

/// Runs a shift kernel in every schedule; true when all schedules match the reference.
fn shift_passes_everywhere(kernel: &'static str, n: usize, block: u32, seed: u64) -> bool {
    let x = random_f32(seed, n, 1.0);
    let want = shift_reference(&x, block as usize);
    SCHEDULES.iter().all(|&s| {
        let dev = emu(s);
        let xt = Tensor::from_f32(&dev, DType::F32, &[n], &x).unwrap();
        let mut yt = Tensor::uninit(&dev, DType::F32, &[n]).unwrap();
        let grid = n.div_ceil(block as usize) as u32;
        launch_fault_kernel(kernel, xt.view(), yt.view_mut(), grid, block, 0).unwrap();
        compare(&yt.to_f32_vec().unwrap(), &want, 0.0, 0.0).ok()
    })
}

#[test]
fn a_missing_syncthreads_is_caught() {
    let seed = fresh_seed();
    assert!(shift_passes_everywhere("fault_fixed_barrier", 1000, 256, seed), "the correct kernel must pass (seed {seed})");
    assert!(
        !shift_passes_everywhere("fault_missing_barrier", 1000, 256, seed),
        "the missing barrier went unnoticed (seed {seed})"
    );
}

#[test]
fn a_read_past_the_end_is_caught() {
    let n = 300;
    let x = random_f32(fresh_seed(), n, 1.0);
    // intended: y[i] = x[i] + x[i + 1] with nothing past the end
    let want: Vec<f32> = (0..n).map(|i| x[i] + x.get(i + 1).copied().unwrap_or(0.0)).collect();
    let dev = emu(Schedule::Forward);
    let xt = Tensor::from_f32(&dev, DType::F32, &[n], &x).unwrap();
    let mut yt = Tensor::uninit(&dev, DType::F32, &[n]).unwrap();
    launch_fault_kernel("fault_read_past_end", xt.view(), yt.view_mut(), 3, 128, 0).unwrap();
    let got = yt.to_f32_vec().unwrap();
    assert!(got[n - 1].is_nan(), "the element read from the red zone must be NaN, got {}", got[n - 1]);
    let c = compare(&got, &want, 1e-6, 1e-6);
    assert_eq!(c.failures, 1, "{c:?}");
    assert_eq!(c.first_failure, Some(n - 1));
}

#[test]
fn a_write_past_the_end_is_caught() {
    let n = 100;
    let dev = emu(Schedule::Forward);
    let xt = Tensor::from_f32(&dev, DType::F32, &[n], &random_f32(1, n, 1.0)).unwrap();
    let mut yt = Tensor::uninit(&dev, DType::F32, &[n]).unwrap();
    let e = launch_fault_kernel("fault_write_past_end", xt.view(), yt.view_mut(), 1, 128, 0).unwrap_err();
    assert!(matches!(e, Error::Overrun { side: "after", len: 400, .. }), "{e}");
}

#[test]
fn a_divergent_syncthreads_is_caught() {
    let dev = emu(Schedule::Forward);
    let xt = Tensor::zeros(&dev, DType::F32, &[64]).unwrap();
    let mut yt = Tensor::zeros(&dev, DType::F32, &[64]).unwrap();
    let e = launch_fault_kernel("fault_divergent_barrier", xt.view(), yt.view_mut(), 1, 64, 0).unwrap_err();
    assert!(e.to_string().contains("exited while others wait at __syncthreads"), "{e}");
}

#[test]
fn only_fault_kernels_can_be_launched_this_way() {
    let dev = emu(Schedule::Forward);
    let xt = Tensor::zeros(&dev, DType::F32, &[4]).unwrap();
    let mut yt = Tensor::zeros(&dev, DType::F32, &[4]).unwrap();
    assert!(matches!(launch_fault_kernel("add_rmsnorm_bf16", xt.view(), yt.view_mut(), 1, 32, 0), Err(Error::UnknownKernel(_))));
}

#[test]
fn dynamic_shared_memory_is_poisoned_for_every_block() {
    for workers in [1, 2] {
        let dev = Device::emu(EmuOptions { workers, ..EmuOptions::default() }).unwrap();
        let n = 4 * 64;
        let xt = Tensor::zeros(&dev, DType::F32, &[n]).unwrap();
        let mut yt = Tensor::zeros(&dev, DType::F32, &[n]).unwrap();
        launch_fault_kernel("fault_stale_dynamic_smem", xt.view(), yt.view_mut(), 4, 64, 64 * 4).unwrap();
        let y = yt.to_f32_vec().unwrap();
        assert!(y[..64].iter().all(|&v| v == 1.0), "block 0 wrote its own shared memory");
        assert!(y[64..].iter().all(|v| v.is_nan()), "blocks 1..4 must read poison, not block 0's values ({workers} workers)");
    }
}
