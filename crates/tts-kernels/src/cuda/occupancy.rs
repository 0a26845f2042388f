//! What the GPU offers to size launches: its streaming multiprocessor (SM) count, which decides
//! whether a decode step's attention splits its keys (`ops::decode_attention_splits`).
//!
//! Not verified on a GPU yet: the attribute query is the driver's documented one, but it has never
//! run on real hardware.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{result as drv, sys as drv_sys};

use super::CudaBackend;
use crate::error::{Error, Result};

/// SM counts by device ordinal, queried once per process (they never change while it runs).
static MULTIPROCESSORS: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();

impl CudaBackend {
    /// The GPU's streaming multiprocessors (`CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`, e.g. 132 on an
    /// H100 SXM), asked of the driver on first use and remembered.
    pub(crate) fn multiprocessor_count(&self) -> Result<usize> {
        let poisoned = || Error::invalid("multiprocessor_count", "the SM count cache was poisoned by a panic");
        let cache = MULTIPROCESSORS.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(&n) = cache.lock().map_err(|_| poisoned())?.get(&self.ordinal) {
            return Ok(n);
        }
        let during = || format!("reading the SM count of GPU {}", self.ordinal);
        let ordinal = i32::try_from(self.ordinal).map_err(|_| Error::invalid("multiprocessor_count", during()))?;
        let driver = |e: drv::DriverError| Error::Driver { during: during(), detail: format!("{e:?}") };
        let dev = drv::device::get(ordinal).map_err(driver)?;
        let attr = drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        // SAFETY: `dev` is a valid device handle (cuInit ran when this backend's context was created);
        // the call only writes an int.
        let n = unsafe { drv::device::get_attribute(dev, attr) }.map_err(driver)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::Driver { during: during(), detail: format!("the driver reported {n} multiprocessors") })?;
        cache.lock().map_err(|_| poisoned())?.insert(self.ordinal, n);
        Ok(n)
    }
}
