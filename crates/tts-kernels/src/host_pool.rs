//! Reuse of the Cpu backend's freed tensor memory.
//!
//! S3Gen allocates its intermediate tensors per op (hundreds per CFM step, up to ~7 MB each) and
//! frees them moments later; every step repeats the same sizes. Through the system allocator each
//! such block came back zeroed from fresh pages (page faults, the kernel's page clearing) or from a
//! `calloc` memset, on the calling thread while the other cores waited: ~5% of a 10 s synthesis on
//! 2 cores, measured with perf. Freed blocks of at least [`MIN_BLOCK`] bytes are therefore kept here,
//! by exact size, up to [`MAX_POOLED`] bytes in all, and handed out again. When a freed block does
//! not fit, the blocks of the size least recently given or taken are freed to make room: HiFT's
//! im2col buffers (up to 169 MB each for 10 s of audio) come after the estimator's blocks have filled
//! the pool, and went to fresh, zeroed pages on every convolution before this.
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
    by_layout: HashMap<(usize, usize), SizeClass>,
    bytes: usize,
    /// Counts gives and takes: the age of a size class.
    clock: u64,
}

/// The pooled blocks of one layout, and when that layout was last given or taken.
#[derive(Default)]
struct SizeClass {
    blocks: Vec<Block>,
    last_use: u64,
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
    with_pool(|p| p.take_from(layout))
}

/// Keeps `block` (allocated with `layout`) for reuse if it is large enough and the pool has room;
/// returns it otherwise, for the caller to free.
pub(crate) fn give(block: NonNull<u8>, layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() < MIN_BLOCK {
        return Some(block);
    }
    with_pool(|p| p.give(block, layout, MAX_POOLED))
}

impl Pool {
    /// [`take`] from this pool.
    fn take_from(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.clock += 1;
        let class = self.by_layout.get_mut(&(layout.size(), layout.align()))?;
        let b = class.blocks.pop()?;
        class.last_use = self.clock;
        self.bytes -= layout.size();
        Some(b.0)
    }

    /// [`give`] with a cap of `cap` bytes: makes room by freeing the blocks of the least recently
    /// used other sizes; a block larger than `cap` is returned.
    fn give(&mut self, block: NonNull<u8>, layout: Layout, cap: usize) -> Option<NonNull<u8>> {
        if layout.size() > cap {
            return Some(block);
        }
        let key = (layout.size(), layout.align());
        while self.bytes + layout.size() > cap {
            let oldest = self
                .by_layout
                .iter()
                .filter(|(k, c)| **k != key && !c.blocks.is_empty())
                .min_by_key(|(_, c)| c.last_use)
                .map(|(k, _)| *k);
            let Some(victim) = oldest else {
                // only blocks of this very size fill the pool: keep those
                return Some(block);
            };
            let b = self.by_layout.get_mut(&victim).and_then(|c| c.blocks.pop()).expect("a non-empty size class");
            let l = Layout::from_size_align(victim.0, victim.1).expect("a layout that was allocated");
            // SAFETY: allocated with this layout by HostMem and owned by the pool.
            unsafe { std::alloc::dealloc(b.0.as_ptr(), l) };
            self.bytes -= victim.0;
        }
        self.clock += 1;
        self.bytes += layout.size();
        let class = self.by_layout.entry(key).or_default();
        class.blocks.push(Block(block));
        class.last_use = self.clock;
        None
    }
}

/// Frees every pooled block (e.g. after a large job, to hand the memory back to the system).
/// Returns the bytes released.
pub fn release_pooled_host_memory() -> usize {
    with_pool(|p| {
        let bytes = p.bytes;
        for ((size, align), class) in p.by_layout.drain() {
            let layout = Layout::from_size_align(size, align).expect("a layout that was allocated");
            for b in class.blocks {
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

    /// A private pool with a small cap: what `give` keeps and what it frees to make room.
    #[test]
    fn a_full_pool_frees_the_least_recently_used_sizes_first() {
        use std::alloc::{Layout, alloc, dealloc};
        let layout = |kb: usize| Layout::from_size_align(kb << 10, 64).unwrap();
        // SAFETY: non-zero sizes; every block is freed by the pool or below.
        let block = |kb: usize| std::ptr::NonNull::new(unsafe { alloc(layout(kb)) }).unwrap();
        let cap = 1000 << 10;
        let mut p = super::Pool::default();
        for kb in [300, 200, 300] {
            assert!(p.give(block(kb), layout(kb), cap).is_none());
        }
        assert_eq!(p.bytes, 800 << 10);
        // the 300 KB size was used last: room for 400 KB comes from the 200 KB block
        assert!(p.give(block(400), layout(400), cap).is_none());
        assert_eq!(p.bytes, 1000 << 10);
        assert!(p.by_layout[&(200 << 10, 64)].blocks.is_empty());
        assert_eq!(p.by_layout[&(300 << 10, 64)].blocks.len(), 2);
        // a take makes the 300 KB size the most recent: room for 200 KB now comes from the 400 KB block
        let t = super::Pool::take_from(&mut p, layout(300)).unwrap();
        assert!(p.give(t, layout(300), cap).is_none());
        assert!(p.give(block(200), layout(200), cap).is_none());
        assert_eq!(p.bytes, 800 << 10);
        assert!(p.by_layout[&(400 << 10, 64)].blocks.is_empty());
        assert_eq!(p.by_layout[&(300 << 10, 64)].blocks.len(), 2);
        // a block larger than the cap is handed back; so is one that only its own size could make room for
        let big = block(1200);
        assert_eq!(p.give(big, layout(1200), cap), Some(big));
        // SAFETY: allocated above with this layout and handed back.
        unsafe { dealloc(big.as_ptr(), layout(1200)) };
        let mut q = super::Pool::default();
        assert!(q.give(block(600), layout(600), cap).is_none());
        let again = block(600);
        assert_eq!(q.give(again, layout(600), cap), Some(again));
        // SAFETY: as above.
        unsafe { dealloc(again.as_ptr(), layout(600)) };
        for pool in [p, q] {
            for ((size, align), class) in pool.by_layout {
                for b in class.blocks {
                    // SAFETY: the pool's own blocks, of their layout.
                    unsafe { dealloc(b.0.as_ptr(), Layout::from_size_align(size, align).unwrap()) };
                }
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
