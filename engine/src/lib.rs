//! weft engine (being written).
pub mod sys;
