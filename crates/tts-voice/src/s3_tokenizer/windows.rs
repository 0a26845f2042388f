//! Audio longer than 30 s (`S3TokenizerV2._quantize_mixed_batch`, s3tokenizer 0.3.0, which
//! chatterbox's `S3Tokenizer.forward` reaches through `quantize`): the log-mel is cut into windows
//! of 3000 frames every 2600 (4 s overlap), each tokenized alone, and the windows' tokens are joined
//! dropping 2 s (50 tokens) of each overlap on both sides (`merge_tokenized_segments`).

/// The most mel frames tokenized in one pass (30 s); longer inputs take the windowed path.
pub const MAX_FRAMES: usize = 3000;
/// Window length in frames (30 s).
pub const WINDOW_FRAMES: usize = 3000;
/// Window step in frames (30 s − 4 s overlap).
pub const STRIDE_FRAMES: usize = 2600;
/// Tokens dropped on each side of an overlap: `(4 s // 2)·25`.
pub const OVERLAP_TOKENS: usize = 50;

/// The windows `start..end` of a mel of `frames` frames: starts 0, 2600, 5200, … while below
/// `frames`, each `min(start + 3000, frames)` long.
pub fn windows(frames: usize) -> Vec<(usize, usize)> {
    (0..frames).step_by(STRIDE_FRAMES).map(|s| (s, (s + WINDOW_FRAMES).min(frames))).collect()
}

/// The windows' tokens joined as `merge_tokenized_segments(segs, overlap=4, token_rate=25)`:
/// Python's `tokens[l:r]` with `l = 0` for the first window else 50, and `r = len` for the last
/// window else `−50` (an empty slice where a window is too short for it).
pub fn merge(segments: &[Vec<u32>]) -> Vec<u32> {
    let last = segments.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let lo = if i == 0 { 0 } else { OVERLAP_TOKENS.min(seg.len()) };
        let hi = if i == last { seg.len() } else { seg.len().saturating_sub(OVERLAP_TOKENS) };
        if lo < hi {
            out.extend_from_slice(&seg[lo..hi]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_step_by_26_s_and_end_at_the_input() {
        assert_eq!(windows(3001), vec![(0, 3000), (2600, 3001)]);
        assert_eq!(windows(5200), vec![(0, 3000), (2600, 5200)]);
        // a window starts at every multiple of 2600 below the end, even inside the previous one
        assert_eq!(windows(5201), vec![(0, 3000), (2600, 5201), (5200, 5201)]);
        assert_eq!(windows(5600), vec![(0, 3000), (2600, 5600), (5200, 5600)]);
        assert_eq!(windows(12000).len(), 5);
    }

    #[test]
    fn merge_drops_half_of_each_overlap_like_python_slices() {
        let seg = |a: u32, n: u32| (a..a + n).collect::<Vec<u32>>();
        // one window: everything
        assert_eq!(merge(&[seg(0, 7)]), seg(0, 7));
        // first [0:-50], last [50:]
        let m = merge(&[seg(0, 750), seg(1000, 120)]);
        assert_eq!(m, [seg(0, 700), seg(1050, 70)].concat());
        // a last window of ≤ 50 tokens adds nothing; a middle one [50:-50]
        let m = merge(&[seg(0, 750), seg(1000, 750), seg(2000, 40)]);
        assert_eq!(m, [seg(0, 700), seg(1050, 650)].concat());
        // windows too short for their slices give empty slices, as in Python
        assert_eq!(merge(&[seg(0, 30), seg(100, 80), seg(200, 60)]), seg(250, 10));
        assert!(merge(&[]).is_empty());
    }
}
