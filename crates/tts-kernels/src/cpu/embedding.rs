//! Embedding gathers.

use super::bad_row::{BadRow, RowValue};

/// Token-embedding gather plus learned-position add:
/// `out[r] = (ids[r] >= 0 ? table[ids[r]] : 0) + (pos[r] >= 0 ? pos_table[pos[r]] : 0)`.
/// `table`: [vocab, dim]; `pos_table`: [n_pos, dim]; `out`: [rows, dim].
/// Returns the first (row, id or position) that is past the end of its table.
pub fn embed_pos(ids: &[i32], pos: Option<(&[i32], &[f32])>, table: &[f32], out: &mut [f32], dim: usize) -> Result<(), BadRow> {
    if dim == 0 {
        return Ok(());
    }
    let vocab = table.len() / dim;
    for (r, o) in out.chunks_exact_mut(dim).enumerate() {
        let id = ids[r];
        if id >= vocab as i32 {
            return Err((r, RowValue::TokenId, id));
        }
        if id >= 0 {
            o.copy_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
        } else {
            o.fill(0.0);
        }
        if let Some((pos, pos_table)) = pos {
            let p = pos[r];
            if p >= (pos_table.len() / dim) as i32 {
                return Err((r, RowValue::Position, p));
            }
            if p >= 0 {
                for (o, &v) in o.iter_mut().zip(&pos_table[p as usize * dim..(p as usize + 1) * dim]) {
                    *o += v;
                }
            }
        }
    }
    Ok(())
}
