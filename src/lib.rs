//! rl-rewrite: Replacement Learning rewrites for ONNX models — engines, reports and the commands behind the CLI.

pub mod commands;
pub mod compare;
pub mod data;
pub mod engine;
pub mod evaluate;
pub mod execute;
pub mod inputs;
pub mod npy;
pub mod reference;
pub mod report;
pub mod train;
pub mod train_compile;
