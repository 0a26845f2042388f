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
//! pairs (a multiple of 16, zeros past the real pairs); the panels of the weight as packed by
//! [`super::pack_gemm_bf16`] (`kp` pairs per panel). Each output is `Σ` over blocks of 16 pairs, in
//! order, of `tdpbf16ps`'s sum of the block's 32 products, accumulated in f32, then `+ bias`: a
//! row's result does not depend on the other rows (batch invariance).
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
        x86::step::<1, 1>(ones.as_ptr(), 64, [ones.as_ptr() as *const bf16]);
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
        x86::step::<2, 2>(ones.as_ptr(), 0, [ones.as_ptr() as *const bf16; 2]);
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
    /// `[rows16, kq]` pairs of `x` (zero-padded rows and pairs).
    pub a: &'a [u32],
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
    let mut c = [[0f32; TILE_ROWS * PANEL]; 4];
    // SAFETY (whole body): AMX is available (caller); every tile load reads 16 rows of 64 bytes
    // inside `a` (rows16 × kq pairs), a panel's full blocks (kp ≥ 16·(b+1) pairs) or a tail copy;
    // stores go to the local `c`; out is written only at real rows and the panels' real columns.
    unsafe {
        x86::load_config(&cfg);
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
            let mut r0 = 0;
            while r0 < rows16 {
                let two_rows = r0 + TILE_ROWS < rows16;
                let a0 = g.a.as_ptr().add(r0 * g.kq);
                let stride = g.kq * 4;
                match (two_rows, two) {
                    (true, true) => {
                        run::<2, 2>(a0, stride, full_blocks, tail_pairs > 0, [panel_ptr(0), panel_ptr(1)], &tails, &mut c)
                    }
                    (true, false) => run::<2, 1>(a0, stride, full_blocks, tail_pairs > 0, [panel_ptr(0)], &tails, &mut c),
                    (false, true) => {
                        run::<1, 2>(a0, stride, full_blocks, tail_pairs > 0, [panel_ptr(0), panel_ptr(1)], &tails, &mut c)
                    }
                    (false, false) => run::<1, 1>(a0, stride, full_blocks, tail_pairs > 0, [panel_ptr(0)], &tails, &mut c),
                }
                let (rb_n, pb_n) = (if two_rows { 2 } else { 1 }, if two { 2 } else { 1 });
                for rb in 0..rb_n {
                    for pb in 0..pb_n {
                        let col0 = (p + pb) * PANEL;
                        let rows = TILE_ROWS.min(g.rows.saturating_sub(r0 + rb * TILE_ROWS));
                        let bias = g.bias.map(|b| b[col0..].as_ptr());
                        let dst = out.wrapping_add((r0 + rb * TILE_ROWS) * g.n + col0);
                        x86::write_tile(&c[rb * 2 + pb], rows, PANEL.min(g.n - col0), bias, dst, g.n);
                    }
                }
                r0 += TILE_ROWS * rb_n;
            }
            p += if two { 2 } else { 1 };
        }
        x86::release();
    }
}

/// One `RB` row tiles × `PB` panels block over every block of pairs: `c[rb·2 + pb]` gets the f32
/// tile (row-major 16 × 16).
///
/// # Safety
/// As [`gemm_block`]: `a0` starts `RB·16` rows of `stride` bytes holding `⌈kp/16⌉·16` pairs each;
/// `panel[q]` holds `full` blocks of 16 pairs; `tails[q]` the zero-padded last block when `tail`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn run<const RB: usize, const PB: usize>(
    a0: *const u32,
    stride: usize,
    full: usize,
    tail: bool,
    panel: [*const bf16; PB],
    tails: &[[bf16; TILE_PAIRS * PANEL * 2]; 2],
    c: &mut [[f32; TILE_ROWS * PANEL]; 4],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        x86::zero_c::<RB, PB>();
        for b in 0..full {
            let w: [*const bf16; PB] = std::array::from_fn(|q| panel[q].add(b * TILE_PAIRS * PANEL * 2));
            x86::step::<RB, PB>(a0.add(b * TILE_PAIRS), stride, w);
        }
        if tail {
            let w: [*const bf16; PB] = std::array::from_fn(|q| tails[q].as_ptr());
            x86::step::<RB, PB>(a0.add(full * TILE_PAIRS), stride, w);
        }
        let mut dst: [*mut f32; 4] = [std::ptr::null_mut(); 4];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = c[i].as_mut_ptr();
        }
        x86::store_c::<RB, PB>(&mut dst);
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

    /// One block of 16 pairs: loads the `RB` tiles of `x` at `a` (rows of `stride` bytes; the
    /// second tile 16 rows on) and the `PB` weight tiles at `w[q]` (1 KB each), and accumulates the
    /// products.
    ///
    /// # Safety
    /// Configuration loaded; every tile's 16 rows of 64 bytes readable.
    #[inline(always)]
    pub(super) unsafe fn step<const RB: usize, const PB: usize>(a: *const u32, stride: usize, w: [*const bf16; PB]) {
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
                let a1 = (a as *const u8).add(16 * stride);
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

    /// `dst[r·stride + t] = tile[r·16 + t] (+ bias[t])` for `r < rows`, `t < cols ≤ 16`: one
    /// masked 16-lane add and store per row.
    ///
    /// # Safety
    /// AVX-512F present (AMX implies it); `bias` readable for `cols` values; `dst` writable at
    /// those rows and columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn write_tile(
        tile: &[f32; 256],
        rows: usize,
        cols: usize,
        bias: Option<*const f32>,
        dst: *mut f32,
        stride: usize,
    ) {
        use std::arch::x86_64::*;
        let mask = ((1u32 << cols) - 1) as __mmask16;
        // SAFETY: the masks keep the bias loads and the stores within cols; rows as the contract.
        unsafe {
            let b = bias.map_or(_mm512_setzero_ps(), |b| _mm512_maskz_loadu_ps(mask, b));
            for r in 0..rows {
                let v = _mm512_add_ps(_mm512_loadu_ps(tile.as_ptr().add(r * 16)), b);
                _mm512_mask_storeu_ps(dst.add(r * stride), mask, v);
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
