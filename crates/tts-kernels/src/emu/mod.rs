//! The Emu backend: `kernels/*.cu` compiled for the host through `cushim/cushim.h` by the build
//! script, launched by the same launch code as the Cuda backend.
//!
//! Memory is host memory with a red zone on each side of every allocation. New allocations and red
//! zones are poisoned (0xFF bytes: NaN as a float, -1 as an int), so a kernel that reads past the
//! end of its input computes NaN, and one that leaves part of its output unwritten leaves NaN
//! there. After every launch the red zones of all live allocations are checked, so a write past the
//! end (or before the start) fails the launch with [`Error::Overrun`].
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_void};
use std::sync::{Arc, Mutex};

use crate::device::{EmuOptions, Schedule};
use crate::error::{Error, Result};
use crate::graph::{CaptureLog, Recorded};
use crate::launch::{KernelLauncher, LaunchDims};
use crate::ops::linear::Gemm;
use crate::tensor::{HostMem, REDZONE_BYTE};

/// Mirrors `cushim_launch_opts` in cushim.h.
#[repr(C)]
pub(crate) struct LaunchOpts {
    order: u32,
    seed: u32,
    strict: u32,
    workers: u32,
}

type EmuLaunchFn =
    unsafe extern "C" fn(*const u32, *const u32, usize, *mut *mut c_void, *const LaunchOpts, *mut c_char, usize) -> i32;

mod table {
    use super::{EmuLaunchFn, LaunchOpts};
    include!(concat!(env!("OUT_DIR"), "/emu_table.rs"));
}

/// Bytes of poisoned red zone on each side of an Emu allocation.
const REDZONE: usize = 256;

/// The live allocations of one Emu device (data address -> (bytes, red zone bytes)).
#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<BTreeMap<usize, (usize, usize)>>,
}

impl Registry {
    pub(crate) fn unregister(&self, addr: usize) {
        if let Ok(mut l) = self.live.lock() {
            l.remove(&addr);
        }
    }

    /// The first allocation whose red zones were overwritten: (bytes, side).
    fn damaged(&self) -> Option<(usize, &'static str)> {
        let live = self.live.lock().ok()?;
        for (&addr, &(bytes, rz)) in live.iter() {
            let ok = |p: usize| unsafe { std::slice::from_raw_parts(p as *const u8, rz) }.iter().all(|&b| b == REDZONE_BYTE);
            if !ok(addr - rz) {
                return Some((bytes, "before"));
            }
            if !ok(addr + bytes) {
                return Some((bytes, "after"));
            }
        }
        None
    }
}

pub(crate) struct EmuBackend {
    opts: EmuOptions,
    kernels: HashMap<&'static str, EmuLaunchFn>,
    registry: Arc<Registry>,
    /// The launch list being recorded (None: not capturing).
    capture: Mutex<Option<CaptureLog>>,
}

impl EmuBackend {
    pub(crate) fn new(opts: EmuOptions) -> EmuBackend {
        let kernels = table::EMU_KERNELS.iter().map(|&(name, f, _gpu)| (name, f)).collect();
        EmuBackend { opts, kernels, registry: Arc::new(Registry::default()), capture: Mutex::new(None) }
    }

    pub(crate) fn describe(&self) -> String {
        let order = match self.opts.schedule {
            Schedule::Forward => "forward".to_string(),
            Schedule::Reverse => "reverse".to_string(),
            Schedule::Random(s) => format!("random:{s}"),
        };
        format!("emu (kernels/*.cu on the CPU through cushim; schedule {order}, strict {})", self.opts.strict)
    }

    pub(crate) fn is_capturing(&self) -> bool {
        self.capture.lock().is_ok_and(|c| c.is_some())
    }

    /// The emulated GPU's SM count (`EmuOptions::multiprocessors`).
    pub(crate) fn multiprocessor_count(&self) -> usize {
        self.opts.multiprocessors as usize
    }

