//! Activations.

/// The Llama MLP gate: `out[r, i] = silu(gate_up[r, i]) · gate_up[r, inner + i]`.
/// `gate_up`: [rows, 2·inner] (gate and up projections stacked); `out`: [rows, inner].
pub fn swiglu(gate_up: &[f32], out: &mut [f32], inner: usize) {
    if inner == 0 {
        return;
    }
    for (gu, o) in gate_up.chunks_exact(2 * inner).zip(out.chunks_exact_mut(inner)) {
        let (g, u) = gu.split_at(inner);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
}
