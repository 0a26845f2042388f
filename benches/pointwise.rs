//! Microbenchmarks of the pointwise kernel family (placeholder until the family lands).
fn main() {}
