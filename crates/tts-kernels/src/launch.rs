//! The launch path shared by the Cuda and Emu backends.
//!
//! Op wrappers compute the grid, the block and the kernel's `#[repr(C)]` params struct once, then
//! call [`launch`]; only the last step differs between a GPU (`cuLaunchKernel`) and the host shim
//! (`cushim_launch_<kernel>`). Every kernel takes exactly one argument, its params struct by value,
//! so the argument array is always `[&params]`.
use std::ffi::c_void;

use crate::device::{Backend, Device};
use crate::error::{Error, Result};

/// Grid and block sizes (x, y, z) and dynamic shared memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
}

impl LaunchDims {
    pub(crate) fn new(grid: [u32; 3], block: [u32; 3], smem: u32) -> LaunchDims {
        LaunchDims { grid, block, smem }
    }
}

pub(crate) trait KernelLauncher {
    /// Launches `kernel` with `params` pointing at its params struct.
    /// `params` points at `size` bytes (the struct), 8-byte aligned.
    fn launch_raw(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void, size: usize) -> Result<()>;
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
    match &*dev.inner {
        Backend::Cpu => Err(Error::invalid(op, format!("{kernel}: the Cpu backend runs no kernels"))),
        Backend::Cuda(c) => c.launch_raw(kernel, dims, ptr, std::mem::size_of::<P>()),
        #[cfg(feature = "emu")]
        Backend::Emu(e) => e.launch_raw(kernel, dims, ptr, std::mem::size_of::<P>()),
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
