//! Rewrite passes, one per file.

pub mod replace_frozen;

pub use replace_frozen::ReplaceFrozenUnits;
