//! Dense layers.

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (a PyTorch `Linear` without bias), f32.
pub fn linear(x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    debug_assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    // SAFETY: the slices hold at least m*k, n*k and m*n elements; strides describe row-major x,
    // w read as its transpose (k x n, column stride k), and row-major out.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{add_rmsnorm, embed_pos};
    use proptest::prelude::*;

    fn naive_linear(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut o = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum();
            }
        }
        o
    }

    proptest! {
        #[test]
        fn linear_matches_naive(m in 1usize..9, n in 1usize..13, k in 0usize..37, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, m * k, 1.0);
            let w = crate::testing::random_f32(seed ^ 1, n * k, 1.0);
            let mut out = vec![f32::NAN; m * n];
            linear(&x, &w, &mut out, m, n, k);
            let want = naive_linear(&x, &w, m, n, k);
            for (g, w) in out.iter().zip(&want) {
                prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        }

        #[test]
        fn rmsnorm_output_has_unit_rms_with_unit_weight(rows in 1usize..5, cols in 1usize..300, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, rows * cols, 3.0);
            let mut res = crate::testing::random_f32(seed ^ 7, rows * cols, 3.0);
            let before = res.clone();
            let w = vec![1.0f32; cols];
            let mut out = vec![f32::NAN; rows * cols];
            add_rmsnorm(Some(&x), &mut res, &w, &mut out, 0.0);
            for r in 0..rows {
                for c in 0..cols {
                    let i = r * cols + c;
                    prop_assert!((res[i] - (before[i] + x[i])).abs() <= 1e-6 * (1.0 + res[i].abs()));
                }
                let ms: f64 = out[r * cols..(r + 1) * cols].iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
                prop_assert!((ms - 1.0).abs() < 1e-4, "mean square {}", ms);
            }
        }
    }

    #[test]
    fn embed_rejects_ids_past_the_table() {
        let table = vec![0.5f32; 3 * 4];
        let mut out = vec![0f32; 2 * 4];
        assert_eq!(embed_pos(&[1, 3], None, &table, &mut out, 4), Err((1, "token id", 3)));
        let pos_table = vec![0.25f32; 2 * 4];
        assert_eq!(embed_pos(&[0, -1], Some((&[0, 2], &pos_table)), &table, &mut out, 4), Err((1, "position", 2)));
        embed_pos(&[2, -1], Some((&[-1, 1], &pos_table)), &table, &mut out, 4).unwrap();
        assert_eq!(out, [0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]);
    }
}
