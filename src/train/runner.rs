//! Running the step and eval models, with the parameters and optimizer state kept as engine values between
//! steps.
//!
//! - **ONNX Runtime**: IoBinding. The step model's outputs `x.next` are bound to the session's device (CUDA
//!   memory on the CUDA provider, ORT-owned host memory on the CPU one) and, after each step, *moved* out of the
//!   outputs and bound as the next step's inputs `x`: parameters and optimizer state never pass through host
//!   vectors. Only the batch, the labels and the learning rate go in, and `loss` and `correct` (bound to host
//!   memory) come out, per step. The eval model gets the same device values bound as its parameter inputs.
//!   Host copies are made only for checkpoints.
//! - **tract**: the state lives in tract values (`TValue`, reference counted); outputs are moved into the next
//!   step's inputs the same way.

use anyhow::{anyhow, Context, Result};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor as OrtTensor, TensorValueType};
use rl_passes::onnx::ModelProto;
use rl_passes::training::TrainManifest;
use tract_onnx::prelude::*;

use crate::engine::ort::OrtSessionBuilder;
use crate::engine::tract::TractModel;
use crate::engine::{resolve, Backend, Device, ElementType, EngineChoice, HostTensor, InputFact};

/// Drives a compiled step model and its eval model.
pub trait Runner {
    /// What runs the models, e.g. `onnxruntime (CPUExecutionProvider)`.
    fn describe(&self) -> String;
    /// One training step: returns (loss, correct).
    fn step(&mut self, images: &[f32], labels: &[i64], lr: f32) -> Result<(f32, i64)>;
    /// The eval model's first output (the logits, `[N, classes]` flattened) for one batch, with the current
    /// parameters.
    fn logits(&mut self, images: &[f32], labels: &[i64]) -> Result<Vec<f32>>;
    /// Host copies of the parameters and the optimizer state, in manifest order.
    fn values(&self) -> Result<Vec<HostTensor>>;
    /// Peak bytes the engine has held on the accelerator so far (`None` when it runs on the host).
    fn device_peak_bytes(&self) -> Option<u64> {
        None
    }
}

/// Everything a runner needs to know about the models.
pub struct Models<'a> {
    pub step: &'a ModelProto,
    pub eval: &'a ModelProto,
    pub manifest: &'a TrainManifest,
    /// Shape of the batch input, batch dimension included.
    pub input_shape: Vec<usize>,
    /// Starting values of the parameters then the state, in manifest order.
    pub start: Vec<HostTensor>,
}

impl Models<'_> {
    fn carried(&self) -> Vec<(String, String)> {
        self.manifest
            .params
            .iter()
            .chain(&self.manifest.state)
            .map(|t| (t.name.clone(), t.next.clone()))
            .collect()
    }
}

/// Opens the engine that `choice` and `device` resolve to ([`resolve`]).
pub fn open(models: Models<'_>, choice: EngineChoice, device: Device) -> Result<Box<dyn Runner>> {
    Ok(match resolve(choice, device)? {
        Backend::Ort(device) => Box::new(OrtRunner::new(models, device)?),
        Backend::Tract => Box::new(TractRunner::new(models)?),
    })
}

pub struct OrtRunner {
    step: Session,
    eval: Session,
    step_binding: IoBinding,
    eval_binding: IoBinding,
    /// (input name, output name) of each carried value.
    carried: Vec<(String, String)>,
    /// The carried values (on the session's device after the first step), bound as inputs of both models.
    values: Vec<DynValue>,
    /// Graph inputs of the eval model (ORT's session does not list those that have stored defaults).
    eval_inputs: std::collections::HashSet<String>,
    input: String,
    labels: String,
    lr: String,
    loss: String,
    correct: String,
    logits: String,
    input_shape: Vec<usize>,
    /// Where the carried outputs are allocated.
    device_memory: MemoryInfo<'static>,
    provider: &'static str,
}

fn ort_err(e: ort::Error) -> anyhow::Error {
    anyhow!("onnxruntime: {e}")
}

