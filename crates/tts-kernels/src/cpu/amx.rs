//! Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later Xeons) for the `cpu-bf16`
//! GEMMs: `tdpbf16ps` multiplies a 16-row × 32-bf16 tile of `x` by a 32 × 16 tile of the weight
//! (pairs of the reduction interleaved, exactly [`super::pack_gemm_bf16`]'s panel layout) into a
//! 16 × 16 f32 tile, 8192 multiply-adds per instruction. Measured on this project's Sapphire
//! Rapids machine (2 cores, `tts bench-peak`): 3.2 TFLOP/s per core of tile throughput, against 0.2
//! for the AVX-512 FMA and 0.11 for `vdpbf16ps`.
//!
//! Using AMX needs these, all checked once by [`available`]: the CPU has AMX-TILE and
//! AMX-BF16 (CPUID leaf 7), the OS saves tile state (XCR0 bits 17 and 18), and Linux grants this
//! process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without it
//! the first tile instruction is a SIGILL); then a 16 × 16 × 32 product of ones is computed and
//! checked. Each thread loads the tile configuration ([`TileConfig`]) before its tiles are used
//! and releases its tiles after.
//!
//! The instructions are written as inline assembly (stable Rust has no AMX intrinsics); the
//! kernels compile on every x86_64 target and run only where [`available`] said yes.
//!
//! Operands of [`gemm_block`]: `a`, the rows of `x` rounded to bf16 as pairs (`u32`: the even
//! element in the low half), `rows16` rows (a multiple of 16, zeros past the real rows) of `kq`
//! pairs (a multiple of 16, zeros past the real pairs), stored row by row or tile by tile (each
//! 16 × 16-pair tile's 1 KB contiguous: sequential streams, where a row-by-row tile reads 16 lines
//! `kq·4` bytes apart); the panels of the weight as packed by [`super::pack_gemm_bf16`] (`kp` pairs
//! per panel). Each output starts from its bias (or 0), loaded into the tile, and adds, over blocks
//! of 16 pairs in order, `tdpbf16ps`'s sum of the block's 32 products, in f32: a row's result does
//! not depend on the other rows (batch invariance). Whole output tiles are stored straight into the
//! output; the edges of partial tiles go through a local tile.
use half::bf16;

use super::gemm_panels::PANEL;

/// Pairs (`u32`) per tile row: 64 bytes.
pub(super) const TILE_PAIRS: usize = 16;
/// Rows per tile.
pub(super) const TILE_ROWS: usize = 16;

/// Whether this process may run the AMX kernels (see the module documentation); checked once.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86_64 CPU (leaf 7 is used only where leaf 0 lists it)
    let (max_leaf, l1, l7) = (__cpuid_count(0, 0).eax, __cpuid_count(1, 0), __cpuid_count(7, 0));
    let osxsave = l1.ecx >> 27 & 1 == 1;
    if max_leaf < 7 || !osxsave || l7.edx >> 22 & 1 == 0 || l7.edx >> 24 & 1 == 0 {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { xcr0() };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    if unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } != 0 {
        return false;
    }
    // SAFETY: the CPU has AMX-TILE/BF16 and the process holds the tile data permission.
    unsafe { self_test() }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
fn detect() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// A 16 × 16 × 32 product of ones must give 32 in every output (catches a hypervisor that lists
/// AMX but does not run it).
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
unsafe fn self_test() -> bool {
    let ones = [0x3f80_3f80u32; TILE_ROWS * TILE_PAIRS];
    let mut c = [0f32; TILE_ROWS * PANEL];
    let cfg = TileConfig::new();
    // SAFETY: the caller checked AMX; the tiles are read from and stored to 1 KB arrays.
    unsafe {
        x86::load_config(&cfg);
        x86::zero_c::<1, 1>();
        x86::step::<1, 1>(ones.as_ptr(), ones.as_ptr(), 64, [ones.as_ptr() as *const bf16]);
        x86::store_c::<1, 1>(&mut [c.as_mut_ptr()]);
        x86::release();
    }
    c.iter().all(|&v| v == 32.0)
}

