//! Every ONNX Runtime session is built here: execution providers, the one device fallback rule, this crate's CPU
//! kernels, profiling. [`OrtEngine`] runs a session on host tensors; the training runner binds device values to
//! the sessions it builds here ([`OrtSession::session`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ort::ep;
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};
use prost::Message;
use rl_passes::onnx::ModelProto;

use super::profile::placement_from_profile;
use super::{cuda_failure, prepare_error, run_error, runtime, Runtime, ENGINE};
use crate::engine::{Device, Engine, EngineError, HostTensor, TensorData};

/// How to build a session. The defaults suit inference: ORT's optimizations and memory pattern on, no profiling,
/// ONNX Runtime's own kernels only.
#[derive(Debug, Clone)]
pub struct OrtSessionBuilder {
    device: Device,
    optimize: bool,
    intra_threads: Option<usize>,
    own_kernels: bool,
    lower_for_cpu: bool,
    memory_pattern: bool,
    profile: bool,
}

/// A session and the device it was built for (`Cpu` or `Cuda`, never `Auto`).
pub struct OrtSession {
    pub session: Session,
    pub device: Device,
    /// The profile file prefix, when built with profiling.
    profile: Option<PathBuf>,
}

static PROFILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl OrtSessionBuilder {
    pub fn new(device: Device) -> OrtSessionBuilder {
        OrtSessionBuilder {
            device,
            optimize: true,
            intra_threads: None,
            own_kernels: false,
            lower_for_cpu: false,
            memory_pattern: true,
            profile: false,
        }
    }

    /// ORT's graph optimizations (constant folding, Conv+BatchNorm fusion, …); on by default. Off, ORT runs every
    /// node of the model as one kernel (Constant nodes excepted: ORT turns them into initializers when it loads
    /// the model), so a measured placement counts the model's nodes.
    pub fn optimize(mut self, on: bool) -> Self {
        self.optimize = on;
        self
    }

    /// Threads inside an operator (ORT's default, one per physical core, when `None`).
    pub fn intra_threads(mut self, threads: Option<usize>) -> Self {
        self.intra_threads = threads;
        self
    }

    /// On the CPU provider, register this crate's kernels ([`crate::engine::ort::ops`]) for models that use them.
    pub fn own_kernels(mut self, on: bool) -> Self {
        self.own_kernels = on;
        self
    }

    /// On the CPU provider, run the model lowered to ONNX Runtime's blocked-layout kernels and this crate's own
    /// ([`crate::engine::ort::cpu::lower_for_cpu`]; implies [`Self::own_kernels`]). A speed-up only: a model the
    /// lowering cannot analyse, or whose lowered form ONNX Runtime refuses, runs as it is, with a warning.
    pub fn lower_for_cpu(mut self, on: bool) -> Self {
        self.lower_for_cpu = on;
        self
    }

    /// ONNX Runtime's memory pattern (pre-planned buffers for fixed shapes); on by default.
    pub fn memory_pattern(mut self, on: bool) -> Self {
        self.memory_pattern = on;
        self
    }

    /// Profile the session's runs (see [`OrtSession::end_profiling`]).
    pub fn profile(mut self, on: bool) -> Self {
        self.profile = on;
        self
    }

    /// Builds a session for `model`. The one device rule: `Cpu` and `Cuda` are taken as asked (`Cuda` fails with
    /// the reason when its provider cannot be used); `Auto` tries CUDA quietly and, when it cannot be used, runs
    /// on the CPU with one warning line on stderr.
    pub fn build(&self, model: &ModelProto) -> Result<OrtSession, EngineError> {
        let rt = runtime()?;
        match self.device {
            Device::Cpu => self.on_cpu(rt, model),
            Device::Cuda => self
                .commit(rt, &model.encode_to_vec(), true)
                .map_err(|e| prepare_error(format!("CUDA was requested, but {e}"))),
            Device::Auto => match quietly(rt, || self.commit(rt, &model.encode_to_vec(), true)) {
                Ok(session) => Ok(session),
                Err(e) => {
                    eprintln!(
                        "warning: onnxruntime runs on the CPU: {}",
                        e.replace('\n', " ")
                    );
                    self.on_cpu(rt, model)
                }
            },
        }
    }

    fn on_cpu(&self, rt: &Runtime, model: &ModelProto) -> Result<OrtSession, EngineError> {
        if self.lower_for_cpu {
            let lowered = crate::engine::ort::cpu::lower_for_cpu(model).unwrap_or_else(|e| {
                eprintln!(
                    "warning: the model runs without ONNX Runtime's CPU-specific kernels: {e:#}"
                );
                None
            });
            if let Some(lowered) = lowered {
                match self.commit(rt, &lowered.encode_to_vec(), false) {
                    Ok(session) => return Ok(session),
                    Err(e) => eprintln!(
                        "warning: the model runs without ONNX Runtime's CPU-specific kernels: its lowered form \
                         was refused: {e}"
                    ),
                }
            }
        }
        self.commit(rt, &model.encode_to_vec(), false)
            .map_err(prepare_error)
    }

    /// One session from encoded bytes; `cuda` registers the CUDA provider (before ORT's implicit CPU fallback)
    /// and fails when it cannot be registered.
    fn commit(&self, rt: &Runtime, bytes: &[u8], cuda: bool) -> Result<OrtSession, String> {
        let builder_err = |e: ort::Error<SessionBuilder>| e.to_string();
        let mut builder = Session::builder(&rt.env).map_err(|e| e.to_string())?;
        if !self.optimize {
            builder = builder
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(builder_err)?;
        }
        if let Some(n) = self.intra_threads {
            builder = builder.with_intra_threads(n).map_err(builder_err)?;
        }
        if !self.memory_pattern {
            builder = builder.with_memory_pattern(false).map_err(builder_err)?;
        }
        if cuda {
            builder = builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| cuda_failure(&rt.library, &e.to_string()))?;
        }
        let profile = self.profile.then(|| {
            std::env::temp_dir().join(format!(
                "rl-rewrite-ort-profile-{}-{}",
                std::process::id(),
                PROFILE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
        });
        if let Some(prefix) = &profile {
            builder = builder.with_profiling(prefix).map_err(builder_err)?;
        }
        let session = if cuda {
            builder.commit_from_memory(bytes).map_err(|e| {
                format!(
                    "ONNX Runtime could not create a session on the CUDA execution provider: {e}"
                )
            })?
        } else if self.own_kernels || self.lower_for_cpu {
            crate::engine::ort::ops::commit_with_own_ops(builder, bytes)
                .map_err(|e| format!("ONNX Runtime could not create a session: {e:#}"))?
        } else {
            builder
                .commit_from_memory(bytes)
                .map_err(|e| format!("ONNX Runtime could not create a session: {e}"))?
        };
        Ok(OrtSession {
            session,
            device: if cuda { Device::Cuda } else { Device::Cpu },
            profile,
        })
    }
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

impl OrtSession {
    /// Ends profiling and returns the profile's text (the file is removed). An error when the session was not
    /// built with profiling.
    pub fn end_profiling(&mut self) -> Result<String, EngineError> {
        let prefix = self
            .profile
            .take()
            .ok_or_else(|| prepare_error("the session was built without profiling"))?;
        let file = PathBuf::from(
            self.session
                .end_profiling()
                .map_err(|e| prepare_error(format!("ORT's profile could not be written: {e}")))?,
        );
        let text = std::fs::read_to_string(&file);
        let _ = std::fs::remove_file(&file);
        text.map_err(|e| {
            prepare_error(format!(
                "ORT's profile `{}` (for `{}`) could not be read: {e}",
                file.display(),
                prefix.display()
            ))
        })
    }
}

/// A host tensor as an ORT input value borrowing its data.
pub fn input_value<'a>(
    name: &str,
    t: &'a HostTensor,
) -> Result<SessionInputValue<'a>, EngineError> {
    t.check_size(name).map_err(run_error)?;
    let shape = t.shape.as_slice();
    let value = match &t.data {
        TensorData::F32(v) => TensorRef::from_array_view((shape, v.as_slice())).map(Into::into),
        TensorData::I64(v) => TensorRef::from_array_view((shape, v.as_slice())).map(Into::into),
    };
    value.map_err(|e| run_error(format!("input '{name}': {e}")))
}