impl OrtRunner {
    pub fn new(models: Models<'_>, device: Device) -> Result<OrtRunner> {
        // Training sessions keep ONNX Runtime's memory pattern off: a resnet32 step at batch 128 then peaks at
        // about half the host memory (626 instead of 1188 MiB) for a step time within the noise of a shared
        // 2-core machine. The eval model goes where the step model went.
        let sessions = |device| {
            OrtSessionBuilder::new(device)
                .memory_pattern(false)
                .lower_for_cpu(true)
        };
        let step = sessions(device).build(models.step)?;
        let eval = sessions(step.device).build(models.eval)?;
        let cuda = step.device == Device::Cuda;
        let (step, eval) = (step.session, eval.session);
        let logits = eval
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
            .ok_or_else(|| anyhow!("the eval model has no output"))?;
        let mut values = Vec::new();
        for v in &models.start {
            let data = v
                .as_f32()
                .ok_or_else(|| anyhow!("a carried value is not float32"))?;
            values.push(
                OrtTensor::from_array((v.shape.clone(), data.to_vec()))
                    .map_err(ort_err)?
                    .into_dyn(),
            );
        }
        let m = models.manifest;
        let carried = models.carried();
        // Carried outputs stay where the session computes them; loss, correct and logits come to the host.
        let (device_memory, host_memory) = if cuda {
            (
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                ),
                MemoryInfo::new(
                    AllocationDevice::CUDA_PINNED,
                    0,
                    AllocatorType::Device,
                    MemoryType::CPUOutput,
                ),
            )
        } else {
            let cpu = || {
                MemoryInfo::new(
                    AllocationDevice::CPU,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
            };
            (cpu(), cpu())
        };
        let (device_memory, host_memory) = (
            device_memory.map_err(ort_err)?,
            host_memory.map_err(ort_err)?,
        );
        let mut step_binding = step.create_binding().map_err(ort_err)?;
        for name in [&m.loss, &m.correct] {
            step_binding
                .bind_output_to_device(name.as_str(), &host_memory)
                .map_err(ort_err)?;
        }
        let mut eval_binding = eval.create_binding().map_err(ort_err)?;
        eval_binding
            .bind_output_to_device(logits.as_str(), &host_memory)
            .map_err(ort_err)?;
        let eval_inputs = models
            .eval
            .graph
            .as_ref()
            .map(|g| g.input.iter().map(|i| i.name().to_owned()).collect())
            .unwrap_or_default();
        let mut runner = OrtRunner {
            eval_inputs,
            step,
            eval,
            step_binding,
            eval_binding,
            carried,
            values,
            input: m.input.clone(),
            labels: m.labels.clone(),
            lr: m.lr.clone(),
            loss: m.loss.clone(),
            correct: m.correct.clone(),
            logits,
            input_shape: models.input_shape,
            device_memory,
            provider: if cuda {
                "CUDAExecutionProvider, IoBinding"
            } else {
                "CPUExecutionProvider, IoBinding"
            },
        };
        runner.bind_values()?;
        Ok(runner)
    }

    /// Binds the carried values as inputs of the step model, and those the eval model takes (parameters and
    /// BatchNormalization running statistics) as its inputs.
    fn bind_values(&mut self) -> Result<()> {
        for ((name, _), value) in self.carried.iter().zip(&self.values) {
            self.step_binding
                .bind_input(name.as_str(), value)
                .map_err(ort_err)?;
            if self.eval_inputs.contains(name) {
                self.eval_binding
                    .bind_input(name.as_str(), value)
                    .map_err(ort_err)?;
            }
        }
        Ok(())
    }

    fn bind_batch(
        binding: &mut IoBinding,
        (input, shape): (&str, &[usize]),
        (labels_name, images, labels): (&str, &[f32], &[i64]),
    ) -> Result<()> {
        let x = OrtTensor::from_array((shape.to_vec(), images.to_vec())).map_err(ort_err)?;
        binding.bind_input(input, &x).map_err(ort_err)?;
        let y = OrtTensor::from_array(([labels.len()], labels.to_vec())).map_err(ort_err)?;
        binding.bind_input(labels_name, &y).map_err(ort_err)?;
        Ok(())
    }
}

/// Host copy of a float32 tensor, from wherever it lives.
fn to_host(v: &DynValue) -> Result<HostTensor> {
    let host = |shape: &[i64], data: &[f32]| {
        HostTensor::f32(shape.iter().map(|&d| d as usize).collect(), data.to_vec())
    };
    if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
        return Ok(host(shape, data));
    }
    let on_host = v
        .view()
        .downcast::<TensorValueType<f32>>()
        .map_err(ort_err)?
        .to(AllocationDevice::CPU, 0)
        .map_err(ort_err)?;
    let (shape, data) = on_host.try_extract_tensor::<f32>().map_err(ort_err)?;
    Ok(host(shape, data))
}

