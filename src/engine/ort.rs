//! ONNX Runtime through the `ort` crate, with `libonnxruntime` loaded at run time.
//!
//! The library is looked up by [`find_library`] and loaded once per process. A session is created from the encoded
//! model in memory on the CPU or the CUDA execution provider ([`Device`]). Which provider actually ran the nodes is
//! measured, not assumed: the first (warm-up) run of every session is profiled, and the node events of ORT's
//! profile are counted per provider ([`OrtEngine::placement`]).
//!
//! Inputs and outputs are copied between host and device on every run. Keeping them on the device with IoBinding
//! pays for the training loop, where parameters stay on the GPU between steps; it is not done here yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};
use prost::Message;
use rl_passes::onnx::ModelProto;

use super::{Device, Engine, EngineError, HostTensor};

const ENGINE: &str = "onnxruntime";

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

/// Options of an ORT session beyond the device.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    pub device: Device,
    /// ORT's graph optimizations (constant folding, Conv+BatchNorm fusion, …). On by default. Off, ORT runs every
    /// node of the model as one kernel (Constant nodes excepted: ORT turns them into initializers when it loads the
    /// model), so the measured placement counts the model's nodes.
    pub optimize: bool,
    /// Threads inside an operator (ORT's default, one per physical core, when `None`).
    pub intra_threads: Option<usize>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            device: Device::Auto,
            optimize: true,
            intra_threads: None,
        }
    }
}

