//! Engines that execute ONNX models: ONNX Runtime (loaded at run time) and the embedded pure-Rust tract engine.

pub mod conv_weight_grad;
pub mod ort;
pub mod ort_cpu;
pub mod ort_nchwc;
pub mod ort_ops;
pub mod ort_relu_grad;
pub mod ort_weight_grad;
pub mod select;
pub mod tract;

/// Where ONNX Runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Device {
    /// CUDA when it works here, else the CPU (with one warning line on stderr).
    #[default]
    Auto,
    /// The CPU execution provider only.
    Cpu,
    /// The CUDA execution provider; an error when it cannot be used.
    Cuda,
}

/// A dense float32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Largest absolute difference to `other`, `None` when shapes differ.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Option<f32> {
        (self.shape == other.shape).then(|| {
            self.data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{engine} could not prepare the model: {message}")]
    Prepare {
        engine: &'static str,
        message: String,
    },
    #[error("{engine} failed to run the model: {message}")]
    Run {
        engine: &'static str,
        message: String,
    },
}

/// Something that runs a model on named float inputs and returns its outputs in graph order.
pub trait Engine {
    /// `tract` or `ort`.
    fn name(&self) -> &'static str;
    /// What actually executed the nodes, as measured (e.g. `tract (CPU)`, `CUDAExecutionProvider: 95 nodes,
    /// CPUExecutionProvider: 3 nodes`); never an assumption from the configuration.
    fn provider(&self) -> String;
    fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, EngineError>;
}
