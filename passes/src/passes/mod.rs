//! Rewrite passes, one per file.

pub mod bake;
pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod replace_frozen;

pub use bake::BakeIntegrations;
pub use const_fold::ConstantFolding;
pub use cse::CommonSubexpressionElimination;
pub use dce::DeadCodeElimination;
pub use replace_frozen::ReplaceFrozenUnits;