impl OrtRunner {
    /// The highest `MaxInUse` over the step and eval sessions' allocators on `memory` (the arenas ONNX Runtime
    /// keeps per session and device).
    pub fn allocator_peak_bytes(&self, memory: &MemoryInfo<'_>) -> Result<u64> {
        let mut peak = 0;
        for session in [&self.step, &self.eval] {
            let stats =
                crate::engine::ort::allocator_stats(session, memory).map_err(|e| anyhow!(e))?;
            let max_in_use = stats
                .iter()
                .find(|(k, _)| k == "MaxInUse")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    anyhow!("onnxruntime reports no MaxInUse for {memory:?}: {stats:?}")
                })?;
            peak = peak.max(max_in_use);
        }
        Ok(peak)
    }
}

impl Runner for OrtRunner {
    fn describe(&self) -> String {
        format!("onnxruntime ({})", self.provider)
    }

    fn device_peak_bytes(&self) -> Option<u64> {
        if !self.device_memory.is_cpu_accessible() {
            match self.allocator_peak_bytes(&self.device_memory) {
                Ok(bytes) => return Some(bytes),
                Err(e) => eprintln!("warning: device memory not measured: {e:#}"),
            }
        }
        None
    }

    fn step(&mut self, images: &[f32], labels: &[i64], lr: f32) -> Result<(f32, i64)> {
        Self::bind_batch(
            &mut self.step_binding,
            (&self.input, &self.input_shape),
            (&self.labels, images, labels),
        )?;
        let lr = OrtTensor::from_array((Vec::<usize>::new(), vec![lr])).map_err(ort_err)?;
        self.step_binding
            .bind_input(self.lr.as_str(), &lr)
            .map_err(ort_err)?;
        // A bound output keeps its buffer after a run, and ORT writes the next run's result into it: the carried
        // outputs are bound afresh before every step, so that step n+1 allocates new buffers instead of
        // overwriting its own inputs (step n's outputs) while reading them.
        for (_, next) in &self.carried {
            self.step_binding
                .bind_output_to_device(next.as_str(), &self.device_memory)
                .map_err(ort_err)?;
        }
        let mut out = self
            .step
            .run_binding(&self.step_binding)
            .map_err(|e| anyhow!("onnxruntime failed to run the step model: {e}"))?;
        let loss = out[self.loss.as_str()]
            .try_extract_scalar::<f32>()
            .map_err(ort_err)?;
        let correct = out[self.correct.as_str()]
            .try_extract_scalar::<i64>()
            .map_err(ort_err)?;
        let mut next = Vec::with_capacity(self.carried.len());
        for (_, name) in &self.carried {
            next.push(
                out.remove(name)
                    .ok_or_else(|| anyhow!("the step model has no output '{name}'"))?,
            );
        }
        drop(out);
        self.values = next;
        self.bind_values()?;
        Ok((loss, correct))
    }

    fn logits(&mut self, images: &[f32], labels: &[i64]) -> Result<Vec<f32>> {
        Self::bind_batch(
            &mut self.eval_binding,
            (&self.input, &self.input_shape),
            (&self.labels, images, labels),
        )?;
        let out = self
            .eval
            .run_binding(&self.eval_binding)
            .map_err(|e| anyhow!("onnxruntime failed to run the eval model: {e}"))?;
        let (_, data) = out[self.logits.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        Ok(data.to_vec())
    }

    fn values(&self) -> Result<Vec<HostTensor>> {
        self.values.iter().map(to_host).collect()
    }
}

pub struct TractRunner {
    step: TractModel,
    /// The eval model as compiled; tract needs BatchNormalization parameters to be constants, so it is planned
    /// with the current parameters and running statistics stored in it, again after each training step.
    eval_model: ModelProto,
    eval: Option<TractModel>,
    carried: Vec<(String, String)>,
    values: Vec<TValue>,
    input: String,
    labels: String,
    lr: String,
    loss: String,
    correct: String,
    input_shape: Vec<usize>,
}

impl TractRunner {
    pub fn new(models: Models<'_>) -> Result<TractRunner> {
        let m = models.manifest;
        let carried = models.carried();
        let fact = |name: &str, element_type, shape: &[usize]| InputFact {
            name: name.to_owned(),
            element_type,
            shape: shape.to_vec(),
        };
        let mut facts = batch_facts(&m.input, &m.labels, &models.input_shape);
        facts.push(fact(&m.lr, ElementType::F32, &[]));
        for t in m.params.iter().chain(&m.state) {
            facts.push(fact(&t.name, ElementType::F32, &t.shape));
        }
        let step = TractModel::prepare(models.step, &facts).context("the step model")?;
        let eval_model = models.eval.clone();
        let values = models
            .start
            .iter()
            .map(crate::engine::tract::to_tract)
            .collect::<TractResult<Vec<_>>>()?;
        Ok(TractRunner {
            step,
            eval_model,
            eval: None,
            carried,
            values,
            input: m.input.clone(),
            labels: m.labels.clone(),
            lr: m.lr.clone(),
            loss: m.loss.clone(),
            correct: m.correct.clone(),
            input_shape: models.input_shape,
        })
    }

