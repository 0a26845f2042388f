//! Reuse of the Cpu backend's freed tensor memory.
//!
//! S3Gen allocates its intermediate tensors per op (hundreds per CFM step, up to ~7 MB each) and
//! frees them moments later; every step repeats the same sizes. Through the system allocator each
//! such block came back zeroed from fresh pages (page faults, the kernel's page clearing) or from a
//! `calloc` memset, on the calling thread while the other cores waited: ~5% of a 10 s synthesis on
//! 2 cores, measured with perf. Freed blocks of at least [`MIN_BLOCK`] bytes are therefore kept here,
//! by exact size, up to [`MAX_POOLED`] bytes in all, and handed out again.
//!
//! A reused block holds whatever the last tensor wrote: what `Tensor::uninit` promises
//! ("unspecified"). Zeros are written when asked for. In debug builds (the tests) every uninit Cpu
//! block is filled with 0xFF bytes instead (NaN for floats, -1 for ints), fresh or reused, so that a
//! Cpu op that reads an element before writing it fails its tests the way a kernel does on Emu.
use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Blocks smaller than this go straight back to the allocator (which is fast for them).
pub(crate) const MIN_BLOCK: usize = 64 << 10;
/// The most bytes the pool keeps; blocks freed beyond it go back to the allocator.
pub(crate) const MAX_POOLED: usize = 512 << 20;

/// A pooled block (owned by the pool; never aliased).
struct Block(NonNull<u8>);
// SAFETY: the pool owns its blocks exclusively; they are plain memory.
unsafe impl Send for Block {}

#[derive(Default)]
struct Pool {
    by_layout: HashMap<(usize, usize), Vec<Block>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    // a panic while holding the lock cannot leave the map inconsistent (plain pushes and pops)
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Pool::default))
}

/// A block of `layout`: a pooled one if there is one (contents unspecified), else `None`.
pub(crate) fn take(layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() < MIN_BLOCK {
        return None;
    }
    with_pool(|p| {
        let b = p.by_layout.get_mut(&(layout.size(), layout.align()))?.pop()?;
        p.bytes -= layout.size();
        Some(b.0)
    })
}

/// Keeps `block` (allocated with `layout`) for reuse if it is large enough and the pool has room;
/// returns it otherwise, for the caller to free.
pub(crate) fn give(block: NonNull<u8>, layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() < MIN_BLOCK {
        return Some(block);
    }
    with_pool(|p| {
        if p.bytes + layout.size() > MAX_POOLED {
            return Some(block);
        }
        p.bytes += layout.size();
        p.by_layout.entry((layout.size(), layout.align())).or_default().push(Block(block));
        None
    })
}

/// Frees every pooled block (e.g. after a large job, to hand the memory back to the system).
/// Returns the bytes released.
pub fn release_pooled_host_memory() -> usize {
    with_pool(|p| {
        let bytes = p.bytes;
        for ((size, align), blocks) in p.by_layout.drain() {
            let layout = Layout::from_size_align(size, align).expect("a layout that was allocated");
            for b in blocks {
                // SAFETY: allocated with this layout by HostMem and owned by the pool.
                unsafe { std::alloc::dealloc(b.0.as_ptr(), layout) };
            }
        }
        p.bytes = 0;
        bytes
    })
}

/// Bytes the pool holds now.
pub fn pooled_host_bytes() -> usize {
    with_pool(|p| p.bytes)
}

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Tensor};

    #[test]
    fn reused_blocks_are_zeroed_or_poisoned_as_asked() {
        let dev = Device::cpu();
        // large enough for the pool, and a small one that is not pooled
        for n in [3 * super::MIN_BLOCK / 4 + 5, 7] {
            for round in 0..3 {
                let mut t = Tensor::uninit(&dev, DType::F32, &[n]).unwrap();
                if cfg!(debug_assertions) {
                    let v = t.to_f32_vec().unwrap();
                    assert!(v.iter().all(|x| x.is_nan()), "n {n} round {round}: uninit is not poisoned");
                }
                t.copy_from_f32(&vec![1.5; n]).unwrap();
                drop(t);
                // the block just freed (or another of its size) comes back zeroed when zeros are asked for
                let z = Tensor::zeros(&dev, DType::F32, &[n]).unwrap();
                assert!(z.to_f32_vec().unwrap().iter().all(|&x| x == 0.0), "n {n} round {round}: zeros");
                let mut i = Tensor::uninit(&dev, DType::I32, &[n]).unwrap();
                if cfg!(debug_assertions) {
                    assert!(i.to_i32_vec().unwrap().iter().all(|&x| x == -1), "n {n}: i32 poison");
                }
                i.copy_from_i32(&vec![7; n]).unwrap();
            }
        }
    }

    #[test]
    fn the_pool_keeps_freed_blocks_and_releases_them() {
        let dev = Device::cpu();
        // an odd size no other test uses, so that concurrent tests do not take it
        let n = super::MIN_BLOCK + 4 * 12_345;
        drop(Tensor::uninit(&dev, DType::F32, &[n / 4]).unwrap());
        assert!(super::pooled_host_bytes() >= n, "a freed large block is kept");
        let freed = super::release_pooled_host_memory();
        assert!(freed >= n);
    }
}
