//! Example (being written).
fn main() {}