/// A model prepared in an ONNX Runtime session.
pub struct OrtEngine {
    session: Mutex<Session>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    device: Device,
    placement: Vec<(String, usize)>,
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

static PROFILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl OrtEngine {
    /// Prepares `model` on `device` with ORT's default optimizations. The model is encoded and committed from
    /// memory (a model loaded with external data already holds the tensors' bytes).
    ///
    /// `Device::Cuda` fails with the reason when the CUDA execution provider cannot be used; `Device::Auto` tries it
    /// and falls back to the CPU with one warning line on stderr.
    pub fn new(model: &ModelProto, device: Device) -> Result<OrtEngine, EngineError> {
        Self::with_options(
            model,
            &OrtOptions {
                device,
                ..OrtOptions::default()
            },
        )
    }

    pub fn with_options(
        model: &ModelProto,
        options: &OrtOptions,
    ) -> Result<OrtEngine, EngineError> {
        let rt = runtime()?;
        let bytes = model.encode_to_vec();
        let (session, profile, device) = match options.device {
            Device::Cpu => {
                let (s, p) = Self::session(rt, &bytes, options, false).map_err(prepare_error)?;
                (s, p, Device::Cpu)
            }
            Device::Cuda => {
                let (s, p) = Self::session(rt, &bytes, options, true)
                    .map_err(|e| prepare_error(format!("CUDA was requested, but {e}")))?;
                (s, p, Device::Cuda)
            }
            Device::Auto => match Self::quietly(rt, || Self::session(rt, &bytes, options, true)) {
                Ok((s, p)) => (s, p, Device::Cuda),
                Err(e) => {
                    let e = e.replace('\n', " ");
                    eprintln!("warning: onnxruntime runs on the CPU: {e}");
                    let (s, p) =
                        Self::session(rt, &bytes, options, false).map_err(prepare_error)?;
                    (s, p, Device::Cpu)
                }
            },
        };
        let mut engine = OrtEngine {
            input_names: session
                .inputs()
                .iter()
                .map(|o| o.name().to_owned())
                .collect(),
            output_names: session
                .outputs()
                .iter()
                .map(|o| o.name().to_owned())
                .collect(),
            session: Mutex::new(session),
            device,
            placement: Vec::new(),
        };
        engine.placement = engine.measure_placement(&profile)?;
        Ok(engine)
    }

    /// Runs `f` with ORT's own logging at Fatal (unless `ORT_LOG` asks for a level), so that a failed CUDA attempt
    /// under `Device::Auto` leaves only our one warning line on stderr. The level is process-wide: a session being
    /// created on another thread meanwhile logs less.
    fn quietly<T>(rt: &Runtime, f: impl FnOnce() -> T) -> T {
        if std::env::var_os("ORT_LOG").is_some() {
            return f();
        }
        rt.env.set_log_level(LogLevel::Fatal);
        let result = f();
        // ort's default level when ORT_LOG is not set.
        rt.env.set_log_level(LogLevel::Error);
        result
    }

    /// A session profiling its runs into `<prefix>_<time>.json`: `(session, prefix)`. `cuda` registers the CUDA
    /// provider (before ORT's implicit CPU fallback) and fails when it cannot be registered.
    fn session(
        rt: &Runtime,
        bytes: &[u8],
        options: &OrtOptions,
        cuda: bool,
    ) -> Result<(Session, PathBuf), String> {
        let builder_err = |e: ort::Error<SessionBuilder>| e.to_string();
        let mut builder = Session::builder(&rt.env).map_err(|e| e.to_string())?;
        if !options.optimize {
            builder = builder
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(builder_err)?;
        }
        if let Some(n) = options.intra_threads {
            builder = builder.with_intra_threads(n).map_err(builder_err)?;
        }
        if cuda {
            builder = builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| cuda_failure(&rt.library, &e.to_string()))?;
        }
        let prefix = std::env::temp_dir().join(format!(
            "rl-rewrite-ort-profile-{}-{}",
            std::process::id(),
            PROFILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        builder = builder.with_profiling(&prefix).map_err(builder_err)?;
        let session = builder.commit_from_memory(bytes).map_err(|e| {
            if cuda {
                format!(
                    "ONNX Runtime could not create a session on the CUDA execution provider: {e}"
                )
            } else {
                format!("ONNX Runtime could not create a session: {e}")
            }
        })?;
        Ok((session, prefix))
    }

    /// Runs the model once on zeros (symbolic dimensions set to 1) with profiling on, ends profiling, and counts
    /// the profile's node events per execution provider, largest count first.
    fn measure_placement(&self, prefix: &Path) -> Result<Vec<(String, usize)>, EngineError> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let mut warm_up: Vec<(String, SessionInputValue<'static>)> = Vec::new();
        for input in session.inputs() {
            let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
                return Err(prepare_error(format!(
                    "input '{}' is not a tensor; only float32 tensor inputs are supported",
                    input.name()
                )));
            };
            if *ty != TensorElementType::Float32 {
                return Err(prepare_error(format!(
                    "input '{}' is {ty:?}; only float32 inputs are supported",
                    input.name()
                )));
            }
            let dims: Vec<usize> = shape
                .iter()
                .map(|&d| if d > 0 { d as usize } else { 1 })
                .collect();
            let zeros = vec![0f32; dims.iter().product()];
            let value =
                Tensor::from_array((dims, zeros)).map_err(|e| prepare_error(e.to_string()))?;
            warm_up.push((input.name().to_owned(), value.into()));
        }
        let run = session.run(warm_up).map(drop);
        let file = session.end_profiling();
        let file = match (run, file) {
            (Err(e), file) => {
                if let Ok(f) = file {
                    let _ = std::fs::remove_file(f);
                }
                return Err(prepare_error(format!("the warm-up run failed: {e}")));
            }
            (Ok(()), Err(e)) => {
                return Err(prepare_error(format!(
                    "ORT's profile could not be written: {e}"
                )))
            }
            (Ok(()), Ok(f)) => PathBuf::from(f),
        };
        let text = std::fs::read_to_string(&file);
        let _ = std::fs::remove_file(&file);
        let text = text.map_err(|e| {
            prepare_error(format!(
                "ORT's profile `{}` (for `{}`) could not be read: {e}",
                file.display(),
                prefix.display()
            ))
        })?;
        placement_from_profile(&text).map_err(|e| {
            prepare_error(format!(
                "ORT's profile `{}` is not understood: {e}",
                file.display()
            ))
        })
    }

    /// The device the session was created for (`Cuda` or `Cpu`; never `Auto`).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Nodes of ORT's (optimized) graph per execution provider that ran them in the profiled warm-up run,
    /// largest count first. With [`OrtOptions::optimize`] off these are the model's nodes (Constant nodes excepted).
    pub fn placement(&self) -> &[(String, usize)] {
        &self.placement
    }
}

/// Counts the node events of an ORT profile (a JSON array of Chrome trace events) per provider. ORT writes three
/// events per node and run (`<node>_fence_before`, `<node>_kernel_time`, `<node>_fence_after`), all with
/// `"cat": "Node"`; the `_kernel_time` one carries `args.provider`, so those are counted.
pub fn placement_from_profile(profile: &str) -> Result<Vec<(String, usize)>, String> {
    let events: Vec<serde_json::Value> =
        serde_json::from_str(profile).map_err(|e| e.to_string())?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for event in &events {
        if event.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let name = event
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if !name.ends_with("_kernel_time") {
            continue;
        }
        let Some(provider) = event.pointer("/args/provider").and_then(|p| p.as_str()) else {
            return Err(format!("node event '{name}' names no provider"));
        };
        match counts.iter_mut().find(|(p, _)| p == provider) {
            Some((_, n)) => *n += 1,
            None => counts.push((provider.to_owned(), 1)),
        }
    }
    if counts.is_empty() {
        return Err("it holds no node events".to_owned());
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counts)
}

impl Engine for OrtEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    /// The providers that ran the nodes in the profiled warm-up run, e.g. `CPUExecutionProvider (52 nodes)` or
    /// `CUDAExecutionProvider (50 nodes), CPUExecutionProvider (2 nodes)`.
    fn provider(&self) -> String {
        self.placement
            .iter()
            .map(|(p, n)| format!("{p} ({n} node{})", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, EngineError> {
        let fail = |e: ort::Error| run_error(e.to_string());
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::new();
        for name in &self.input_names {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(run_error(format!("input '{name}' not given")));
            };
            let expected: usize = t.shape.iter().product();
            if expected != t.data.len() {
                return Err(run_error(format!(
                    "input '{name}' has shape {:?} but {} values",
                    t.shape,
                    t.data.len()
                )));
            }
            let view = TensorRef::from_array_view((t.shape.as_slice(), t.data.as_slice()))
                .map_err(fail)?;
            values.push((name.as_str(), view.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(values).map_err(fail)?;
        let mut result = Vec::new();
        for name in &self.output_names {
            let value = outputs
                .get(name)
                .ok_or_else(|| run_error(format!("output '{name}' missing")))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| run_error(format!("output '{name}' is not a float32 tensor: {e}")))?;
            result.push((
                name.clone(),
                HostTensor {
                    shape: shape.iter().map(|&d| d as usize).collect(),
                    data: data.to_vec(),
                },
            ));
        }
        Ok(result)
    }
}

/// The statistics ONNX Runtime keeps for the allocator of `session` on `memory` (for the arena allocators:
/// `InUse`, `MaxInUse`, `TotalAllocated`, `NumAllocs`, … in bytes or counts), as key/value text pairs.
pub fn allocator_stats(
    session: &Session,
    memory: &ort::memory::MemoryInfo<'_>,
) -> Result<Vec<(String, String)>, String> {
    use std::ffi::{c_char, CStr};
    let allocator = ort::memory::Allocator::new(session, memory.to_owned())
        .map_err(|e| format!("onnxruntime has no allocator for {memory:?}: {e}"))?;
    let api = ort::api();
    let text = |p: *const c_char| {
        // SAFETY: ONNX Runtime hands out NUL-terminated strings that live as long as their owner.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    let mut pairs: *mut ort::sys::OrtKeyValuePairs = std::ptr::null_mut();
    // SAFETY: the allocator pointer is valid while `allocator` lives; `pairs` receives an owned object.
    let status = unsafe { (api.AllocatorGetStats)(ort::AsPointer::ptr(&allocator), &mut pairs) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an error we own: read its message, then release it.
        let message = text(unsafe { (api.GetErrorMessage)(status.0) });
        unsafe { (api.ReleaseStatus)(status.0) };
        return Err(format!("onnxruntime allocator statistics: {message}"));
    }
    let (mut keys, mut values, mut count) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: `pairs` is the valid object returned above; the arrays it fills are owned by it.
    unsafe { (api.GetKeyValuePairs)(pairs, &mut keys, &mut values, &mut count) };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `count` entries in each array, as reported.
        out.push(unsafe { (text(*keys.add(i)), text(*values.add(i))) });
    }
    // SAFETY: released once, after its strings were copied.
    unsafe { (api.ReleaseKeyValuePairs)(pairs) };
    Ok(out)
}
