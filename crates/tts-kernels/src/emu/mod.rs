//! The Emu backend: `kernels/*.cu` compiled for the host through `cushim/cushim.h` by the build
//! script, launched by the same launch code as the Cuda backend.
//!
//! Memory is host memory with a red zone on each side of every allocation. New allocations and red
//! zones are poisoned (0xFF bytes: NaN as a float, -1 as an int), so a kernel that reads past the
//! end of its input computes NaN, and one that leaves part of its output unwritten leaves NaN
//! there. After every launch the red zones of all live allocations are checked, so a write past the
//! end (or before the start) fails the launch with [`Error::Overrun`].
//!
//! Shared memory: static `__shared__` arrays are poisoned at their first touch in every block, as is
//! the dynamic shared memory at every block start. Launches are held to the limits of
//! [`EMU_SHARED_OPTIN_MAX`]'s device (48 KiB per block without an opt-in; static + dynamic counted),
//! through the same launch code as Cuda (`launch.rs`). With `EmuOptions::race_check` the shim also
//! fails a launch in which two threads write the same shared byte between two barriers.
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::sync::{Arc, Mutex};

use crate::backend::{EMU_SHARED_OPTIN_MAX, Gemm, KernelBackend, LaunchDims, SharedMemory};
use crate::emu_options::{EmuOptions, Schedule};
use crate::error::{Error, Result};
use crate::host_mem::{HostMem, REDZONE_BYTE, Registry};

/// Mirrors `cushim_launch_opts` in cushim.h.
#[repr(C)]
#[derive(Default)]
pub(crate) struct LaunchOpts {
    order: u32,
    seed: u32,
    strict: u32,
    workers: u32,
    smem_optin_max: u32,
    smem_max_dynamic: u32,
    smem_auto_opt_in: u32,
    race_check: u32,
    out_static_smem: u32,
    out_opted_in: u32,
    out_smem_limit: u32,
    out_pad: u32,
}

type EmuLaunchFn =
    unsafe extern "C" fn(*const u32, *const u32, usize, *mut *mut c_void, *mut LaunchOpts, *mut c_char, usize) -> i32;

/// What Emu knows about a kernel's shared memory (as a GPU keeps it per loaded function).
#[derive(Default, Clone, Copy)]
struct KernelShared {
    /// Learned from the kernel's launches (the most any block registered); None before the first.
    static_bytes: Option<u32>,
    /// `MAX_DYNAMIC_SHARED_SIZE_BYTES` as raised by the launch code; 0 = never raised.
    max_dynamic: u32,
}

mod capture;
pub(crate) use capture::{CaptureLog, Recorded};

mod table {
    use super::{EmuLaunchFn, LaunchOpts};
    include!(concat!(env!("OUT_DIR"), "/emu_table.rs"));
}

/// Bytes of poisoned red zone on each side of an Emu allocation.
const REDZONE: usize = 256;

pub(crate) struct EmuBackend {
    opts: EmuOptions,
    kernels: HashMap<&'static str, EmuLaunchFn>,
    registry: Arc<Registry>,
    /// The launch list being recorded (None: not capturing).
    capture: Mutex<Option<CaptureLog>>,
    shared: Mutex<HashMap<&'static str, KernelShared>>,
}

