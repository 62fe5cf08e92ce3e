//! Composition of the training-step and eval models (conventions in the module doc of [`super`]).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::batchnorm::{bn_tensors, running_statistics, RunningStat, RunningVariance};
use super::bn_lowering::LowerBatchNormTraining;
use super::bn_training_mode::BatchNormTrainingMode;
use super::builder::{value_info, zeros, Builder};
use super::dropout_training::DropoutTrainingMode;
use super::error::TrainError;
use super::inference_mode::InferenceMode;
use super::loss::softmax_cross_entropy;
use super::optimizer::{emit_updates, next_name, Optimizer, ParamUpdate, StateTensor};
use crate::analysis::shapes::{infer, infer_shapes, TensorType};
use crate::autodiff::{differentiate_with, DiffOptions};
use crate::contract::{self, IntegrationNames};
use crate::ir::{Graph, GraphError, Producer};
use crate::onnx::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim, type_proto, ModelProto,
    TensorProto, ValueInfoProto,
};
use crate::pass::Driver;
use crate::plan::Plan;
use crate::tensor::dtype_name;

const LABELS: &str = "labels";
const LR: &str = "lr";
const LOSS: &str = "loss";
const CORRECT: &str = "correct";
/// The boolean initializer switching the step model's Dropout nodes to training mode.
const DROPOUT_TRAINING: &str = "train/dropout_training";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The fixed batch size N of both models.
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// Label smoothing ε in [0, 1).
    pub label_smoothing: f64,
    /// Stop the gradient at the integration `Mul`s' neighbour inputs (`--detach-neighbours`).
    pub detach_neighbours: bool,
    /// Apply weight decay to every parameter, `a`/`b`, biases and norm parameters included.
    pub decay_all: bool,
    /// Which batch variance updates BatchNormalization running variances: unbiased as PyTorch (the default)
    /// or biased as the ONNX operator's definition.
    pub bn_running_var: RunningVariance,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 32,
            optimizer: Optimizer::sgd(0.9, false, 5e-4),
            label_smoothing: 0.0,
            detach_neighbours: false,
            decay_all: false,
            bn_running_var: RunningVariance::Unbiased,
        }
    }
}

/// One input of the step model that has a `.next` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTensor {
    pub name: String,
    pub next: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// For parameters: whether weight decay applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<bool>,
}

/// How to drive the step model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainManifest {
    pub input: String,
    pub labels: String,
    pub lr: String,
    pub loss: String,
    pub correct: String,
    pub batch_size: usize,
    pub label_smoothing: f64,
    pub optimizer: Optimizer,
    pub detach_neighbours: bool,
    /// Which batch variance updates BatchNormalization running variances (manifests without the field were
    /// written when the step followed the ONNX operator: biased).
    #[serde(default = "RunningVariance::onnx")]
    pub bn_running_var: RunningVariance,
    pub params: Vec<ManifestTensor>,
    /// State: the optimizer's (zeros before the first step), then BatchNormalization running statistics
    /// (their initializer values before the first step).
    pub state: Vec<ManifestTensor>,
    /// How many of the `state` entries, from the first, are the optimizer's.
    pub optimizer_state_tensors: usize,
}

impl TrainManifest {
    /// The optimizer's state tensors (momentum, AdamW moments and step).
    pub fn optimizer_state(&self) -> &[ManifestTensor] {
        &self.state[..self.optimizer_state_tensors]
    }

    /// The BatchNormalization running statistics carried as state.
    pub fn running_statistics(&self) -> &[ManifestTensor] {
        &self.state[self.optimizer_state_tensors..]
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifests serialize")
    }
}

pub struct TrainingModels {
    pub step: ModelProto,
    pub eval: ModelProto,
    pub manifest: TrainManifest,
    /// First values of the step model's parameter and state inputs (in manifest order).
    pub initial: Vec<TensorProto>,
}

/// The forward model lifted, with its batch input's shape fixed: (graph, input name, input dtype, input shape,
/// logits name, logits type).
struct Forward {
    g: Graph,
    input: String,
    input_dtype: i32,
    input_shape: Vec<usize>,
    logits: String,
    logits_type: TensorType,
    types: HashMap<String, TensorType>,
}

