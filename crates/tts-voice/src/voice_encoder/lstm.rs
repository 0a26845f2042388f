//! One layer of PyTorch's `nn.LSTM` (`batch_first`, unidirectional, zero initial state), run over a
//! batch of equal-length sequences at once.
//!
//! Per step, with gates in PyTorch's order i, f, g, o (rows `[0,H)`, `[H,2H)`, `[2H,3H)`, `[3H,4H)`
//! of the weights):
//! `z = W_ih·x_t + b_ih + W_hh·h + b_hh`, `i,f,o = σ(z)`, `g = tanh(z)`, `c = f⊙c + i⊙g`,
//! `h = o⊙tanh(c)`.
//!
//! Speed: the input projection `W_ih·x_t + b_ih + b_hh` of every step and every sequence is one
//! GEMM per layer; each step then adds `h·W_hhᵀ` for all sequences with one GEMM. Both weights are
//! packed once at load for tts-kernels' panel GEMM ([`gemm_panels`]), which matters for the
//! recurrence: its GEMMs are small (rows = sequences) and many (one per step), where a GEMM that
//! packs its weight on every call (or a GEMV per row) spends most of its time outside the
//! multiply-adds (measured: 10 s of audio, 9 partials, H = 256: 450 ms with `linear`'s GEMV path).
use tts_kernels::cpu::{gemm_panels, pack_gemm, packed_gemm_len};

/// One LSTM layer's weights.
pub struct LstmLayer {
    /// Input width.
    pub input: usize,
    /// Hidden width H.
    pub hidden: usize,
    /// `weight_ih` `[4H][input]`, packed by [`pack_gemm`].
    w_ih: Vec<f32>,
    /// `weight_hh` `[4H][H]`, packed by [`pack_gemm`].
    w_hh: Vec<f32>,
    /// `bias_ih + bias_hh`, `[4H]`.
    bias: Vec<f32>,
}