/// `iters` rounds of `per_round` `tdpbf16ps` on full tiles, into the four output tiles in turn
/// (the peak loop of `cpu::peak`); returns one output value.
///
/// # Safety
/// [`available`] must have returned true.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn peak_loop(iters: u64, per_round: usize) -> f32 {
    let ones = [0x3f80_3f80u32; TILE_ROWS * TILE_PAIRS];
    let mut c = [[0f32; TILE_ROWS * PANEL]; 4];
    let cfg = TileConfig::new();
    // SAFETY: AMX available (caller); the loads read `ones` (1 KB), the stores write `c`.
    unsafe {
        x86::load_config(&cfg);
        x86::zero_c::<2, 2>();
        // stride 0: every row of the x tiles is the same 64 bytes (both tiles stay inside `ones`)
        x86::step::<2, 2>(ones.as_ptr(), ones.as_ptr(), 0, [ones.as_ptr() as *const bf16; 2]);
        for _ in 0..iters {
            for i in 0..per_round.div_ceil(4) {
                std::hint::black_box(i);
                x86::products_2x2();
            }
        }
        let [c0, c1, c2, c3] = &mut c;
        x86::store_c::<2, 2>(&mut [c0.as_mut_ptr(), c1.as_mut_ptr(), c2.as_mut_ptr(), c3.as_mut_ptr()]);
        x86::release();
    }
    c[0][0]
}

/// The tile configuration every kernel loads: tiles 0-3 the f32 outputs (16 × 16), 4-5 the `x`
/// tiles (16 rows × 16 pairs), 6-7 the weight tiles (16 pairs × 16 columns × 2): all 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
pub(super) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    pub(super) fn new() -> TileConfig {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for t in 0..8 {
            c.colsb[t] = 64;
            c.rows[t] = TILE_ROWS as u8;
        }
        c
    }
}

/// The shared operands of one [`gemm_block`] call.
#[derive(Clone, Copy)]
pub(super) struct AmxGemm<'a> {
    /// `[rows16, kq]` pairs of `x` (zero-padded rows and pairs), row by row or, when `tiled`, tile
    /// by tile ([`tiled_row`]).
    pub a: &'a [u32],
    /// `a` is stored tile by tile: each 16-row × 16-pair tile's 1 KB contiguous, the tiles of a
    /// 16-row band in order of their pairs, the bands in order.
    pub tiled: bool,
    /// Pairs per row of `a`, a multiple of 16 (≥ `kp`).
    pub kq: usize,
    /// Real rows (≤ `a.len() / kq`).
    pub rows: usize,
    /// The packed weight: `⌈n/16⌉` panels of `kp` pairs × 16 columns.
    pub panels: &'a [bf16],
    /// Pairs per panel (`⌈k/2⌉`).
    pub kp: usize,
    /// Output columns.
    pub n: usize,
    pub bias: Option<&'a [f32]>,
}

/// Where pair `q` of row `r` lives in a tile-by-tile `a` of `kq` pairs per row ([`AmxGemm::tiled`]):
/// `(r / 16)·16·kq + (q / 16)·256 + (r % 16)·16 + q % 16`; this gives the index of pair 0, the
/// row's pairs `16b..16b + 16` then lie at `+ 256·b`.
pub(super) fn tiled_row(r: usize, kq: usize) -> usize {
    (r / TILE_ROWS) * TILE_ROWS * kq + (r % TILE_ROWS) * TILE_PAIRS
}

