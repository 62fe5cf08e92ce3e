//! The one engine layer of every command, inference and training alike: ONNX Runtime (loaded at run time) and
//! the embedded pure-Rust tract engine.
//!
//! - [`resolve`] turns `--engine` and `--device` into the [`Backend`] that runs (the one `auto` rule).
//! - [`ort::session::OrtSessionBuilder`] builds every ONNX Runtime session (providers, the device fallback rule,
//!   this crate's CPU kernels, profiling); [`tract::TractModel`] is the one tract preparation.
//! - [`HostTensor`] is what goes in and comes out on the host; [`Engine`] runs a model on host tensors.
//!
//! Engine-specific lowering (NCHWc layouts, own kernels, tract's node renaming) lives here and nowhere else.

pub mod conv_weight_grad;
pub mod host;
pub mod ort;
pub mod ort_cpu;
pub mod ort_nchwc;
pub mod ort_ops;
pub mod ort_relu_grad;
pub mod ort_weight_grad;
pub mod tract;
mod tract_dropout;
mod tract_log_softmax;

pub use host::{ElementType, HostTensor, TensorData};

use rl_passes::onnx::ModelProto;

/// Where ONNX Runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when it works here, else the CPU (with one warning line on stderr).
    #[default]
    Auto,
    /// The CPU execution provider only.
    Cpu,
    /// The CUDA execution provider; an error when it cannot be used.
    Cuda,
}

/// Which engine runs a model, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// ONNX Runtime when its library is found, else the embedded tract engine (with one note on stderr).
    #[default]
    Auto,
    /// ONNX Runtime (libonnxruntime loaded at run time; see scripts/setup-ort.sh).
    Ort,
    /// The embedded pure-Rust engine (CPU only).
    Tract,
}

/// The engine that runs, once the choice is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ONNX Runtime on `Device` (`Auto` still falls back from CUDA to the CPU when a session is built).
    Ort(Device),
    Tract,
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

impl EngineError {
    /// What went wrong, without the engine's name.
    pub fn message(&self) -> &str {
        match self {
            EngineError::Prepare { message, .. } | EngineError::Run { message, .. } => message,
        }
    }
}

/// Why tract cannot take `--device cuda`.
const TRACT_IS_CPU_ONLY: &str =
    "tract runs on the CPU only; use --engine ort --device cuda for the GPU";

/// The one rule for `--engine` and `--device`: `ort` and `tract` are taken as asked (tract refuses CUDA);
/// `auto` is ONNX Runtime when its library is found, else tract with one note on stderr — unless CUDA was asked
/// for, which tract cannot give.
pub fn resolve(choice: EngineChoice, device: Device) -> Result<Backend, EngineError> {
    let tract = || {
        if device == Device::Cuda {
            Err(EngineError::Prepare {
                engine: tract::ENGINE,
                message: TRACT_IS_CPU_ONLY.into(),
            })
        } else {
            Ok(Backend::Tract)
        }
    };
    match choice {
        EngineChoice::Tract => tract(),
        EngineChoice::Ort => Ok(Backend::Ort(device)),
        EngineChoice::Auto => match ort::find_library() {
            Ok(_) => Ok(Backend::Ort(device)),
            Err(e) if device == Device::Cuda => Err(e),
            Err(e) => {
                eprintln!("note: {e}; using the embedded tract engine");
                tract()
            }
        },
    }
}

/// Something that runs a model on named host tensors and returns its outputs in graph order.
pub trait Engine {
    /// `tract` or `onnxruntime`.
    fn name(&self) -> &'static str;
    /// What actually executed the nodes, as measured (e.g. `tract (CPU)`, `CUDAExecutionProvider: 95 nodes,
    /// CPUExecutionProvider: 3 nodes`); never an assumption from the configuration.
    fn provider(&self) -> String;
    fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, EngineError>;
}

/// A data input of a model as an engine is given it: name, element type and fixed shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFact {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<usize>,
}

/// Opens the chosen engine for `model`. `inputs` fixes the data inputs' types and shapes (tract plans for them;
/// ONNX Runtime takes any).
pub fn open_engine(
    model: &ModelProto,
    choice: EngineChoice,
    device: Device,
    inputs: &[InputFact],
) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match resolve(choice, device)? {
        Backend::Tract => Box::new(tract::TractEngine::new(model, inputs)?),
        Backend::Ort(device) => Box::new(ort::OrtEngine::new(model, device)?),
    })
}