    /// The eval model with the current parameters and running statistics as its stored tensors.
    fn plan_eval(&self) -> Result<TractModel> {
        let mut eval = self.eval_model.clone();
        if let Some(g) = eval.graph.as_mut() {
            for t in g.initializer.iter_mut() {
                if let Some(k) = self.carried.iter().position(|(n, _)| n == t.name()) {
                    let view = self.values[k].to_plain_array_view::<f32>()?;
                    let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                    let data: Vec<f32> = view.iter().copied().collect();
                    *t = rl_passes::tensor::f32_tensor(t.name(), &dims, &data);
                }
            }
        }
        let facts = batch_facts(&self.input, &self.labels, &self.input_shape);
        TractModel::prepare(&eval, &facts).context("the eval model")
    }

    fn feed(
        &self,
        plan: &TractModel,
        images: &[f32],
        labels: &[i64],
        lr: Option<f32>,
        carried: usize,
    ) -> Result<TVec<TValue>> {
        let mut inputs = TVec::new();
        for name in plan.inputs() {
            let v = if *name == self.input {
                Tensor::from_shape(&self.input_shape, images)?.into_tvalue()
            } else if *name == self.labels {
                Tensor::from_shape(&[labels.len()], labels)?.into_tvalue()
            } else if *name == self.lr {
                tensor0(lr.ok_or_else(|| anyhow!("the eval model asks for the learning rate"))?)
                    .into_tvalue()
            } else {
                let k = self.carried[..carried]
                    .iter()
                    .position(|(n, _)| n == name)
                    .ok_or_else(|| anyhow!("unexpected model input '{name}'"))?;
                self.values[k].clone()
            };
            inputs.push(v);
        }
        Ok(inputs)
    }
}

impl Runner for TractRunner {
    fn describe(&self) -> String {
        "tract (CPU)".to_owned()
    }

    fn step(&mut self, images: &[f32], labels: &[i64], lr: f32) -> Result<(f32, i64)> {
        let inputs = self.feed(&self.step, images, labels, Some(lr), self.carried.len())?;
        let out = self.step.run(inputs).context("the step model")?;
        let mut out: Vec<Option<TValue>> = out.into_iter().map(Some).collect();
        let mut take = |name: &str| -> Result<TValue> {
            let k = self
                .step
                .outputs()
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| anyhow!("the step model has no output '{name}'"))?;
            out[k]
                .take()
                .ok_or_else(|| anyhow!("output '{name}' used twice"))
        };
        let loss = take(&self.loss)?.cast_to_scalar::<f32>()?;
        let correct = take(&self.correct)?.cast_to_scalar::<i64>()?;
        let mut next = Vec::with_capacity(self.carried.len());
        for (_, name) in &self.carried {
            next.push(take(name)?);
        }
        self.values = next;
        self.eval = None;
        Ok((loss, correct))
    }

    fn logits(&mut self, images: &[f32], labels: &[i64]) -> Result<Vec<f32>> {
        if self.eval.is_none() {
            self.eval = Some(self.plan_eval()?);
        }
        let eval = self.eval.as_ref().expect("planned above");
        let inputs = self.feed(eval, images, labels, None, self.carried.len())?;
        let out = eval.run(inputs).context("the eval model")?;
        let logits = out
            .first()
            .ok_or_else(|| anyhow!("the eval model has no output"))?;
        Ok(logits
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }

    fn values(&self) -> Result<Vec<HostTensor>> {
        self.values
            .iter()
            .map(crate::engine::tract::to_host)
            .collect()
    }
}

/// The facts of the batch inputs: the images and their int64 labels.
fn batch_facts(input: &str, labels: &str, input_shape: &[usize]) -> Vec<InputFact> {
    vec![
        InputFact {
            name: input.to_owned(),
            element_type: ElementType::F32,
            shape: input_shape.to_vec(),
        },
        InputFact {
            name: labels.to_owned(),
            element_type: ElementType::I64,
            shape: vec![input_shape[0]],
        },
    ]
}
