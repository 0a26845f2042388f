//! Multi-head self-attention with relative positions (ESPnet `RelPositionMultiHeadedAttention`,
//! S3Gen's conformer encoder).
use crate::error::{Error, Result};
use crate::{View, ViewMut};

/// For batch b, query i, head h (vectors of `head_dim` = width / heads):
/// `score[i, j] = ((q_i + u_h)·k_j + (q_i + v_h)·pos[T − 1 − i + j]) · scale` over keys `j < kv_lens[b]`
/// (every key without `kv_lens`), `out_i = Σ_j softmax(score[i])_j · v_j`; a query that sees no key
/// gets zeros. `pos` row r holds the projected encoding of relative position `T − 1 − r`.
///
/// Shapes: `q`, `k`, `v`, `out` `[B, T, heads·head_dim]`; `pos` `[2T − 1, heads·head_dim]` (shared
/// by the batch); `bias_u`, `bias_v` `[heads, head_dim]` f32; `kv_lens` `[B]` i32. Dtypes: `q`, `k`,
/// `v`, `pos`, `out` the compute dtype.
#[allow(clippy::too_many_arguments)]
pub fn attention_relpos(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    pos: View<'_>,
    bias_u: View<'_>,
    bias_v: View<'_>,
    kv_lens: Option<View<'_>>,
    out: ViewMut<'_>,
    heads: usize,
    scale: f32,
) -> Result<()> {
    let _ = (q, k, v, pos, bias_u, bias_v, kv_lens, out, heads, scale);
    Err(Error::invalid("attention_relpos", "not implemented yet"))
}