/// `out[r, j] = Σ a[r, ·]·panel(j) + bias[j]` for the real rows and the columns of panels
/// `panels.start..panels.end`; `out` points at row 0 of an `[rows, n]` row-major f32 output of which
/// only those columns are written.
///
/// # Safety
/// [`available`] must have returned true; `a` holds `rows16 · kq` pairs with `rows16` a multiple of
/// 16 and `≥ rows`, `kq` a multiple of 16 `≥ kp`, zeros past the real pairs; `g.panels` is the
/// packed `[n, 2·kp]` weight; `out` is valid for writes of `rows · n` f32 and no other thread writes
/// these columns of these rows meanwhile.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn gemm_block(g: AmxGemm<'_>, panels: std::ops::Range<usize>, out: *mut f32) {
    let rows16 = g.rows.div_ceil(TILE_ROWS) * TILE_ROWS;
    debug_assert!(g.kq.is_multiple_of(TILE_PAIRS) && g.kq >= g.kp && g.a.len() >= rows16 * g.kq);
    debug_assert!(panels.end <= g.n.div_ceil(PANEL) && g.panels.len() >= g.n.div_ceil(PANEL) * g.kp * PANEL * 2);
    let cfg = TileConfig::new();
    // the last block of pairs of a panel, zero-padded to 16 (the panel's own pairs end at kp)
    let full_blocks = g.kp / TILE_PAIRS;
    let tail_pairs = g.kp % TILE_PAIRS;
    let mut tails = [[bf16::ZERO; TILE_PAIRS * PANEL * 2]; 2];
    let mut c = [0f32; TILE_ROWS * PANEL];
    // the bias of the two panels' columns, zero past n: the output tiles start from it
    let mut bias_rows = [[0f32; PANEL]; 2];
    // SAFETY (whole body): AMX is available (caller); every tile load reads 16 rows of 64 bytes
    // inside `a` (rows16 × kq pairs), a panel's full blocks (kp ≥ 16·(b+1) pairs) or a tail copy,
    // or one 64-byte bias row 16 times; a tile is stored straight into out only when all its 16
    // rows are real rows and its 16 columns real columns, other tiles through the local `c`, of
    // which only the real rows and columns are written to out.
    unsafe {
        x86::load_config(&cfg);
        // tile rows' stride (bytes) and the pairs from one block of 16 pairs to the next
        let (stride, bstep) = if g.tiled { (64, TILE_ROWS * TILE_PAIRS) } else { (g.kq * 4, TILE_PAIRS) };
        let mut p = panels.start;
        while p < panels.end {
            let two = p + 1 < panels.end;
            let panel_ptr = |q: usize| g.panels.as_ptr().add((p + q) * g.kp * PANEL * 2);
            if tail_pairs > 0 {
                for (q, t) in tails.iter_mut().enumerate().take(if two { 2 } else { 1 }) {
                    let src = panel_ptr(q).add(full_blocks * TILE_PAIRS * PANEL * 2);
                    std::ptr::copy_nonoverlapping(src, t.as_mut_ptr(), tail_pairs * PANEL * 2);
                }
            }
            if let Some(b) = g.bias {
                for (q, row) in bias_rows.iter_mut().enumerate().take(if two { 2 } else { 1 }) {
                    let col0 = (p + q) * PANEL;
                    let cols = PANEL.min(g.n - col0);
                    row[..cols].copy_from_slice(&b[col0..][..cols]);
                    row[cols..].fill(0.0);
                }
            }
            let init = g.bias.map(|_| [bias_rows[0].as_ptr(), bias_rows[1].as_ptr()]);
            let mut r0 = 0;
            while r0 < rows16 {
                let two_rows = r0 + TILE_ROWS < rows16;
                let a = ARows { a0: g.a.as_ptr().add(r0 * g.kq), stride, bstep, band: TILE_ROWS * g.kq };
                match (two_rows, two) {
                    (true, true) => run::<2, 2>(a, full_blocks, tail_pairs > 0, [panel_ptr(0), panel_ptr(1)], &tails, init),
                    (true, false) => run::<2, 1>(a, full_blocks, tail_pairs > 0, [panel_ptr(0)], &tails, init),
                    (false, true) => run::<1, 2>(a, full_blocks, tail_pairs > 0, [panel_ptr(0), panel_ptr(1)], &tails, init),
                    (false, false) => run::<1, 1>(a, full_blocks, tail_pairs > 0, [panel_ptr(0)], &tails, init),
                }
                let (rb_n, pb_n) = (if two_rows { 2 } else { 1 }, if two { 2 } else { 1 });
                for rb in 0..rb_n {
                    for pb in 0..pb_n {
                        let col0 = (p + pb) * PANEL;
                        let rows = TILE_ROWS.min(g.rows.saturating_sub(r0 + rb * TILE_ROWS));
                        let cols = PANEL.min(g.n - col0);
                        let dst = out.wrapping_add((r0 + rb * TILE_ROWS) * g.n + col0);
                        if rows == TILE_ROWS && cols == PANEL {
                            x86::store_tile(rb * 2 + pb, dst, g.n * 4);
                        } else if rows > 0 {
                            x86::store_tile(rb * 2 + pb, c.as_mut_ptr(), 64);
                            x86::write_tile(&c, rows, cols, dst, g.n);
                        }
                    }
                }
                r0 += TILE_ROWS * rb_n;
            }
            p += if two { 2 } else { 1 };
        }
        x86::release();
    }
}

/// Where the tiles of `x` of one or two 16-row bands lie: the first band's first tile at `a0`, its
/// rows `stride` bytes apart, the next block of pairs `bstep` pairs on, the second band `band` pairs
/// on (a pointer computed with `wrapping_add`: past the buffer where there is no second band, and
/// then never read).
#[derive(Clone, Copy)]
struct ARows {
    a0: *const u32,
    stride: usize,
    bstep: usize,
    band: usize,
}

