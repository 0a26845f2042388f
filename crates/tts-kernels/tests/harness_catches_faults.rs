//! The Emu harness must be able to fail: deliberately broken kernels (kernels/faults/faults.cu)
//! are caught by the same checks the real kernels go through (comparison against a Cpu reference
//! in forward, reverse and random schedules; poisoned red zones and shared memory; strict barrier
//! and warp-intrinsic checks; the shared-memory race detector; shared-memory limits), and their
//! correct twins pass.
#![cfg(feature = "emu")]

use tts_kernels::testing::{
    compare, fresh_seed, launch_fault_kernel, launch_fault_kernel_without_opt_in, random_f32, random_i32,
};
use tts_kernels::{DType, Device, EMU_SHARED_OPTIN_MAX, EmuOptions, Error, SHARED_MEM_DEFAULT_LIMIT, Schedule, Tensor};

fn emu(schedule: Schedule) -> Device {
    Device::emu(EmuOptions { schedule, ..EmuOptions::default() }).unwrap()
}

fn emu_with(schedule: Schedule, race_check: bool) -> Device {
    Device::emu(EmuOptions { schedule, race_check, ..EmuOptions::default() }).unwrap()
}

/// Runs fault kernel `kernel` over `x` on `dev` with `grid` blocks of `block` threads and `n = x.len()`.
fn run(dev: &Device, kernel: &'static str, x: &[f32], grid: u32, block: u32) -> tts_kernels::Result<Vec<f32>> {
    let xt = Tensor::from_f32(dev, DType::F32, &[x.len()], x)?;
    let mut yt = Tensor::uninit(dev, DType::F32, &[x.len()])?;
    launch_fault_kernel(kernel, xt.view(), yt.view_mut(), grid, block, 0)?;
    yt.to_f32_vec()
}

