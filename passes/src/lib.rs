//! ONNX schema, graph IR, analyses and rewrite passes for Replacement Learning.

pub mod io;
pub mod ir;
pub mod onnx;
pub mod tensor;
