//! table (being written).
