//! ONNX Runtime through the `ort` crate, with `libonnxruntime` loaded at run time.
//!
//! The library is looked up by [`find_library`] and loaded once per process ([`environment`]). Sessions are built
//! by [`session::OrtSessionBuilder`] only; [`OrtEngine`] runs one on host tensors and reports the providers that
//! ran its nodes, as measured from ORT's profile ([`profile`]).
//!
//! The CPU lowering of training steps ([`cpu::lower_for_cpu`]): convolutions in ONNX Runtime's blocked NCHWc
//! kernels ([`nchwc`]), and this crate's own kernels ([`ops`]: [`conv_weight_grad`], ReluGrad, GeluGrad,
//! LayerNormGrad, AdamWStep) replacing the subgraphs the autodiff and the optimizer noted ([`weight_grad`],
//! [`activation_grads`], [`layer_norm`], [`adamw`]).

pub mod activation_grads;
pub mod adamw;
pub mod conv_weight_grad;
pub mod cpu;
pub mod layer_norm;
pub mod nchwc;
pub mod ops;
pub mod profile;
pub mod session;
pub mod vector_math;
pub mod weight_grad;

pub use profile::{allocator_stats, placement_from_profile};
pub use session::{OrtEngine, OrtSession, OrtSessionBuilder};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};

use super::EngineError;

pub const ENGINE: &str = "onnxruntime";

/// How to get a library when none is found.
const SETUP_HINT: &str = "run `bash scripts/setup-ort.sh` (CPU) or `bash scripts/setup-ort.sh --gpu` (CUDA) in the \
     rl-rewrite checkout to put it in `.ort/`, or set ORT_DYLIB_PATH to a libonnxruntime 1.31 library file";

fn prepare_error(message: impl Into<String>) -> EngineError {
    EngineError::Prepare {
        engine: ENGINE,
        message: message.into(),
    }
}

fn run_error(message: impl Into<String>) -> EngineError {
    EngineError::Run {
        engine: ENGINE,
        message: message.into(),
    }
}

/// Is `name` the main ONNX Runtime library (`libonnxruntime.so`, `libonnxruntime.so.1.31.1`,
/// `libonnxruntime.1.31.1.dylib`, `onnxruntime.dll`), not a provider library next to it?
fn is_runtime_library(name: &str) -> bool {
    let base = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let Some(rest) = name.strip_prefix(&base) else {
        return false;
    };
    rest.starts_with('.') && rest.contains(std::env::consts::DLL_SUFFIX)
}

/// The ONNX Runtime library in `dir`: the unversioned name when present, else the highest versioned one.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let exact = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    if dir.join(&exact).is_file() {
        return Some(dir.join(exact));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_runtime_library))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// `start` and its ancestors' `.ort/` folders holding a library, nearest first.
fn dot_ort_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find_map(|dir| library_in(&dir.join(".ort")))
}

/// The `capi/` folder of an installed Python `onnxruntime` package, asked of `python`.
fn python_capi(python: &str) -> Option<PathBuf> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()).join("capi"))
}

/// Finds `libonnxruntime`, in this order:
/// 1. `ORT_DYLIB_PATH` (a library file);
/// 2. `RL_ORT_DIR` (a folder holding it);
/// 3. a `.ort/` folder (as `scripts/setup-ort.sh` makes) in the current directory or one above it, then in the
///    executable's directory or one above it, then in this crate's checkout;
/// 4. the executable's directory;
/// 5. the `capi/` folder of an installed Python `onnxruntime` package (`$RL_PYTHON`, then `python3`).
///
/// A variable that is set but names nothing usable is an error, not a reason to look elsewhere.
pub fn find_library() -> Result<PathBuf, EngineError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(std::path::absolute(&path).unwrap_or(path))
        } else {
            Err(prepare_error(format!(
                "ORT_DYLIB_PATH is `{}`, which is not a file",
                path.display()
            )))
        };
    }
    if let Some(dir) = std::env::var_os("RL_ORT_DIR").filter(|p| !p.is_empty()) {
        let dir = PathBuf::from(dir);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        return library_in(&dir).ok_or_else(|| {
            prepare_error(format!(
                "RL_ORT_DIR is `{}`, which holds no onnxruntime library; {SETUP_HINT}",
                dir.display()
            ))
        });
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(found) = std::env::current_dir()
        .ok()
        .and_then(|d| dot_ort_upwards(&d))
    {
        return Ok(found);
    }
    if let Some(found) = exe_dir.as_deref().and_then(dot_ort_upwards) {
        return Ok(found);
    }
    if let Some(found) = library_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort")) {
        return Ok(found);
    }
    if let Some(found) = exe_dir.as_deref().and_then(library_in) {
        return Ok(found);
    }
    let pythons = std::env::var("RL_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .into_iter()
        .chain(["python3".to_owned()]);
    for python in pythons {
        if let Some(found) = python_capi(&python).and_then(|dir| library_in(&dir)) {
            return Ok(found);
        }
    }
    Err(prepare_error(format!(
        "no ONNX Runtime library found (looked at ORT_DYLIB_PATH, RL_ORT_DIR, `.ort/` folders above the current \
         directory and the executable, the executable's directory and a Python `onnxruntime` package); \
         {SETUP_HINT}"
    )))
}