fn forward(model: &ModelProto, batch: usize) -> Result<Forward, TrainError> {
    let g = Graph::lift(model.clone())?;
    let data = g.data_inputs();
    let [input] = data.as_slice() else {
        return Err(TrainError::Unsupported(format!(
            "the model must have exactly one data input (the batch), found {}: {data:?}",
            data.len()
        )));
    };
    let tt = g
        .value_info(input)
        .and_then(|v| v.r#type.as_ref())
        .and_then(|t| match &t.value {
            Some(type_proto::Value::TensorType(tt)) => Some(tt.clone()),
            _ => None,
        })
        .ok_or_else(|| TrainError::Unsupported(format!("input '{input}' has no tensor type")))?;
    let dims = tt.shape.map(|s| s.dim).unwrap_or_default();
    if dims.is_empty() {
        return Err(TrainError::Unsupported(format!(
            "input '{input}' needs a shape with a batch dimension first"
        )));
    }
    let mut shape = vec![batch];
    for (k, d) in dims.iter().enumerate().skip(1) {
        match d.value {
            Some(Dim::DimValue(v)) if v > 0 => shape.push(v as usize),
            _ => {
                return Err(TrainError::Unsupported(format!(
                    "input '{input}': dimension {k} must be static (only the batch dimension may be symbolic)"
                )))
            }
        }
    }
    let input_dtype = tt.elem_type.unwrap_or(DataType::Float as i32);
    let logits = g
        .proto
        .output
        .first()
        .map(|o| o.name().to_owned())
        .ok_or_else(|| TrainError::Unsupported("the model has no output".into()))?;
    let mut g = g;
    set_input_type(&mut g, input, input_dtype, &shape);
    let types = infer_shapes(&g, &[(input.clone(), shape.clone())])?;
    let logits_type = types[&logits].clone();
    if logits_type.shape.len() != 2
        || logits_type.shape[0] != batch
        || !crate::tensor::is_float(logits_type.dtype)
    {
        return Err(TrainError::Unsupported(format!(
            "the first output '{logits}' must be float logits [N, classes], found {:?}",
            logits_type.shape
        )));
    }
    Ok(Forward {
        input: input.clone(),
        input_dtype,
        input_shape: shape,
        logits,
        logits_type,
        types,
        g,
    })
}

fn set_input_type(g: &mut Graph, name: &str, dtype: i32, shape: &[usize]) {
    let vi = value_info(name, dtype, shape);
    match g.proto.input.iter_mut().find(|i| i.name() == name) {
        Some(i) => i.r#type = vi.r#type,
        None => g.proto.input.push(vi),
    }
}

/// Sets the shape of every value_info entry the analysis typed to the concrete one (exporters' value_info may
/// carry another batch size).
fn refresh_value_info(g: &mut Graph, types: &HashMap<String, TensorType>) {
    for v in &mut g.proto.value_info {
        if let Some(t) = types.get(v.name()) {
            v.r#type = value_info(v.name(), t.dtype, &t.shape).r#type;
        }
    }
}

/// Values the given outputs depend on.
fn needed_values(g: &Graph, outputs: &[String]) -> Result<HashSet<String>, GraphError> {
    let mut needed: HashSet<String> = outputs.iter().cloned().collect();
    for i in g.topological_order()?.into_iter().rev() {
        let n = g.node(i);
        if n.output.iter().any(|o| needed.contains(o)) {
            needed.extend(n.input.iter().filter(|v| !v.is_empty()).cloned());
        }
    }
    Ok(needed)
}

/// Whether `name` (through Identity/Cast chains) is a normalization's scale or bias.
fn is_norm_param(
    g: &Graph,
    consumers: &HashMap<String, Vec<(petgraph::stable_graph::NodeIndex, usize)>>,
    name: &str,
) -> bool {
    let mut stack = vec![name.to_owned()];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        for &(i, slot) in consumers.get(&v).into_iter().flatten() {
            let n = g.node(i);
            match n.op_type() {
                "BatchNormalization"
                | "LayerNormalization"
                | "InstanceNormalization"
                | "GroupNormalization"
                    if slot == 1 || slot == 2 =>
                {
                    return true
                }
                "Identity" | "Cast" => stack.push(n.output[0].clone()),
                _ => {}
            }
        }
    }
    false
}

fn manifest_tensor(name: &str, dtype: i32, shape: &[usize], decay: Option<bool>) -> ManifestTensor {
    ManifestTensor {
        name: name.to_owned(),
        next: next_name(name),
        dtype: dtype_name(dtype).unwrap_or("?").to_owned(),
        shape: shape.to_vec(),
        weight_decay: decay,
    }
}

fn claim(g: &Graph, taken: &mut HashSet<String>, name: &str) -> Result<(), TrainError> {
    if g.producer(name).is_some() || !taken.insert(name.to_owned()) {
        return Err(TrainError::NameClash(name.to_owned()));
    }
    Ok(())
}

