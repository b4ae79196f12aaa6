//! weft benchmarks support (being written).
