//! The `weft` binary (being written).
fn main() {}
