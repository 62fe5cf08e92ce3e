//! Choosing an engine: `--engine auto|ort|tract` with `--device auto|cpu|cuda`.

use rl_passes::onnx::ModelProto;

use super::ort::{find_library, OrtEngine};
use super::tract::TractEngine;
use super::{Device, Engine, EngineError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// ONNX Runtime when its library is found, else the embedded tract engine (with one note on stderr).
    #[default]
    Auto,
    /// ONNX Runtime (libonnxruntime loaded at run time; see scripts/setup-ort.sh).
    Ort,
    /// The embedded pure-Rust engine (CPU only).
    Tract,
}

/// Opens the chosen engine for `model`. `shapes` fixes the input shapes (tract plans for them; ORT takes any).
pub fn open_engine(
    model: &ModelProto,
    choice: EngineChoice,
    device: Device,
    shapes: &[(String, Vec<usize>)],
) -> Result<Box<dyn Engine>, EngineError> {
    let tract = |device: Device| -> Result<Box<dyn Engine>, EngineError> {
        if device == Device::Cuda {
            return Err(EngineError::Prepare {
                engine: "tract",
                message: "tract runs on the CPU only; use --engine ort --device cuda for the GPU"
                    .into(),
            });
        }
        Ok(Box::new(TractEngine::new(model, shapes)?))
    };
    match choice {
        EngineChoice::Tract => tract(device),
        EngineChoice::Ort => Ok(Box::new(OrtEngine::new(model, device)?)),
        EngineChoice::Auto => match find_library() {
            Ok(_) => Ok(Box::new(OrtEngine::new(model, device)?)),
            Err(e) if device == Device::Cuda => Err(e),
            Err(e) => {
                eprintln!("note: {e}; using the embedded tract engine");
                tract(device)
            }
        },
    }
}