/// One `RB` row tiles × `PB` panels block over every block of pairs, left in tiles `rb·2 + pb`;
/// they start from zero, or from the 16 bias values at `init[pb]` in every row.
///
/// # Safety
/// As [`gemm_block`]: `a` locates `RB` bands of tiles of `x` holding `⌈kp/16⌉` blocks each;
/// `panel[q]` holds `full` blocks of 16 pairs; `tails[q]` the zero-padded last block when `tail`;
/// `init[q]` 16 readable f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn run<const RB: usize, const PB: usize>(
    a: ARows,
    full: usize,
    tail: bool,
    panel: [*const bf16; PB],
    tails: &[[bf16; TILE_PAIRS * PANEL * 2]; 2],
    init: Option<[*const f32; 2]>,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match init {
            Some(b) => x86::load_c::<RB, PB>(b),
            None => x86::zero_c::<RB, PB>(),
        }
        for b in 0..full {
            let w: [*const bf16; PB] = std::array::from_fn(|q| panel[q].add(b * TILE_PAIRS * PANEL * 2));
            let at = a.a0.add(b * a.bstep);
            x86::step::<RB, PB>(at, at.wrapping_add(a.band), a.stride, w);
        }
        if tail {
            let w: [*const bf16; PB] = std::array::from_fn(|q| tails[q].as_ptr());
            let at = a.a0.add(full * a.bstep);
            x86::step::<RB, PB>(at, at.wrapping_add(a.band), a.stride, w);
        }
    }
}

