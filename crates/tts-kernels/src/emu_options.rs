//! The Emu backend's options (always compiled: `Device::emu` takes them in every build and says
//! when the `emu` feature is off).

/// Order in which the Emu backend runs the CUDA threads of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A seeded random permutation per block.
    Random(u32),
}

/// Options of the Emu backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmuOptions {
    pub schedule: Schedule,
    /// Every finding of the shim (a thread leaving while others wait at a barrier, a shuffle from a
    /// lane outside the mask, ...) fails the launch instead of printing a warning.
    pub strict: bool,
    /// OS threads that run blocks; 0 = `CUSHIM_WORKERS` or all cores.
    pub workers: u32,
    /// The streaming multiprocessor count the emulated GPU reports
    /// ([`Device::multiprocessor_count`]; launch choices such as the decode attention's key split
    /// follow it). At least 1; default 132, an H100 SXM's (an H200 has as many).
    pub multiprocessors: u32,
    /// The shared-memory race detector: two threads writing the same shared byte between two
    /// barriers (not ordered by an atomic or a warp barrier) is a finding (see cushim.h, 3b). Off by
    /// default: it compares the block's shared memory with a copy at every barrier and warp
    /// intrinsic (about 5x slower on shuffle-heavy kernels); `testing::kernel_devices` turns it on
    /// in one of its schedules, so every kernel test runs under it.
    pub race_check: bool,
}

/// [`EmuOptions::multiprocessors`] by default: an H100 SXM's (and H200's) SM count.
pub const EMU_DEFAULT_MULTIPROCESSORS: u32 = 132;

impl Default for EmuOptions {
    fn default() -> Self {
        EmuOptions {
            schedule: Schedule::Forward,
            strict: true,
            workers: 0,
            multiprocessors: EMU_DEFAULT_MULTIPROCESSORS,
            race_check: false,
        }
    }
}
