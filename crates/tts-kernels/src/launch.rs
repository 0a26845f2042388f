//! The launch path shared by the Cuda and Emu backends.
//!
//! Op wrappers compute the grid, the block and the kernel's `#[repr(C)]` params struct once, then
//! call [`launch`]; only the last step differs between a GPU (`cuLaunchKernel`) and the host shim
//! (`cushim_launch_<kernel>`). Every kernel takes exactly one argument, its params struct by value,
//! so the argument array is always `[&params]`.
//!
//! Shared memory is checked here for every launch, as a GPU would: a block may use 48 KiB
//! ([`SHARED_MEM_DEFAULT_LIMIT`], static + dynamic) unless the kernel's maximum dynamic size was
//! raised (an "opt-in", `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), and never more than the
//! device's opt-in maximum per block. Above 48 KiB the launch code opts in through the backend;
//! above the maximum the launch is an [`Error::SharedMemory`] naming the kernel and the sizes.
use std::ffi::c_void;

pub(crate) use crate::backend::LaunchDims;
use crate::backend::{Gemm, KernelBackend, SHARED_MEM_DEFAULT_LIMIT, SharedMemory};
use crate::device::{Backend, Device};
use crate::error::{Error, Result};

/// How a launch's shared memory is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedMemPlan {
    /// Static + dynamic within the 48 KiB every launch gets.
    Default,
    /// Above 48 KiB: the kernel's maximum dynamic size is raised first.
    OptIn,
    /// The static size is not known yet (Emu, a kernel's first launch) and the dynamic size alone
    /// fits 48 KiB: the backend applies this same rule once it knows the static size.
    Deferred,
}

/// The shared-memory rule of every launch: `static_bytes + dynamic` above the device's opt-in
/// maximum is an error; above [`SHARED_MEM_DEFAULT_LIMIT`] the kernel must opt in.
pub(crate) fn plan_shared_memory(kernel: &str, static_bytes: Option<u32>, dynamic: u32, optin_max: u32) -> Result<SharedMemPlan> {
    let total = static_bytes.unwrap_or(0) as u64 + dynamic as u64;
    if total > optin_max as u64 {
        return Err(Error::SharedMemory {
            kernel: kernel.into(),
            static_bytes: static_bytes.unwrap_or(0),
            dynamic_bytes: dynamic,
            limit: optin_max,
            reason: "more than the device allows one block, even after opting in".into(),
        });
    }
    Ok(if total > SHARED_MEM_DEFAULT_LIMIT as u64 {
        SharedMemPlan::OptIn
    } else if static_bytes.is_none() {
        SharedMemPlan::Deferred
    } else {
        SharedMemPlan::Default
    })
}

/// Checks a launch's shared memory against `backend`'s limits and opts in where needed.
fn prepare_shared_memory(backend: &dyn SharedMemory, kernel: &'static str, dims: LaunchDims) -> Result<()> {
    // no dynamic shared memory: the static size alone is at most 48 KiB (ptxas; the Emu shim checks it)
    if dims.smem == 0 || !dims.opt_in {
        return Ok(());
    }
    let plan = plan_shared_memory(kernel, backend.static_shared_bytes(kernel)?, dims.smem, backend.shared_optin_max()?)?;
    if plan == SharedMemPlan::OptIn {
        backend.opt_in_dynamic_shared(kernel, dims.smem)?;
    }
    Ok(())
}

/// Launches `kernel` on a GPU-style backend. `P` must mirror the kernel's params struct exactly.
pub(crate) fn launch<P: bytemuck::Pod>(dev: &Device, kernel: &'static str, dims: LaunchDims, params: &P) -> Result<()> {
    let op = "launch";
    if dims.grid.contains(&0) || dims.block.contains(&0) {
        return Err(Error::invalid(op, format!("{kernel}: empty grid or block {dims:?}")));
    }
    if dims.grid[1] > 65535 || dims.grid[2] > 65535 || dims.block.iter().product::<u32>() > 1024 {
        return Err(Error::invalid(op, format!("{kernel}: grid or block too large {dims:?}")));
    }
    const { assert!(std::mem::align_of::<P>() <= 8, "params structs are at most 8-byte aligned") };
    let mut copy = *params;
    let ptr = &mut copy as *mut P as *mut c_void;
    let backend = kernel_backend(dev, kernel)?;
    prepare_shared_memory(backend, kernel, dims)?;
    backend.launch_raw(kernel, dims, ptr, std::mem::size_of::<P>())
}