/// The tile instructions. Tiles: 0 (rows 0-15, panel 0), 1 (rows 0-15, panel 1), 2 (rows 16-31,
/// panel 0), 3 (rows 16-31, panel 1); 4-5 the two row tiles of `x`; 6-7 the two panels' tiles.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::TileConfig;
    use half::bf16;
    use std::arch::asm;

    /// # Safety
    /// AMX available.
    #[inline(always)]
    pub(super) unsafe fn load_config(cfg: &TileConfig) {
        // SAFETY: cfg is a valid 64-byte palette-1 configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg as *const TileConfig, options(nostack, readonly)) };
    }

    /// # Safety
    /// AMX available.
    #[inline(always)]
    pub(super) unsafe fn release() {
        // SAFETY: releases this thread's tiles.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// # Safety
    /// Configuration loaded.
    #[inline(always)]
    pub(super) unsafe fn zero_c<const RB: usize, const PB: usize>() {
        // SAFETY: register-only tile instructions.
        unsafe {
            asm!("tilezero tmm0", options(nostack, nomem));
            if PB == 2 {
                asm!("tilezero tmm1", options(nostack, nomem));
            }
            if RB == 2 {
                asm!("tilezero tmm2", options(nostack, nomem));
                if PB == 2 {
                    asm!("tilezero tmm3", options(nostack, nomem));
                }
            }
        }
    }

    /// One block of 16 pairs: loads the `RB` tiles of `x` at `a` and `a1` (rows of `stride`
    /// bytes) and the `PB` weight tiles at `w[q]` (1 KB each), and accumulates the products.
    ///
    /// # Safety
    /// Configuration loaded; every tile's 16 rows of 64 bytes readable.
    #[inline(always)]
    pub(super) unsafe fn step<const RB: usize, const PB: usize>(
        a: *const u32,
        a1: *const u32,
        stride: usize,
        w: [*const bf16; PB],
    ) {
        // SAFETY: the loads read the ranges of the contract; the rest is register-only.
        unsafe {
            asm!("tileloadd tmm4, [{a} + {s}*1]", a = in(reg) a, s = in(reg) stride, options(nostack, readonly));
            asm!("tileloadd tmm6, [{w} + {s}*1]", w = in(reg) w[0], s = in(reg) 64usize, options(nostack, readonly));
            asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
            if PB == 2 {
                asm!("tileloadd tmm7, [{w} + {s}*1]", w = in(reg) w[PB - 1], s = in(reg) 64usize, options(nostack, readonly));
                asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
            }
            if RB == 2 {
                asm!("tileloadd tmm5, [{a} + {s}*1]", a = in(reg) a1, s = in(reg) stride, options(nostack, readonly));
                asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem));
                if PB == 2 {
                    asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                }
            }
        }
    }

    /// The four products of the loaded tiles (tiles 4-5 by 6-7) into the output tiles.
    ///
    /// # Safety
    /// Configuration loaded.
    #[inline(always)]
    pub(super) unsafe fn products_2x2() {
        // SAFETY: register-only tile instructions.
        unsafe {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            )
        };
    }

    /// `dst[r·stride + t] = tile[r·16 + t]` for `r < rows`, `t < cols ≤ 16`: one masked 16-lane
    /// store per row.
    ///
    /// # Safety
    /// AVX-512F present (AMX implies it); `dst` writable at those rows and columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn write_tile(tile: &[f32; 256], rows: usize, cols: usize, dst: *mut f32, stride: usize) {
        use std::arch::x86_64::*;
        let mask = ((1u32 << cols) - 1) as __mmask16;
        // SAFETY: the masks keep the stores within cols; rows as the contract.
        unsafe {
            for r in 0..rows {
                _mm512_mask_storeu_ps(dst.add(r * stride), mask, _mm512_loadu_ps(tile.as_ptr().add(r * 16)));
            }
        }
    }

    /// Output tile `i` (0-3) to 16 rows of 64 bytes at `dst`, `stride` bytes apart.
    ///
    /// # Safety
    /// Configuration loaded; those 16 rows writable.
    #[inline(always)]
    pub(super) unsafe fn store_tile(i: usize, dst: *mut f32, stride: usize) {
        // SAFETY: each store writes the 16 rows of 64 bytes of the contract.
        unsafe {
            match i {
                0 => asm!("tilestored [{d} + {s}*1], tmm0", d = in(reg) dst, s = in(reg) stride, options(nostack)),
                1 => asm!("tilestored [{d} + {s}*1], tmm1", d = in(reg) dst, s = in(reg) stride, options(nostack)),
                2 => asm!("tilestored [{d} + {s}*1], tmm2", d = in(reg) dst, s = in(reg) stride, options(nostack)),
                _ => asm!("tilestored [{d} + {s}*1], tmm3", d = in(reg) dst, s = in(reg) stride, options(nostack)),
            }
        }
    }

    /// The output tiles start from a row of 16 f32 repeated down each tile: `b[pb]` for the tiles
    /// of panel `pb` (a stride-0 load).
    ///
    /// # Safety
    /// Configuration loaded; `b[q]` readable for 64 bytes for each used panel `q`.
    #[inline(always)]
    pub(super) unsafe fn load_c<const RB: usize, const PB: usize>(b: [*const f32; 2]) {
        // SAFETY: each load reads the 64 bytes at its pointer 16 times.
        unsafe {
            asm!("tileloadd tmm0, [{b} + {s}*1]", b = in(reg) b[0], s = in(reg) 0usize, options(nostack, readonly));
            if PB == 2 {
                asm!("tileloadd tmm1, [{b} + {s}*1]", b = in(reg) b[1], s = in(reg) 0usize, options(nostack, readonly));
            }
            if RB == 2 {
                asm!("tileloadd tmm2, [{b} + {s}*1]", b = in(reg) b[0], s = in(reg) 0usize, options(nostack, readonly));
                if PB == 2 {
                    asm!("tileloadd tmm3, [{b} + {s}*1]", b = in(reg) b[1], s = in(reg) 0usize, options(nostack, readonly));
                }
            }
        }
    }

    /// Stores the output tiles (16 rows of 64 bytes each) to `dst[i]` for tile `i`.
    ///
    /// # Safety
    /// Configuration loaded; each used `dst[i]` writable for 1 KB.
    #[inline(always)]
    pub(super) unsafe fn store_c<const RB: usize, const PB: usize>(dst: &mut [*mut f32]) {
        // SAFETY: each store writes the 1 KB at its pointer.
        unsafe {
            asm!("tilestored [{d} + {s}*1], tmm0", d = in(reg) dst[0], s = in(reg) 64usize, options(nostack));
            if PB == 2 {
                asm!("tilestored [{d} + {s}*1], tmm1", d = in(reg) dst[1], s = in(reg) 64usize, options(nostack));
            }
            if RB == 2 {
                asm!("tilestored [{d} + {s}*1], tmm2", d = in(reg) dst[2], s = in(reg) 64usize, options(nostack));
                if PB == 2 {
                    asm!("tilestored [{d} + {s}*1], tmm3", d = in(reg) dst[3], s = in(reg) 64usize, options(nostack));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where Linux lists AMX-TILE and AMX-BF16 the process must get them (a refused permission or a
    /// failed self-test would otherwise turn the `amx` path off without a word); elsewhere the path
    /// is named as skipped.
    #[test]
    fn amx_is_available_where_the_cpu_lists_it() {
        let listed = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| {
                s.lines().find(|l| l.starts_with("flags")).is_some_and(|l| l.contains(" amx_tile") && l.contains(" amx_bf16"))
            })
            .unwrap_or(false);
        if !listed {
            eprintln!("skipped amx: this CPU (or OS) lists no AMX-TILE/AMX-BF16");
        }
        assert_eq!(available(), listed && cfg!(all(target_arch = "x86_64", target_os = "linux", not(miri))));
    }
}
