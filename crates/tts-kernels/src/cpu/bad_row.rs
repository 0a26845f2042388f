//! The error of the Cpu ops that check per-row indices before writing anything (`embed_pos`,
//! `rope_kv_write`, `attention_cached`): which value of which row is out of range.

/// The per-row value that is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowValue {
    /// A token id past the end of the embedding table.
    TokenId,
    /// A position outside the table or the cache.
    Position,
    /// A KV-cache slot outside `0..n_slots`.
    Slot,
    /// A live length outside `0..=max_len`.
    Length,
}

impl std::fmt::Display for RowValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RowValue::TokenId => "token id",
            RowValue::Position => "position",
            RowValue::Slot => "slot",
            RowValue::Length => "length",
        })
    }
}

/// The first bad row of a Cpu op: (row, which value, the value).
pub type BadRow = (usize, RowValue, i32);