/// A host copy of an ORT output (float32 or int64, on the host already).
pub fn host_value(name: &str, value: &DynValue) -> Result<HostTensor, EngineError> {
    let dims = |shape: &[i64]| shape.iter().map(|&d| d as usize).collect();
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Ok(HostTensor::f32(dims(shape), data.to_vec()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
        return Ok(HostTensor::i64(dims(shape), data.to_vec()));
    }
    Err(run_error(format!(
        "output '{name}' is neither a float32 nor an int64 tensor on the host"
    )))
}

/// A model prepared in an ONNX Runtime session, run on host tensors. Which providers ran its nodes is measured,
/// not assumed: the first (warm-up) run is profiled and the profile's node events counted per provider.
pub struct OrtEngine {
    session: Mutex<Session>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    device: Device,
    placement: Vec<(String, usize)>,
}

impl OrtEngine {
    /// Prepares `model` on `device` with ORT's default optimizations.
    pub fn new(model: &ModelProto, device: Device) -> Result<OrtEngine, EngineError> {
        Self::with_builder(model, OrtSessionBuilder::new(device))
    }

    /// Prepares `model` with a session from `builder` (profiling is turned on for the warm-up run).
    pub fn with_builder(
        model: &ModelProto,
        builder: OrtSessionBuilder,
    ) -> Result<OrtEngine, EngineError> {
        let mut built = builder.profile(true).build(model)?;
        warm_up(&mut built.session)?;
        let profile = built.end_profiling()?;
        let placement = placement_from_profile(&profile)
            .map_err(|e| prepare_error(format!("ORT's profile is not understood: {e}")))?;
        let session = built.session;
        Ok(OrtEngine {
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
            device: built.device,
            placement,
        })
    }

    /// The device the session was created for (`Cuda` or `Cpu`; never `Auto`).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Nodes of ORT's (optimized) graph per execution provider that ran them in the profiled warm-up run,
    /// largest count first. With optimizations off these are the model's nodes (Constant nodes excepted).
    pub fn placement(&self) -> &[(String, usize)] {
        &self.placement
    }
}

/// Runs the session once on zeros (symbolic dimensions set to 1).
fn warm_up(session: &mut Session) -> Result<(), EngineError> {
    let mut zeros: Vec<(String, SessionInputValue<'static>)> = Vec::new();
    for input in session.inputs() {
        let name = input.name();
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(prepare_error(format!(
                "input '{name}' is not a tensor; only float32 and int64 tensor inputs are supported"
            )));
        };
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| if d > 0 { d as usize } else { 1 })
            .collect();
        let n = dims.iter().product();
        let value: Result<DynValue, _> = match ty {
            TensorElementType::Float32 => {
                Tensor::from_array((dims, vec![0f32; n])).map(|t| t.into_dyn())
            }
            TensorElementType::Int64 => {
                Tensor::from_array((dims, vec![0i64; n])).map(|t| t.into_dyn())
            }
            other => {
                return Err(prepare_error(format!(
                    "input '{name}' is {other:?}; only float32 and int64 inputs are supported"
                )))
            }
        };
        let value = value.map_err(|e| prepare_error(e.to_string()))?;
        zeros.push((name.to_owned(), value.into()));
    }
    session
        .run(zeros)
        .map(drop)
        .map_err(|e| prepare_error(format!("the warm-up run failed: {e}")))
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
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::new();
        for name in &self.input_names {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(run_error(format!("input '{name}' not given")));
            };
            values.push((name.as_str(), input_value(name, t)?));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(values).map_err(|e| run_error(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| run_error(format!("output '{name}' missing")))?;
                Ok((name.clone(), host_value(name, value)?))
            })
            .collect()
    }
}