/// Shapes of the data inputs, from their (static) value_info.
fn input_shapes(g: &Graph) -> Vec<(String, Vec<usize>)> {
    g.data_inputs()
        .into_iter()
        .map(|n| {
            let shape = g
                .value_info(&n)
                .and_then(|v| v.r#type.as_ref())
                .and_then(|t| match &t.value {
                    Some(type_proto::Value::TensorType(tt)) => tt.shape.clone(),
                    _ => None,
                })
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(Dim::DimValue(v)) => v.max(0) as usize,
                            _ => 0,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (n, shape)
        })
        .collect()
}

/// Refuses options the compiler cannot honour, naming the option.
fn validate_options(opts: &TrainOptions) -> Result<(), TrainError> {
    if opts.batch_size == 0 {
        return Err(TrainError::Option(
            "the batch size must be at least 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&opts.label_smoothing) {
        return Err(TrainError::Option(format!(
            "label smoothing must be in [0, 1) (got {})",
            opts.label_smoothing
        )));
    }
    opts.optimizer.validate().map_err(TrainError::Option)
}

/// The (node, input slot) pairs the gradient must not pass: the neighbour inputs of every integration `Mul`
/// under `--detach-neighbours`, none otherwise.
fn gradient_stops(
    g: &Graph,
    plan: Option<&Plan>,
    detach_neighbours: bool,
) -> Result<HashSet<(String, usize)>, TrainError> {
    let mut stop = HashSet::new();
    if !detach_neighbours {
        return Ok(stop);
    }
    for p in plan.iter().flat_map(|p| &p.frozen).flat_map(|u| &u.params) {
        let IntegrationNames { mul_a, mul_b, .. } = IntegrationNames::of(&p.tensor);
        for node in [mul_a, mul_b] {
            if !g.nodes().any(|(_, n)| n.name() == node) {
                return Err(TrainError::Unsupported(format!(
                    "--detach-neighbours: the integration node '{node}' of the plan is not in the model"
                )));
            }
            stop.insert((node, 1));
        }
    }
    Ok(stop)
}

/// The trainable parameters, in initializer order, with their types and weight-decay flags: learnable
/// initializers the logits need (a and b of frozen units included), BatchNormalization statistics excluded.
fn trainable_params(
    g: &Graph,
    types: &HashMap<String, TensorType>,
    plan: Option<&Plan>,
    logits: &str,
    decay_all: bool,
) -> Result<Vec<(String, TensorType, bool)>, TrainError> {
    let rl_scalars: HashSet<String> = plan
        .iter()
        .flat_map(|p| &p.frozen)
        .flat_map(|u| [u.a.clone(), u.b.clone()])
        .collect();
    let needed = needed_values(g, &[logits.to_owned()])?;
    let consumers = g.consumers();
    let (bn_stats, _) = bn_tensors(g);
    let mut params: Vec<(String, TensorType, bool)> = Vec::new();
    for (name, t) in g.initializers() {
        let learnable = rl_scalars.contains(name) || crate::analysis::params::is_learnable(t);
        if !learnable || !needed.contains(name) || bn_stats.contains(name) {
            continue;
        }
        let ty = types[name].clone();
        let exempt =
            rl_scalars.contains(name) || ty.shape.len() <= 1 || is_norm_param(g, &consumers, name);
        params.push((name.clone(), ty, decay_all || !exempt));
    }
    if params.is_empty() {
        return Err(TrainError::Unsupported(
            "the model has no trainable parameter".into(),
        ));
    }
    Ok(params)
}

/// Makes the trainable parameters graph inputs: the inputs become the batch, `labels`, `lr`, each parameter, then
/// the model's other inputs; returns the parameters' initial values (the initializers taken out).
fn params_as_inputs(
    g: &mut Graph,
    batch_input: ValueInfoProto,
    n: usize,
    params: &[(String, TensorType, bool)],
) -> Vec<TensorProto> {
    let mut initial = Vec::new();
    let others: Vec<_> = g
        .proto
        .input
        .iter()
        .filter(|i| i.name() != batch_input.name())
        .cloned()
        .collect();
    let mut inputs = vec![
        batch_input,
        value_info(LABELS, DataType::Int64 as i32, &[n]),
        value_info(LR, DataType::Float as i32, &[]),
    ];
    for (p, ty, _) in params {
        initial.push(g.remove_initializer(p).expect("an initializer"));
        inputs.push(value_info(p, ty.dtype, &ty.shape));
    }
    let param_names: HashSet<&str> = params.iter().map(|(p, ..)| p.as_str()).collect();
    inputs.extend(
        others
            .into_iter()
            .filter(|i| !param_names.contains(i.name())),
    );
    g.proto.input = inputs;
    initial
}

/// Makes the optimizer state and the running statistics graph inputs at position `at` (after the parameters);
/// returns the running statistics' initial values (the initializers taken out).
fn state_as_inputs(
    g: &mut Graph,
    states: &[StateTensor],
    running: &[RunningStat],
    at: usize,
) -> Vec<TensorProto> {
    let running_initial = running
        .iter()
        .map(|r| g.remove_initializer(&r.name).expect("an initializer"))
        .collect();
    let state_inputs: Vec<_> = states
        .iter()
        .map(|s| value_info(&s.name, s.dtype, &s.shape))
        .chain(
            running
                .iter()
                .map(|r| value_info(&r.name, r.ty.dtype, &r.ty.shape)),
        )
        .collect();
    g.proto.input.splice(at..at, state_inputs);
    running_initial
}

/// The manifest of a step model: names of its fixed inputs and outputs, options, parameters and state.
fn manifest_of(
    input: &str,
    opts: &TrainOptions,
    params: &[(String, TensorType, bool)],
    states: &[StateTensor],
    running: &[RunningStat],
) -> TrainManifest {
    TrainManifest {
        input: input.to_owned(),
        labels: LABELS.into(),
        lr: LR.into(),
        loss: LOSS.into(),
        correct: CORRECT.into(),
        batch_size: opts.batch_size,
        label_smoothing: opts.label_smoothing,
        optimizer: opts.optimizer,
        detach_neighbours: opts.detach_neighbours,
        bn_running_var: opts.bn_running_var,
        params: params
            .iter()
            .map(|(p, ty, decay)| manifest_tensor(p, ty.dtype, &ty.shape, Some(*decay)))
            .collect(),
        state: state_manifest(states, running),
        optimizer_state_tensors: states.len(),
    }
}

/// The manifest's state entries: the optimizer's, then the running statistics.
fn state_manifest(states: &[StateTensor], running: &[RunningStat]) -> Vec<ManifestTensor> {
    states
        .iter()
        .map(|s| manifest_tensor(&s.name, s.dtype, &s.shape, None))
        .chain(
            running
                .iter()
                .map(|r| manifest_tensor(&r.name, r.ty.dtype, &r.ty.shape, None)),
        )
        .collect()
}

/// Compiles the training-step and eval models of a classifier (first output: logits `[N, classes]`).
pub fn compile_train(
    model: &ModelProto,
    opts: &TrainOptions,
) -> Result<TrainingModels, TrainError> {
    validate_options(opts)?;
    let Forward {
        mut g,
        input,
        input_dtype,
        input_shape,
        logits,
        logits_type,
        types,
    } = forward(model, opts.batch_size)?;
    let (n, k, dtype) = (opts.batch_size, logits_type.shape[1], logits_type.dtype);
    let plan = contract::read_plan(&g.model)?;
    let stop = gradient_stops(&g, plan.as_ref(), opts.detach_neighbours)?;
    let params = trainable_params(&g, &types, plan.as_ref(), &logits, opts.decay_all)?;

    // BatchNormalization in training mode; running statistics become state.
    let mut driver = Driver::new();
    driver.run(
        &mut g,
        &mut DropoutTrainingMode {
            flag: DROPOUT_TRAINING,
        },
    )?;
    let running = running_statistics(&g, &types, opts.bn_running_var)?;
    driver.run(&mut g, &mut BatchNormTrainingMode)?;
    let mut b = Builder::default();

    let mut taken = HashSet::new();
    let step_names = running
        .iter()
        .map(|r| next_name(&r.name))
        .chain([LABELS, LR, LOSS, CORRECT].map(String::from))
        .chain(params.iter().map(|(p, ..)| next_name(p)));
    for name in step_names {
        claim(&g, &mut taken, &name)?;
    }

    // Parameters become inputs.
    let batch_input = value_info(&input, input_dtype, &input_shape);
    let mut initial = params_as_inputs(&mut g, batch_input, n, &params);

    // Loss.
    softmax_cross_entropy(
        &mut b,
        &logits,
        LABELS,
        n,
        k,
        dtype,
        opts.label_smoothing,
        LOSS,
        CORRECT,
    );
    for t in std::mem::take(&mut b.initializers) {
        g.add_initializer(t);
    }
    g.add_nodes(std::mem::take(&mut b.nodes))?;
    g.proto.output = vec![
        value_info(LOSS, dtype, &[]),
        value_info(CORRECT, DataType::Int64 as i32, &[]),
    ];

    // Gradients.
    let shapes = input_shapes(&g);
    let forward = infer(&g, &shapes)?;
    let wrt: Vec<String> = params.iter().map(|(p, ..)| p.clone()).collect();
    let grads = differentiate_with(&mut g, LOSS, &wrt, &forward, &DiffOptions { stop })?;
    // Differentiated by their rule, the BatchNormalizations now become elementary ops that tract runs.
    driver.run(
        &mut g,
        &mut LowerBatchNormTraining {
            builder: &mut b,
            types: &types,
            running_var: opts.bn_running_var,
        },
    )?;

    // Optimizer.
    let updates: Vec<ParamUpdate> = params
        .iter()
        .map(|(p, ty, decay)| ParamUpdate {
            name: p.clone(),
            grad: grads[p].clone(),
            dtype: ty.dtype,
            shape: ty.shape.clone(),
            decay: *decay,
        })
        .collect();
    let states = emit_updates(&mut b, &opts.optimizer, LR, &updates);
    for s in &states {
        claim(&g, &mut taken, &s.name)?;
        claim(&g, &mut taken, &next_name(&s.name))?;
    }
    for t in std::mem::take(&mut b.initializers) {
        g.add_initializer(t);
    }
    let running_initial = state_as_inputs(&mut g, &states, &running, 3 + params.len());
    g.add_nodes(std::mem::take(&mut b.nodes))?;
    let next_values = params
        .iter()
        .map(|(p, ty, _)| value_info(&next_name(p), ty.dtype, &ty.shape))
        .chain(
            states
                .iter()
                .map(|s| value_info(&next_name(&s.name), s.dtype, &s.shape)),
        )
        .chain(
            running
                .iter()
                .map(|r| value_info(&next_name(&r.name), r.ty.dtype, &r.ty.shape)),
        );
    g.proto.output.extend(next_values);
    initial.extend(states.iter().map(|s| zeros(&s.name, s.dtype, &s.shape)));
    initial.extend(running_initial);
    g.validate()?;
    refresh_value_info(&mut g, &forward.types);
    // Shares what several emitters compute alike, such as BatchNormalization's statistics in the forward and
    // backward.
    let shapes = input_shapes(&g);
    driver.cleanup(&mut g, shapes)?;

    let manifest = manifest_of(&input, opts, &params, &states, &running);
    contract::write_manifest(&mut g.model, &manifest);
    let step = g.lower()?;
    let mut eval_inputs = wrt.clone();
    eval_inputs.extend(running.iter().map(|r| r.name.clone()));
    let eval = eval_model(model, opts, &eval_inputs)?;
    Ok(TrainingModels {
        step,
        eval,
        manifest,
        initial,
    })
}

/// The eval model: forward at the fixed batch size (BatchNormalization and Dropout in inference mode), plus
/// `loss` and `correct`; trainable parameters and running statistics stay initializers and are listed as graph
/// inputs too (their stored values are the defaults).
fn eval_model(
    model: &ModelProto,
    opts: &TrainOptions,
    params: &[String],
) -> Result<ModelProto, TrainError> {
    let Forward {
        mut g,
        logits,
        logits_type,
        types,
        ..
    } = forward(model, opts.batch_size)?;
    let mut driver = Driver::new();
    driver.run(&mut g, &mut InferenceMode)?;
    let (n, k, dtype) = (opts.batch_size, logits_type.shape[1], logits_type.dtype);
    let mut b = Builder::default();
    softmax_cross_entropy(
        &mut b,
        &logits,
        LABELS,
        n,
        k,
        dtype,
        opts.label_smoothing,
        LOSS,
        CORRECT,
    );
    g.proto
        .input
        .push(value_info(LABELS, DataType::Int64 as i32, &[n]));
    for p in params {
        if g.producer(p) == Some(Producer::Initializer)
            && !g.proto.input.iter().any(|i| i.name() == p)
        {
            let t = &types[p];
            g.proto.input.push(value_info(p, t.dtype, &t.shape));
        }
    }
    for t in b.initializers {
        g.add_initializer(t);
    }
    g.add_nodes(b.nodes)?;
    g.proto.output.push(value_info(LOSS, dtype, &[]));
    g.proto
        .output
        .push(value_info(CORRECT, DataType::Int64 as i32, &[]));
    g.validate()?;
    refresh_value_info(&mut g, &types);
    let shapes = input_shapes(&g);
    driver.cleanup(&mut g, shapes)?;
    Ok(g.lower()?)
}
