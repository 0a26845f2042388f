//! Shared-memory limits of the Cuda backend: what `launch.rs` asks before every launch that uses
//! dynamic shared memory (see [`SharedMemory`]).
//!
//! - the device's opt-in maximum per block (`CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`),
//!   queried once;
//! - each kernel's static shared size (`CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`), queried once;
//! - the opt-in: `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` raised once per kernel to the
//!   largest dynamic size a launch needed (never lowered).
//!
//! Unverified on a GPU: no launch of this code has run on real hardware yet.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};

use super::{CudaBackend, drv_err};
use crate::backend::SharedMemory;
use crate::error::{Error, Result};

/// Per backend: the device's opt-in maximum and, per kernel, (static bytes, raised maximum).
#[derive(Default)]
pub(crate) struct SharedMemState {
    optin_max: OnceLock<u32>,
    kernels: Mutex<HashMap<&'static str, KernelShared>>,
}

#[derive(Default, Clone, Copy)]
struct KernelShared {
    static_bytes: Option<u32>,
    /// `MAX_DYNAMIC_SHARED_SIZE_BYTES` as set by [`SharedMemory::opt_in_dynamic_shared`]; 0 = never set.
    max_dynamic: u32,
}

fn poisoned() -> Error {
    Error::invalid("launch", "the Cuda shared-memory table was poisoned by a panic")
}

fn non_negative(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Driver { during: what.to_string(), detail: format!("negative value {v}") })
}

impl SharedMemory for CudaBackend {
    fn static_shared_bytes(&self, kernel: &'static str) -> Result<Option<u32>> {
        if let Some(b) = self.smem.kernels.lock().map_err(|_| poisoned())?.get(kernel).and_then(|k| k.static_bytes) {
            return Ok(Some(b));
        }
        let f = self.functions.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        let during = format!("reading the static shared memory of kernel {kernel}");
        // (get_attribute binds the context to the calling thread)
        let bytes = f.get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES).map_err(drv_err(&during))?;
        let bytes = non_negative(bytes, &during)?;
        self.smem.kernels.lock().map_err(|_| poisoned())?.entry(kernel).or_default().static_bytes = Some(bytes);
        Ok(Some(bytes))
    }

    fn shared_optin_max(&self) -> Result<u32> {
        if let Some(&m) = self.smem.optin_max.get() {
            return Ok(m);
        }
        let during = "reading the device's opt-in shared memory per block";
        let m = self
            .stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(drv_err(during))?;
        let m = non_negative(m, during)?;
        Ok(*self.smem.optin_max.get_or_init(|| m))
    }

    fn opt_in_dynamic_shared(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        let mut table = self.smem.kernels.lock().map_err(|_| poisoned())?;
        let k = table.entry(kernel).or_default();
        if k.max_dynamic >= bytes {
            return Ok(());
        }
        let f = self.functions.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        let value =
            i32::try_from(bytes).map_err(|_| Error::invalid("launch", format!("{kernel}: {bytes} bytes of shared memory")))?;
        let during = format!("raising kernel {kernel}'s dynamic shared memory to {bytes} bytes");
        self.stream.context().bind_to_thread().map_err(drv_err(&during))?;
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, value)
            .map_err(drv_err(&during))?;
        k.max_dynamic = bytes;
        Ok(())
    }
}
