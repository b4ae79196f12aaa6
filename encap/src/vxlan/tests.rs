//! Byte-vector tests of the VXLAN backend.
