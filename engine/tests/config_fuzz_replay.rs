//! The `config` fuzz target's check (`engine/fuzz/src/lib.rs`) replayed on stable: its seeds
//! and 800 mutations of them (see `engine/fuzz/src/replay.rs`).

#[path = "../fuzz/src/lib.rs"]
mod fuzz;