fn packed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut p = vec![0f32; packed_gemm_len(n, k)];
    pack_gemm(w, n, k, &mut p);
    p
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl LstmLayer {
    /// A layer from PyTorch's tensors (`weight_ih_l{k}` `[4H, input]`, `weight_hh_l{k}` `[4H, H]`,
    /// `bias_ih_l{k}`, `bias_hh_l{k}` `[4H]`); the two biases are summed once here.
    pub fn new(input: usize, hidden: usize, w_ih: &[f32], w_hh: &[f32], b_ih: &[f32], b_hh: &[f32]) -> LstmLayer {
        assert!(w_ih.len() == 4 * hidden * input && w_hh.len() == 4 * hidden * hidden, "LstmLayer::new: weight sizes");
        assert!(b_ih.len() == 4 * hidden && b_hh.len() == 4 * hidden, "LstmLayer::new: bias sizes");
        let bias = b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect();
        let h4 = 4 * hidden;
        LstmLayer { input, hidden, w_ih: packed(w_ih, h4, input), w_hh: packed(w_hh, h4, hidden), bias }
    }

    /// Runs the layer over `batch` sequences of `steps` steps. `x` is time-major,
    /// `[steps][batch][input]`; returns every step's hidden state, `[steps][batch][H]` (the last
    /// step's rows are `h_n`).
    pub fn forward(&self, x: &[f32], steps: usize, batch: usize) -> Vec<f32> {
        let (h4, hid) = (4 * self.hidden, self.hidden);
        assert_eq!(x.len(), steps * batch * self.input, "LstmLayer::forward: input size");
        // input projection of every step at once: [steps·batch][4H]
        let mut pre = vec![0f32; steps * batch * h4];
        gemm_panels(x, &self.w_ih, Some(&self.bias), &mut pre, steps * batch, h4, self.input);
        let mut out = vec![0f32; steps * batch * hid];
        let mut c = vec![0f32; batch * hid];
        let mut rec = vec![0f32; batch * h4];
        for t in 0..steps {
            let z = &pre[t * batch * h4..(t + 1) * batch * h4];
            if t == 0 {
                rec.fill(0.0); // h₀ = 0
            } else {
                let h_prev = &out[(t - 1) * batch * hid..t * batch * hid];
                gemm_panels(h_prev, &self.w_hh, None, &mut rec, batch, h4, hid);
            }
            let h_t = &mut out[t * batch * hid..(t + 1) * batch * hid];
            for b in 0..batch {
                let (zb, rb) = (&z[b * h4..(b + 1) * h4], &rec[b * h4..(b + 1) * h4]);
                let (cb, hb) = (&mut c[b * hid..(b + 1) * hid], &mut h_t[b * hid..(b + 1) * hid]);
                for j in 0..hid {
                    let i = sigmoid(zb[j] + rb[j]);
                    let f = sigmoid(zb[hid + j] + rb[hid + j]);
                    let g = (zb[2 * hid + j] + rb[2 * hid + j]).tanh();
                    let o = sigmoid(zb[3 * hid + j] + rb[3 * hid + j]);
                    cb[j] = f * cb[j] + i * g;
                    hb[j] = o * cb[j].tanh();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tts_kernels::testing::fresh_seed;

    use super::*;

    /// A naive f64 LSTM over one sequence `[steps][input]`, separate biases, returning h per step.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        steps: usize,
        input: usize,
        hid: usize,
        w_ih: &[f32],
        w_hh: &[f32],
        b_ih: &[f32],
        b_hh: &[f32],
    ) -> Vec<f64> {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut h, mut c) = (vec![0f64; hid], vec![0f64; hid]);
        let mut out = Vec::new();
        for t in 0..steps {
            let z: Vec<f64> = (0..4 * hid)
                .map(|r| {
                    let a: f64 = (0..input).map(|k| w_ih[r * input + k] as f64 * x[t * input + k] as f64).sum();
                    let b: f64 = (0..hid).map(|k| w_hh[r * hid + k] as f64 * h[k]).sum();
                    a + b_ih[r] as f64 + b + b_hh[r] as f64
                })
                .collect();
            for j in 0..hid {
                let (i, f, g, o) = (sig(z[j]), sig(z[hid + j]), z[2 * hid + j].tanh(), sig(z[3 * hid + j]));
                c[j] = f * c[j] + i * g;
                h[j] = o * c[j].tanh();
            }
            out.extend_from_slice(&h);
        }
        out
    }

    #[test]
    fn lstm_layer_matches_a_naive_f64_lstm() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        // odd sizes (not multiples of the 16-column panels or 6-row tiles); batches of 1 to 19
        for (input, hid, steps, batch) in [(7, 13, 11, 3), (40, 37, 29, 19), (5, 1, 4, 1)] {
            let scale = 1.0 / (hid as f32).sqrt();
            let mut r = |n: usize, s: f32| (0..n).map(|_| rng.random_range(-s..s)).collect::<Vec<f32>>();
            let (w_ih, w_hh) = (r(4 * hid * input, 2.0 * scale), r(4 * hid * hid, 2.0 * scale));
            let (b_ih, b_hh) = (r(4 * hid, 0.5), r(4 * hid, 0.5));
            let x = r(steps * batch * input, 1.5); // time-major [steps][batch][input]
            let layer = LstmLayer::new(input, hid, &w_ih, &w_hh, &b_ih, &b_hh);
            let got = layer.forward(&x, steps, batch);
            assert_eq!(got.len(), steps * batch * hid);
            for b in 0..batch {
                let seq: Vec<f32> =
                    (0..steps).flat_map(|t| x[(t * batch + b) * input..(t * batch + b + 1) * input].to_vec()).collect();
                let want = naive(&seq, steps, input, hid, &w_ih, &w_hh, &b_ih, &b_hh);
                for t in 0..steps {
                    for j in 0..hid {
                        let (g, w) = (got[(t * batch + b) * hid + j] as f64, want[t * hid + j]);
                        assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "sizes {input}/{hid} t {t} b {b} j {j}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