/// Small integers as f32: every summation order gives the same sum.
fn integer_values(seed: u64, n: usize) -> Vec<f32> {
    random_i32(seed, n, -8, 9).into_iter().map(|v| v as f32).collect()
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

#[test]
fn static_shared_memory_is_poisoned_for_every_block() {
    for workers in [1, 2] {
        let dev = Device::emu(EmuOptions { workers, ..EmuOptions::default() }).unwrap();
        let n = 4 * 64;
        let y = run(&dev, "fault_stale_static_smem", &vec![0.0; n], 4, 64).unwrap();
        assert!(y[..64].iter().all(|&v| v == 1.0), "block 0 wrote its own shared memory");
        assert!(y[64..].iter().all(|v| v.is_nan()), "blocks 1..4 must read poison, not block 0's values ({workers} workers)");
        // the correct twin: every block writes before it reads
        let y = run(&dev, "fault_fresh_static_smem", &vec![0.0; n], 4, 64).unwrap();
        let want: Vec<f32> = (0..n).map(|i| (i / 64) as f32).collect();
        assert_eq!(y, want);
    }
}

#[test]
fn a_shared_memory_read_modify_write_race_is_caught() {
    let seed = fresh_seed();
    let (grid, block) = (3u32, 96u32);
    let x = integer_values(seed, (grid * block) as usize - 5);
    let sums: Vec<f32> = x.chunks(block as usize).map(|c| c.iter().sum()).collect();
    for schedule in SCHEDULES {
        // the comparison alone misses it: fibers never switch inside `sum += x`
        let y = run(&emu_with(schedule, false), "fault_smem_rmw_race", &x, grid, block).unwrap();
        assert_eq!(y[..grid as usize], sums[..], "seed {seed}, {schedule:?}");
        // the race detector does not
        let e = run(&emu_with(schedule, true), "fault_smem_rmw_race", &x, grid, block).unwrap_err();
        let text = e.to_string();
        eprintln!("{schedule:?}: {text}");
        assert!(matches!(e, Error::Launch { .. }), "{e:?}");
        assert!(text.contains("fault_smem_rmw_race") && text.contains("shared-memory race"), "{text}");
        assert!(text.contains("`sum`") && text.contains("faults.cu"), "the message names the array and its file: {text}");
        // the control: the same sum with atomicAdd
        let y = run(&emu_with(schedule, true), "fault_smem_atomic_sum", &x, grid, block).unwrap();
        assert_eq!(y[..grid as usize], sums[..], "seed {seed}, {schedule:?}");
    }
}

#[test]
fn a_warp_barrier_orders_writes_within_its_warp_only() {
    for schedule in SCHEDULES {
        let dev = emu_with(schedule, true);
        let (grid, block) = (2u32, 128u32);
        let y = run(&dev, "fault_warp_ordered_writes", &[0.0; 8], grid, block).unwrap();
        assert_eq!(y, vec![2.0; 8], "{schedule:?}");
        let e = run(&dev, "fault_cross_warp_writes", &[0.0; 2], grid, block).unwrap_err();
        eprintln!("{schedule:?}: {e}");
        assert!(e.to_string().contains("threads 0 and 32") || e.to_string().contains("threads 32 and 0"), "{e}");
    }
}

#[test]
fn shuffles_and_votes_split_across_call_sites_are_caught() {
    let seed = fresh_seed();
    let n = 200;
    let x = random_f32(seed, n, 1.0);
    for schedule in SCHEDULES {
        let dev = emu(schedule);
        // the control: y[i] = x[i ^ 16] from one call site
        let y = run(&dev, "fault_converged_shuffle", &x, 4, 64).unwrap();
        let want: Vec<f32> = (0..n).map(|i| if (i ^ 16) < n { x[i ^ 16] } else { 0.0 }).collect();
        assert_eq!(y, want, "seed {seed}, {schedule:?}");
        let e = run(&dev, "fault_divergent_shuffle", &x, 4, 64).unwrap_err();
        let text = e.to_string();
        eprintln!("{schedule:?}: {text}");
        assert!(text.contains("different warp intrinsics") && text.contains("__shfl_xor_sync"), "{text}");
        assert!(text.contains("faults.cu:"), "the message names the call sites: {text}");
        let e = run(&dev, "fault_divergent_ballot", &x, 4, 64).unwrap_err();
        let text = e.to_string();
        eprintln!("{schedule:?}: {text}");
        assert!(text.contains("__ballot_sync") && text.contains("__any_sync"), "{text}");
        // __syncwarp from two call sites is legal (sm_70+)
        assert_eq!(run(&dev, "fault_divergent_syncwarp", &x, 4, 64).unwrap(), x, "{schedule:?}");
    }
}

/// Launches `kernel` with `dynamic` bytes of dynamic shared memory (opting in or not) and 128
/// threads per block over 2 blocks.
fn launch_smem(dev: &Device, kernel: &'static str, dynamic: u32, opt_in: bool) -> tts_kernels::Result<Vec<f32>> {
    let n = 256;
    let xt = Tensor::zeros(dev, DType::F32, &[n])?;
    let mut yt = Tensor::uninit(dev, DType::F32, &[n])?;
    if opt_in {
        launch_fault_kernel(kernel, xt.view(), yt.view_mut(), 2, 128, dynamic)?;
    } else {
        launch_fault_kernel_without_opt_in(kernel, xt.view(), yt.view_mut(), 2, 128, dynamic)?;
    }
    yt.to_f32_vec()
}

fn expect_shared_memory_error(r: tts_kernels::Result<Vec<f32>>, kernel: &str, st: u32, dynamic: u32, limit: u32) {
    match r {
        Err(e @ Error::SharedMemory { .. }) => {
            let text = e.to_string();
            eprintln!("{text}");
            let Error::SharedMemory { kernel: k, static_bytes, dynamic_bytes, limit: l, .. } = e else { unreachable!() };
            assert_eq!((k.as_str(), static_bytes, dynamic_bytes, l), (kernel, st, dynamic, limit), "{text}");
            assert!(text.contains(kernel) && text.contains(&dynamic.to_string()) && text.contains(&limit.to_string()), "{text}");
        }
        other => panic!("{kernel}: expected a shared-memory error, got {other:?}"),
    }
}

#[test]
fn a_launch_over_48_kib_without_opt_in_is_refused_and_runs_with_it() {
    const STATIC: u32 = 40 * 1024; // fault_big_static_smem's array
    let dynamic = 16 * 1024;
    let want: Vec<f32> = (0..256).map(|i| (i % 128 + 1) as f32).collect();
    for schedule in SCHEDULES {
        let dev = emu(schedule);
        // 40 KiB static + 16 KiB dynamic, no opt-in: refused, on the first launch (the static size
        // is not known to the launch code yet) as on later ones
        for _ in 0..2 {
            let r = launch_smem(&dev, "fault_big_static_smem", dynamic, false);
            expect_shared_memory_error(r, "fault_big_static_smem", STATIC, dynamic, SHARED_MEM_DEFAULT_LIMIT);
        }
        // the launch code opts in: it runs (on a fresh device too, where the shim opts in for it)
        for d in [dev.clone(), emu(schedule)] {
            assert_eq!(launch_smem(&d, "fault_big_static_smem", dynamic, true).unwrap(), want, "{schedule:?}");
            assert_eq!(launch_smem(&d, "fault_big_static_smem", dynamic, true).unwrap(), want, "{schedule:?}");
            // as on a GPU the raised maximum stays with the kernel
            assert_eq!(launch_smem(&d, "fault_big_static_smem", dynamic, false).unwrap(), want, "{schedule:?}");
        }
    }
    // dynamic shared memory alone above 48 KiB
    let dev = emu(Schedule::Forward);
    let over = SHARED_MEM_DEFAULT_LIMIT + 4;
    expect_shared_memory_error(
        launch_smem(&dev, "fault_stale_dynamic_smem", over, false),
        "fault_stale_dynamic_smem",
        0,
        over,
        SHARED_MEM_DEFAULT_LIMIT,
    );
    let y = launch_smem(&dev, "fault_stale_dynamic_smem", over, true).unwrap();
    assert!(y[..128].iter().all(|&v| v == 1.0) && y[128..].iter().all(|v| v.is_nan()));
}

#[test]
fn a_launch_over_the_opt_in_maximum_is_a_typed_error() {
    let dev = emu(Schedule::Forward);
    let over = EMU_SHARED_OPTIN_MAX + 4;
    // refused by the launch code before anything runs
    expect_shared_memory_error(
        launch_smem(&dev, "fault_stale_dynamic_smem", over, true),
        "fault_stale_dynamic_smem",
        0,
        over,
        EMU_SHARED_OPTIN_MAX,
    );
    // static + dynamic above the maximum: on the first launch the shim finds the static size, later
    // the launch code knows it
    const STATIC: u32 = 40 * 1024;
    let dynamic = EMU_SHARED_OPTIN_MAX - STATIC + 4;
    for _ in 0..2 {
        let r = launch_smem(&dev, "fault_big_static_smem", dynamic, true);
        expect_shared_memory_error(r, "fault_big_static_smem", STATIC, dynamic, EMU_SHARED_OPTIN_MAX);
    }
    let fresh = emu(Schedule::Forward);
    assert!(launch_smem(&fresh, "fault_big_static_smem", 1024, true).is_ok()); // learns the static size
    let r = launch_smem(&fresh, "fault_big_static_smem", dynamic, true);
    expect_shared_memory_error(r, "fault_big_static_smem", STATIC, dynamic, EMU_SHARED_OPTIN_MAX);
    // exactly at the maximum it runs
    let y = launch_smem(&fresh, "fault_big_static_smem", EMU_SHARED_OPTIN_MAX - STATIC, true).unwrap();
    assert_eq!(y[127], 128.0);
    // more static shared memory than a kernel may declare
    let r = launch_smem(&fresh, "fault_static_smem_too_big", 0, true);
    expect_shared_memory_error(r, "fault_static_smem_too_big", 12289 * 4, 0, SHARED_MEM_DEFAULT_LIMIT);
}
