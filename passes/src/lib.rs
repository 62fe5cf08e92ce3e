//! ONNX schema, graph IR, analyses and rewrite passes for Replacement Learning.

pub mod analysis;
pub mod autodiff;
pub mod contract;
pub mod graph_diff;
pub mod io;
pub mod ir;
pub mod onnx;
pub mod pass;
pub mod passes;
pub mod pipeline;
pub mod plan;
pub mod tensor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod training;
