//! The embedded engine: tract-onnx. [`TractModel::prepare`] is the one way a model reaches tract (the node
//! renaming and the shape annotations it cannot take are handled there), whether it is then run on host tensors
//! ([`TractEngine`]) or driven value by value by the training runner.

use prost::Message;
use rl_passes::onnx::{type_proto::Value as Type, ModelProto};
use tract_onnx::prelude::*;

use super::{ElementType, Engine, EngineError, HostTensor, InputFact, TensorData};

pub const ENGINE: &str = "tract";

fn prepare_error(message: String) -> EngineError {
    EngineError::Prepare {
        engine: ENGINE,
        message,
    }
}

fn run_error(message: String) -> EngineError {
    EngineError::Run {
        engine: ENGINE,
        message,
    }
}

/// Gives every node a numbered name (`n{k}/{name}`). tract 0.23 names nodes it adds while translating after the
/// node they come from (`{conv}.bias` for a Conv with a non-constant bias, `{node}.{k}` for casts it inserts),
/// which can clash with a value or node of that name already in the model (a trained `conv_proj.bias` beside
/// node `conv_proj`, `train/Equal` beside `train/Equal.5` in a training-step model); node names carry no
/// meaning in ONNX.
fn number_node_names(model: &mut ModelProto) {
    if let Some(g) = &mut model.graph {
        for (k, n) in g.node.iter_mut().enumerate() {
            n.name = Some(format!("n{k}/{}", n.name()));
        }
    }
}

/// Runs tract's matrix products on all cores, once per process.
fn use_all_cores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > 1 {
            tract_linalg::multithread::set_default_executor(
                tract_linalg::multithread::Executor::multithread(threads),
            );
        }
    });
}

fn inference_fact(fact: &InputFact) -> InferenceFact {
    match fact.element_type {
        ElementType::F32 => f32::fact(&fact.shape).into(),
        ElementType::I64 => i64::fact(&fact.shape).into(),
    }
}

/// A model optimized and planned by tract for fixed input facts; inputs and outputs by name, in the order the
/// plan takes and gives them.
pub struct TractModel {
    plan: Arc<TypedSimplePlan>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl TractModel {
    /// Prepares `model` for the given inputs. Every input tract sees (graph inputs without a stored default)
    /// needs a fact. Random ops (training-mode Dropout) draw afresh on every run. LogSoftmax runs in its shifted
    /// form (tract_log_softmax).
    pub fn prepare(model: &ModelProto, facts: &[InputFact]) -> Result<TractModel, EngineError> {
        Self::prepare_with_seed(model, facts, None)
    }

    /// As [`TractModel::prepare`], with random ops drawing the same numbers on every run when `seed` is given.
    pub fn prepare_with_seed(
        model: &ModelProto,
        facts: &[InputFact],
        seed: Option<u64>,
    ) -> Result<TractModel, EngineError> {
        use_all_cores();
        let prep = |e: TractError| prepare_error(format!("{e:#}"));
        let mut model = model.clone();
        number_node_names(&mut model);
        super::tract_dropout::lower_training_dropout(&mut model, seed);
        super::tract_log_softmax::lower_log_softmax(&mut model);
        // Symbolic dims in intermediate shape annotations (dynamo exports) clash with the concrete input facts
        // tract is given; it infers every shape itself, so they are dropped.
        if let Some(g) = &mut model.graph {
            g.value_info.clear();
            for o in &mut g.output {
                if let Some(Type::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    t.shape = None;
                }
            }
        }
        // tract names outlets after their nodes; the graph's own output names are what callers know.
        let outputs: Vec<String> = model
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name().to_owned()).collect())
            .unwrap_or_default();
        let bytes = model.encode_to_vec();
        let mut m = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(prep)?;
        let inputs: Vec<String> = m
            .input_outlets()
            .map_err(prep)?
            .iter()
            .map(|o| m.node(o.node).name.clone())
            .collect();
        for (k, name) in inputs.iter().enumerate() {
            let fact = facts.iter().find(|f| &f.name == name).ok_or_else(|| {
                prepare_error(format!("no type and shape given for input '{name}'"))
            })?;
            m = m.with_input_fact(k, inference_fact(fact)).map_err(prep)?;
        }
        let plan = m
            .into_optimized()
            .map_err(prep)?
            .into_runnable()
            .map_err(prep)?;
        Ok(TractModel {
            plan,
            inputs,
            outputs,
        })
    }

    /// The inputs the plan takes, in order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The graph's output names, in the order [`TractModel::run`] returns them.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, EngineError> {
        self.plan
            .run(inputs)
            .map_err(|e| run_error(format!("{e:#}")))
    }
}

/// A host tensor as a tract value.
pub fn to_tract(t: &HostTensor) -> TractResult<TValue> {
    let tensor = match &t.data {
        TensorData::F32(v) => Tensor::from_shape(&t.shape, v)?,
        TensorData::I64(v) => Tensor::from_shape(&t.shape, v)?,
    };
    Ok(tensor.into_tvalue())
}

/// A tract value as a host tensor: floats as float32, integers (and tract's symbolic dims, which a shape
/// computation may leave as an output's type) as int64.
pub fn to_host(v: &TValue) -> TractResult<HostTensor> {
    let shape = v.shape().to_vec();
    if v.datum_type().is_float() {
        let t = v.cast_to::<f32>()?;
        let values = t.to_plain_array_view::<f32>()?.iter().copied().collect();
        return Ok(HostTensor::f32(shape, values));
    }
    let t = v.cast_to::<i64>()?;
    let values = t.to_plain_array_view::<i64>()?.iter().copied().collect();
    Ok(HostTensor::i64(shape, values))
}

/// A model prepared by tract, run on host tensors.
pub struct TractEngine {
    model: TractModel,
}

impl TractEngine {
    /// Prepares `model` for data inputs of the given types and shapes. Random ops draw the same numbers on every
    /// run, in every engine prepared here, so that runs repeat and two models can be compared.
    pub fn new(model: &ModelProto, inputs: &[InputFact]) -> Result<TractEngine, EngineError> {
        Ok(TractEngine {
            model: TractModel::prepare_with_seed(model, inputs, Some(0))?,
        })
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn provider(&self) -> String {
        "tract (CPU)".to_owned()
    }

    fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, EngineError> {
        let fail = |e: TractError| run_error(format!("{e:#}"));
        let mut values = TVec::new();
        for name in self.model.inputs() {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(run_error(format!("input '{name}' not given")));
            };
            t.check_size(name).map_err(run_error)?;
            values.push(to_tract(t).map_err(fail)?);
        }
        let outputs = self.model.run(values)?;
        self.model
            .outputs()
            .iter()
            .zip(outputs)
            .map(|(name, value)| Ok((name.clone(), to_host(&value).map_err(fail)?)))
            .collect()
    }
}