    /// Records the launches of `f` without running them (as CUDA stream capture does).
    pub(crate) fn capture<E: From<Error>>(
        &self,
        f: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<CaptureLog, E> {
        let poisoned = || Error::invalid("capture", "poisoned lock");
        *self.capture.lock().map_err(|_| poisoned())? = Some(CaptureLog::default());
        let outcome = f();
        let log = self.capture.lock().map_err(|_| poisoned())?.take().unwrap_or_default();
        outcome?;
        if log.recorded.is_empty() {
            return Err(Error::invalid("capture", "nothing was captured").into());
        }
        Ok(log)
    }

    /// Appends to the launch list when capturing; false when not capturing.
    fn record(&self, name: &'static str, item: impl FnOnce() -> Recorded) -> bool {
        match self.capture.lock() {
            Ok(mut c) => match c.as_mut() {
                Some(log) => {
                    log.names.push(name);
                    log.recorded.push(item());
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Runs a recorded launch list.
    pub(crate) fn replay(&self, list: &[Recorded]) -> Result<()> {
        for r in list {
            match r {
                Recorded::Kernel { name, dims, params } => {
                    let mut copy = params.clone();
                    self.run_kernel(name, *dims, copy.as_mut_ptr() as *mut c_void)?;
                }
                Recorded::Gemm(g) => self.run_gemm(g)?,
            }
        }
        Ok(())
    }

    pub(crate) fn alloc(&self, bytes: usize, zero: bool) -> Result<HostMem> {
        let mut mem = HostMem::new(bytes, REDZONE, if zero { 0 } else { REDZONE_BYTE })?;
        self.registry
            .live
            .lock()
            .map_err(|_| Error::invalid("alloc", "Emu registry poisoned"))?
            .insert(mem.data_ptr() as usize, (bytes, REDZONE));
        mem.registry = Some(self.registry.clone());
        Ok(mem)
    }

    /// Row-major `out[m, n] = x[m, k] · w[n, k]ᵀ` on bf16 inputs with f32 accumulation and a bf16 or f32
    /// output: the CPU stand-in
    /// for cuBLAS.
    pub(crate) fn gemm_bf16(&self, g: &Gemm) -> Result<()> {
        if self.record("gemm", || Recorded::Gemm(*g)) {
            return Ok(());
        }
        self.run_gemm(g)
    }

    fn run_gemm(&self, g: &Gemm) -> Result<()> {
        let (m, n, k, x, w, out) = (g.m, g.n, g.k, g.x, g.w, g.out);
        use half::bf16;
        // SAFETY: the op wrapper checked that these are live host allocations of these shapes.
        let (xf, wf): (Vec<f32>, Vec<f32>) = if g.f32_inputs {
            // SAFETY: as above, f32 inputs.
            unsafe {
                (
                    std::slice::from_raw_parts(x as *const f32, m * k).to_vec(),
                    std::slice::from_raw_parts(w as *const f32, n * k).to_vec(),
                )
            }
        } else {
            let (xs, ws) = unsafe {
                (std::slice::from_raw_parts(x as *const bf16, m * k), std::slice::from_raw_parts(w as *const bf16, n * k))
            };
            (xs.iter().map(|v| v.to_f32()).collect(), ws.iter().map(|v| v.to_f32()).collect())
        };
        let mut acc = vec![0f32; m * n];
        // the packed path for every m: a row's result does not depend on the batch (as one cuBLAS
        // algorithm would give)
        crate::cpu::linear_packed(&xf, &wf, &mut acc, m, n, k);
        if g.out_f32 {
            // SAFETY: as above; an f32 output of m*n elements.
            let os = unsafe { std::slice::from_raw_parts_mut(out as *mut f32, m * n) };
            for (o, v) in os.iter_mut().zip(acc) {
                *o = if g.accumulate { *o + v } else { v };
            }
            return Ok(());
        }
        // SAFETY: as above; a bf16 output of m*n elements.
        let os = unsafe { std::slice::from_raw_parts_mut(out as *mut bf16, m * n) };
        for (o, v) in os.iter_mut().zip(acc) {
            *o = bf16::from_f32(if g.accumulate { o.to_f32() + v } else { v }); // one rounding
        }
        Ok(())
    }
}

impl KernelLauncher for EmuBackend {
    fn launch_raw(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void, size: usize) -> Result<()> {
        if !self.kernels.contains_key(kernel) {
            return Err(Error::UnknownKernel(kernel.into()));
        }
        let recorded = self.record(kernel, || {
            let mut words = vec![0u64; size.div_ceil(8)];
            // SAFETY: `params` points at `size` readable bytes; `words` holds at least that many.
            unsafe { std::ptr::copy_nonoverlapping(params as *const u8, words.as_mut_ptr() as *mut u8, size) };
            Recorded::Kernel { name: kernel, dims, params: words }
        });
        if recorded {
            return Ok(());
        }
        self.run_kernel(kernel, dims, params)
    }
}

impl EmuBackend {
    fn run_kernel(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void) -> Result<()> {
        let f = self.kernels.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        let (order, seed) = match self.opts.schedule {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Random(s) => (2, s),
        };
        let opts = LaunchOpts { order, seed, strict: self.opts.strict as u32, workers: self.opts.workers };
        let mut args = [params];
        let mut err = [0 as c_char; 1024];
        // SAFETY: `params` points at the kernel's params struct (see launch.rs); `err` is writable.
        let rc = unsafe {
            f(dims.grid.as_ptr(), dims.block.as_ptr(), dims.smem as usize, args.as_mut_ptr(), &opts, err.as_mut_ptr(), err.len())
        };
        if rc != 0 {
            // SAFETY: the shim NUL-terminates the message (snprintf).
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            return Err(Error::Launch { kernel: kernel.into(), detail: msg });
        }
        if let Some((len, side)) = self.registry.damaged() {
            return Err(Error::Overrun { kernel: kernel.into(), len, side });
        }
        Ok(())
    }
}