struct Runtime {
    env: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process; later calls return the same library (or the same error).
fn runtime() -> Result<&'static Runtime, EngineError> {
    RUNTIME
        .get_or_init(|| {
            let library = find_library().map_err(|e| match e {
                EngineError::Prepare { message, .. } | EngineError::Run { message, .. } => message,
            })?;
            let env = ort::init_from(&library)
                .map_err(|e| load_failure(&library, &e))?
                .with_name("rl-rewrite")
                .build()
                .map_err(|e| {
                    format!(
                        "could not create an ONNX Runtime environment from `{}`: {e}",
                        library.display()
                    )
                })?;
            Ok(Runtime { env, library })
        })
        .as_ref()
        .map_err(|m| prepare_error(m.clone()))
}

/// The process's ONNX Runtime environment (loading the library if not yet done), for callers that build their
/// own sessions (the training loop).
pub fn environment() -> Result<&'static Environment, EngineError> {
    Ok(&runtime()?.env)
}

/// The library that was loaded (loading it if not yet done).
pub fn loaded_library() -> Result<PathBuf, EngineError> {
    Ok(runtime()?.library.clone())
}

/// The library named with its version where its file name tells it (`libonnxruntime.so` is a link to
/// `libonnxruntime.so.1.31.1`).
fn describe_library(library: &Path) -> String {
    let real = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_path_buf());
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let version = name
        .split('.')
        .filter(|part| part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if version.contains('.') {
        format!("`{}` (ONNX Runtime {version})", library.display())
    } else {
        format!("`{}`", library.display())
    }
}

/// An error with its sources, `outer: inner: …`.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why `ort::init_from` could not load `library`; the dlopen reason is kept (ort's message alone drops it).
fn load_failure(library: &Path, e: &ort::LoadDynamicError) -> String {
    let reason = match e {
        ort::LoadDynamicError::Dlopen { error, .. } => with_sources(error),
        other => other.to_string(),
    };
    format!(
        "could not load the ONNX Runtime library `{}`: {reason}; {SETUP_HINT}",
        library.display()
    )
}

/// Whether the CUDA execution provider is compiled into the loaded library (loading it if not yet done).
pub fn cuda_compiled() -> Result<bool, EngineError> {
    runtime()?;
    ep::CUDA::is_available().map_err(|e| prepare_error(e.to_string()))
}

/// Why the CUDA execution provider could not be registered, from ORT's error and the library's providers.
fn cuda_failure(library: &Path, error: &str) -> String {
    let library = describe_library(library);
    if !ep::CUDA::is_available().unwrap_or(false) {
        format!(
            "the CUDA execution provider is not compiled into {library}: it is a CPU-only build (the PyPI \
             `onnxruntime` package has no CUDA provider); get the GPU build with `bash scripts/setup-ort.sh --gpu` \
             (onnxruntime-gpu for CUDA 13 and cuDNN 9) or point ORT_DYLIB_PATH at one [ORT: {error}]"
        )
    } else {
        format!(
            "the CUDA execution provider of {library} could not be loaded: {error} (it needs the CUDA 13 and \
             cuDNN 9 libraries on LD_LIBRARY_PATH, e.g. from the `nvidia-*-cu13` Python packages)"
        )
    }
}