/// Runs one GEMM on a kernel backend (Cuda: cuBLAS; Emu: the CPU stand-in); records it while capturing.
pub(crate) fn gemm(dev: &Device, g: &Gemm) -> Result<()> {
    kernel_backend(dev, "gemm")?.gemm(g)
}

/// `dev`'s kernel backend; the Cpu backend runs no kernels (an error naming `what`).
fn kernel_backend<'d>(dev: &'d Device, what: &str) -> Result<&'d dyn KernelBackend> {
    match &*dev.inner {
        Backend::Cpu => Err(Error::invalid("launch", format!("{what}: the Cpu backend runs no kernels"))),
        Backend::Cuda(c) => Ok(c),
        #[cfg(feature = "emu")]
        Backend::Emu(e) => Ok(e),
    }
}

/// `ceil(a / b)` as a grid dimension, with an error instead of an overflow.
pub(crate) fn blocks_for(op: &'static str, a: usize, b: u32) -> Result<u32> {
    u32::try_from(a.div_ceil(b as usize)).map_err(|_| Error::invalid(op, format!("{a} elements need too many blocks")))
}

/// A size as a u32 kernel parameter, with an error instead of truncation.
pub(crate) fn u32_param(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit a kernel's u32 parameter")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 101_376;

    #[test]
    fn shared_memory_within_48_kib_needs_no_opt_in() {
        assert_eq!(plan_shared_memory("k", Some(0), SHARED_MEM_DEFAULT_LIMIT, MAX).unwrap(), SharedMemPlan::Default);
        assert_eq!(plan_shared_memory("k", Some(1000), SHARED_MEM_DEFAULT_LIMIT - 1000, MAX).unwrap(), SharedMemPlan::Default);
    }

    #[test]
    fn static_bytes_count_towards_the_opt_in() {
        // the sampler at its largest vocabulary: 48 KiB of bitmap + its static scratch
        assert_eq!(plan_shared_memory("k", Some(404), SHARED_MEM_DEFAULT_LIMIT, MAX).unwrap(), SharedMemPlan::OptIn);
        assert_eq!(plan_shared_memory("k", Some(1), SHARED_MEM_DEFAULT_LIMIT, MAX).unwrap(), SharedMemPlan::OptIn);
        assert_eq!(plan_shared_memory("k", None, SHARED_MEM_DEFAULT_LIMIT + 1, MAX).unwrap(), SharedMemPlan::OptIn);
        assert_eq!(plan_shared_memory("k", None, SHARED_MEM_DEFAULT_LIMIT, MAX).unwrap(), SharedMemPlan::Deferred);
    }

    #[test]
    fn above_the_opt_in_maximum_is_an_error_naming_the_kernel_and_sizes() {
        assert_eq!(plan_shared_memory("k", Some(376), MAX - 376, MAX).unwrap(), SharedMemPlan::OptIn);
        let e = plan_shared_memory("sample_tokens_f32", Some(377), MAX - 376, MAX).unwrap_err();
        match &e {
            Error::SharedMemory { kernel, static_bytes: 377, dynamic_bytes, limit: MAX, .. } => {
                assert_eq!(kernel, "sample_tokens_f32");
                assert_eq!(*dynamic_bytes, MAX - 376);
            }
            other => panic!("wrong error {other:?}"),
        }
        let text = e.to_string();
        assert!(text.contains("sample_tokens_f32") && text.contains("377") && text.contains(&MAX.to_string()), "{text}");
        assert!(matches!(plan_shared_memory("k", None, u32::MAX, MAX), Err(Error::SharedMemory { .. })));
    }
}
