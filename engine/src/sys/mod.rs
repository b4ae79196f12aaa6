//! All of weft's `unsafe` code (being written).
