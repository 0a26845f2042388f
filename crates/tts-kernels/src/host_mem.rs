//! Host memory of the Cpu and Emu backends: aligned blocks, Emu's poisoned red zones, and the
//! registry of live Emu allocations whose red zones are checked after every launch.
use std::alloc::Layout;
use std::ptr::NonNull;
#[cfg(feature = "emu")]
use std::{collections::BTreeMap, sync::Mutex};

use crate::error::{Error, Result};

/// Alignment of every allocation (what cuBLAS and vectorised kernel loads like).
pub(crate) const ALIGN: usize = 256;

/// Host memory of the Cpu and Emu backends. Emu allocations carry poisoned red zones on both
/// sides (checked after every launch) and start poisoned (0xFF bytes: NaN for floats, -1 for ints).
pub(crate) struct HostMem {
    block: NonNull<u8>,
    layout: Layout,
    /// Bytes of red zone before and after the data.
    pub(crate) redzone: usize,
    /// Given back to [`crate::host_pool`] when dropped (Cpu tensors).
    pooled: bool,
    #[cfg(feature = "emu")]
    pub(crate) registry: Option<std::sync::Arc<Registry>>,
}

// SAFETY: HostMem owns its allocation; access goes through &/&mut of the owning Tensor.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

/// A host allocation the allocator refused, or one too large for any allocator.
fn oom(bytes: usize) -> Error {
    Error::OutOfMemory { what: "host memory of a tensor".into(), bytes }
}

impl HostMem {
    pub(crate) fn new(bytes: usize, redzone: usize, fill: u8) -> Result<HostMem> {
        let total = bytes.checked_add(2 * redzone).filter(|&t| t <= isize::MAX as usize - ALIGN).ok_or_else(|| oom(bytes))?;
        let layout = Layout::from_size_align(total.max(1), ALIGN).unwrap();
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { if fill == 0 { std::alloc::alloc_zeroed(layout) } else { std::alloc::alloc(layout) } };
        let block = NonNull::new(raw).ok_or_else(|| oom(bytes))?;
        if fill != 0 {
            // SAFETY: the block is `total` bytes long. (Zeros come from alloc_zeroed: for large
            // blocks the allocator maps fresh zero pages instead of writing every byte.)
            unsafe { std::ptr::write_bytes(block.as_ptr(), fill, total) };
        }
        if redzone > 0 {
            unsafe {
                std::ptr::write_bytes(block.as_ptr(), REDZONE_BYTE, redzone);
                std::ptr::write_bytes(block.as_ptr().add(redzone + bytes), REDZONE_BYTE, redzone);
            }
        }
        Ok(HostMem::owning(block, layout, redzone))
    }

    /// The HostMem that owns `block` (allocated with `layout`), freed to the allocator when dropped.
    fn owning(block: NonNull<u8>, layout: Layout, redzone: usize) -> HostMem {
        HostMem {
            block,
            layout,
            redzone,
            pooled: false,
            #[cfg(feature = "emu")]
            registry: None,
        }
    }

    /// A Cpu tensor's memory, reusing a freed block of the same size when [`crate::host_pool`] has
    /// one: zeros if `zero`, else unspecified contents (0xFF bytes in debug builds, see there).
    pub(crate) fn cpu(bytes: usize, zero: bool) -> Result<HostMem> {
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|_| oom(bytes))?;
        let poison = !zero && cfg!(debug_assertions);
        let mut mem = match crate::host_pool::take(layout) {
            Some(block) => {
                if zero || poison {
                    // SAFETY: the pooled block is `layout.size()` bytes long.
                    unsafe { std::ptr::write_bytes(block.as_ptr(), if zero { 0 } else { REDZONE_BYTE }, layout.size()) };
                }
                HostMem::owning(block, layout, 0)
            }
            None => HostMem::new(bytes, 0, if poison { REDZONE_BYTE } else { 0 })?,
        };
        // given back to the pool when dropped
        mem.pooled = true;
        Ok(mem)
    }

    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: redzone < total size.
        unsafe { self.block.as_ptr().add(self.redzone) }
    }
}

/// Red zones hold 0xFF bytes: a float read from one is NaN, an int is -1.
pub(crate) const REDZONE_BYTE: u8 = 0xFF;

impl Drop for HostMem {
    fn drop(&mut self) {
        #[cfg(feature = "emu")]
        if let Some(r) = &self.registry {
            r.unregister(self.data_ptr() as usize);
        }
        let block = if self.pooled { crate::host_pool::give(self.block, self.layout) } else { Some(self.block) };
        if let Some(block) = block {
            // SAFETY: allocated with this layout in `new`, and not kept by the pool.
            unsafe { std::alloc::dealloc(block.as_ptr(), self.layout) };
        }
    }
}

#[cfg(feature = "emu")]
/// The live allocations of one Emu device (data address -> (bytes, red zone bytes)).
#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<BTreeMap<usize, (usize, usize)>>,
}

#[cfg(feature = "emu")]
impl Registry {
    /// Adds the allocation at `addr` (`bytes` long, `redzone` bytes of red zone on each side).
    pub(crate) fn register(&self, addr: usize, bytes: usize, redzone: usize) -> Result<()> {
        self.live.lock().map_err(|_| Error::invalid("alloc", "Emu registry poisoned"))?.insert(addr, (bytes, redzone));
        Ok(())
    }

    pub(crate) fn unregister(&self, addr: usize) {
        if let Ok(mut l) = self.live.lock() {
            l.remove(&addr);
        }
    }

    /// The first allocation whose red zones were overwritten: (bytes, side).
    pub(crate) fn damaged(&self) -> Option<(usize, &'static str)> {
        let live = self.live.lock().ok()?;
        for (&addr, &(bytes, rz)) in live.iter() {
            // SAFETY: the red zones of a registered allocation are `rz` readable bytes on each side of
            // it; it stays allocated while registered (HostMem's drop unregisters it under this lock
            // before freeing), and no kernel runs on this device while its launch is being checked.
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
