//! A transformer's feed-forward with its residual add, `x += ff2(act(ff1(a)))`, for the `cpu-bf16`
//! device on the [`Isa::Amx`] path, one block of [`FF_ROWS`] rows at a time.
//!
//! Computed layer by layer, the hidden layer (`[m, f]` f32, `f = 4c` in S3Gen's decoder: 6.7 MB
//! for 1628 rows) goes to memory three times (the first GEMM's output, the activation's pass, the
//! second GEMM's rounding to bf16). Here each task takes a block of rows through both GEMMs with
//! its hidden rows in the thread's kept buffers (`FF_ROWS·f` f32: L2), so the hidden layer never
//! leaves the core's caches; only `a` is read and `x` read and written.
//!
//! The same functions as the layer-by-layer path compute every value, in the same order: the
//! AMX GEMM of [`super::gemm_bf16_panels`] (a row's outputs depend only on its own row), the
//! activation of [`super::pointwise::activation`], the rounding of the hidden rows to bf16 pairs,
//! and the residual add of [`super::add_scaled`] with scale 1. The result is the layer-by-layer
//! result bit for bit.
use half::bf16;
use rayon::prelude::*;

use super::amx::{AmxGemm, TILE_PAIRS, gemm_block};
use super::gemm_bf16_panels::fill_tiles;
use super::gemm_panels::PANEL;
use super::isa::Isa;
use super::packed_gemm_bf16_len;
use super::pointwise::{Activation, activate_rows};

/// Rows per task: two 16-row tile bands, so that each weight tile loaded serves 32 rows; the
/// hidden rows (`32·f` f32, 128 KB at f = 1024) stay in L2.
pub const FF_ROWS: usize = 32;

/// The two layers of a feed-forward, their weights packed by [`super::pack_gemm_bf16`].
#[derive(Clone, Copy)]
pub struct FeedForwardBf16<'a> {
    /// `[f, c]` packed, and its bias `[f]`.
    pub w1: &'a [bf16],
    pub b1: Option<&'a [f32]>,
    /// Applied to the hidden layer (not Snake: it has no per-channel α here).
    pub act: Activation,
    /// `[c, f]` packed, and its bias `[c]`.
    pub w2: &'a [bf16],
    pub b2: Option<&'a [f32]>,
    /// Model width (`x`'s and `a`'s row length).
    pub c: usize,
    /// Hidden width.
    pub f: usize,
}

/// `x[r] += ff2(act(ff1(a[r])))` for the `m` rows of `a` and `x` (`[m, c]` f32 each), on AMX (see
/// the module documentation).
///
/// # Panics
/// If this CPU cannot run [`Isa::Amx`], a slice is shorter than the shapes say, a packed weight
/// has the wrong length, or `act` is Snake.
pub fn feed_forward_amx(ff: FeedForwardBf16<'_>, a: &[f32], x: &mut [f32], m: usize) {
    assert!(Isa::Amx.supported(), "feed_forward_amx: this CPU cannot run AMX");
    let FeedForwardBf16 { w1, b1, act, w2, b2, c, f } = ff;
    assert!(act != Activation::Snake, "feed_forward_amx: Snake needs its per-channel alpha");
    assert!(
        a.len() >= m * c
            && x.len() >= m * c
            && w1.len() == packed_gemm_bf16_len(f, c)
            && w2.len() == packed_gemm_bf16_len(c, f)
            && b1.is_none_or(|b| b.len() >= f)
            && b2.is_none_or(|b| b.len() >= c),
        "feed_forward_amx: slice lengths"
    );
    if m == 0 || c == 0 {
        return;
    }
    if f == 0 {
        // an empty hidden layer: ff2 gives its bias
        if let Some(b) = b2 {
            x[..m * c].chunks_exact_mut(c).for_each(|row| super::add_scaled(row, &b[..c], 1.0));
        }
        return;
    }
    let (kp1, kp2) = (c.div_ceil(2), f.div_ceil(2));
    let (kq1, kq2) = (kp1.div_ceil(TILE_PAIRS) * TILE_PAIRS, kp2.div_ceil(TILE_PAIRS) * TILE_PAIRS);
    x[..m * c].par_chunks_mut(FF_ROWS * c).zip(a[..m * c].par_chunks(FF_ROWS * c)).for_each(|(xb, ab)| {
        let rows = xb.len() / c;
        super::attention::with_local(&BLOCK, |s| {
            let Scratch { a_pairs, hidden, h_pairs, y } = s;
            fill_tiles(ab, rows, c, a_pairs);
            let hidden = super::attention::scratch(hidden, rows * f);
            let g1 = AmxGemm { a: a_pairs, tiled: true, kq: kq1, rows, panels: w1, kp: kp1, n: f, bias: b1 };
            // SAFETY: the CPU runs AMX (asserted); a_pairs holds the block's rows as whole zero-padded
            // tiles of kq1 pairs (fill_tiles); w1 is the packed [f, c] weight (length asserted);
            // hidden is [rows, f], this thread's own.
            unsafe { gemm_block(g1, 0..f.div_ceil(PANEL), hidden.as_mut_ptr()) };
            activate_rows(act, hidden, f, None);
            fill_tiles(hidden, rows, f, h_pairs);
            let y = super::attention::scratch(y, rows * c);
            let g2 = AmxGemm { a: h_pairs, tiled: true, kq: kq2, rows, panels: w2, kp: kp2, n: c, bias: b2 };
            // SAFETY: as above, with the hidden rows' tiles of kq2 pairs and the packed [c, f] w2;
            // y is [rows, c].
            unsafe { gemm_block(g2, 0..c.div_ceil(PANEL), y.as_mut_ptr()) };
            super::add_scaled(xb, y, 1.0);
        });
    });
}

/// A task's buffers: its rows of `a` as tiles, the hidden rows (f32, then as tiles), ff2's output.
#[derive(Default)]
struct Scratch {
    a_pairs: Vec<u32>,
    hidden: Vec<f32>,
    h_pairs: Vec<u32>,
    y: Vec<f32>,
}

thread_local! {
    /// The calling thread's [`Scratch`], kept between calls.
    static BLOCK: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}