impl EmuBackend {
    pub(crate) fn new(opts: EmuOptions) -> EmuBackend {
        let kernels = table::EMU_KERNELS.iter().map(|&(name, f, _gpu)| (name, f)).collect();
        EmuBackend {
            opts,
            kernels,
            registry: Arc::new(Registry::default()),
            capture: Mutex::new(None),
            shared: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let order = match self.opts.schedule {
            Schedule::Forward => "forward".to_string(),
            Schedule::Reverse => "reverse".to_string(),
            Schedule::Random(s) => format!("random:{s}"),
        };
        format!(
            "emu (kernels/*.cu on the CPU through cushim; schedule {order}, strict {}, race check {})",
            self.opts.strict, self.opts.race_check
        )
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
        self.registry.register(mem.data_ptr() as usize, bytes, REDZONE)?;
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
            // SAFETY: as above, bf16 inputs of m·k and n·k elements.
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

impl KernelBackend for EmuBackend {
    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.gemm_bf16(g)
    }

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

impl SharedMemory for EmuBackend {
    fn static_shared_bytes(&self, kernel: &'static str) -> Result<Option<u32>> {
        Ok(self.shared_of(kernel)?.static_bytes)
    }

    fn shared_optin_max(&self) -> Result<u32> {
        Ok(EMU_SHARED_OPTIN_MAX)
    }

    fn opt_in_dynamic_shared(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        let mut table = self.shared.lock().map_err(|_| Error::invalid("launch", "Emu shared-memory table poisoned"))?;
        let k = table.entry(kernel).or_default();
        let st = k.static_bytes.unwrap_or(0);
        // as cuFuncSetAttribute: static + the raised maximum must fit the opt-in maximum
        if st as u64 + bytes as u64 > EMU_SHARED_OPTIN_MAX as u64 {
            return Err(Error::SharedMemory {
                kernel: kernel.into(),
                static_bytes: st,
                dynamic_bytes: bytes,
                limit: EMU_SHARED_OPTIN_MAX,
                reason: "the opt-in cannot raise the kernel's maximum that far".into(),
            });
        }
        k.max_dynamic = k.max_dynamic.max(bytes);
        Ok(())
    }
}

impl EmuBackend {
    fn shared_of(&self, kernel: &'static str) -> Result<KernelShared> {
        let table = self.shared.lock().map_err(|_| Error::invalid("launch", "Emu shared-memory table poisoned"))?;
        Ok(table.get(kernel).copied().unwrap_or_default())
    }

    fn run_kernel(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void) -> Result<()> {
        let f = self.kernels.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        let (order, seed) = match self.opts.schedule {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Random(s) => (2, s),
        };
        let known = self.shared_of(kernel)?;
        let mut opts = LaunchOpts {
            order,
            seed,
            strict: self.opts.strict as u32,
            workers: self.opts.workers,
            smem_optin_max: EMU_SHARED_OPTIN_MAX,
            smem_max_dynamic: known.max_dynamic,
            // the launch code deferred its rule to the first launch (launch.rs, SharedMemPlan::Deferred)
            smem_auto_opt_in: (dims.opt_in && known.static_bytes.is_none()) as u32,
            race_check: self.opts.race_check as u32,
            ..LaunchOpts::default()
        };
        let mut args = [params];
        let mut err = [0 as c_char; 1024];
        // SAFETY: `params` points at the kernel's params struct (see launch.rs); `opts` and `err` are
        // writable and live for the call.
        let rc = unsafe {
            f(
                dims.grid.as_ptr(),
                dims.block.as_ptr(),
                dims.smem as usize,
                args.as_mut_ptr(),
                &mut opts,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.learn_shared(kernel, &opts, dims.smem)?;
        if rc != 0 {
            // SAFETY: the shim NUL-terminates the message (snprintf).
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            if opts.out_smem_limit != 0 {
                return Err(Error::SharedMemory {
                    kernel: kernel.into(),
                    static_bytes: opts.out_static_smem,
                    dynamic_bytes: dims.smem,
                    limit: opts.out_smem_limit,
                    reason: msg,
                });
            }
            return Err(Error::Launch { kernel: kernel.into(), detail: msg });
        }
        if let Some((len, side)) = self.registry.damaged() {
            return Err(Error::Overrun { kernel: kernel.into(), len, side });
        }
        Ok(())
    }

    /// Keeps what a launch taught about `kernel`: its static shared bytes, and an opt-in the shim
    /// made for a deferred launch.
    fn learn_shared(&self, kernel: &'static str, opts: &LaunchOpts, dynamic: u32) -> Result<()> {
        let mut table = self.shared.lock().map_err(|_| Error::invalid("launch", "Emu shared-memory table poisoned"))?;
        let k = table.entry(kernel).or_default();
        // a launch whose blocks all returned before the kernel's declarations registers nothing: a
        // kernel whose static size is still unknown keeps having the launch code's rule applied by
        // the shim (SharedMemPlan::Deferred), which sees every array a block reaches
        if opts.out_smem_limit == 0 && opts.out_static_smem > 0 {
            k.static_bytes = Some(k.static_bytes.unwrap_or(0).max(opts.out_static_smem));
        }
        if opts.out_opted_in != 0 {
            k.max_dynamic = k.max_dynamic.max(dynamic);
        }
        Ok(())
    }
}
