//! flannel (being written).
