//! Byte-vector tests of the UDP backend (being written).
