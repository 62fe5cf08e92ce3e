pub mod diff;
pub mod onnx;
