//! Microbenchmarks of the conv kernel family (placeholder until the family lands).
fn main() {}
