//! The embedded engine: tract-onnx, optimized and planned once, then run as often as needed.

use prost::Message;
use rl_passes::onnx::{type_proto::Value as Type, ModelProto};
use tract_onnx::prelude::*;

use super::{Engine, EngineError, HostTensor};

pub struct TractEngine {
    plan: std::sync::Arc<TypedSimplePlan>,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

/// Gives every node a numbered name (`n{k}/{name}`). tract 0.23 names a node it adds while translating a Conv
/// with a non-constant bias `{conv}.bias`, which clashes with a graph input of that name (a trained
/// `conv_proj.bias` beside node `conv_proj`, in a training-step model); node names carry no meaning in ONNX.
pub fn number_node_names(model: &mut ModelProto) {
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

impl TractEngine {
    /// Prepares `model` for inputs of the given shapes (in graph-input order, data inputs only).
    pub fn new(
        model: &ModelProto,
        input_shapes: &[(String, Vec<usize>)],
    ) -> Result<TractEngine, EngineError> {
        use_all_cores();
        let prep = |e: TractError| EngineError::Prepare {
            engine: "tract",
            message: format!("{e:#}"),
        };
        // Symbolic dims in intermediate shape annotations (dynamo exports) clash with the concrete input facts
        // tract is given; it infers every shape itself, so they are dropped.
        let mut model = model.clone();
        if let Some(g) = &mut model.graph {
            g.value_info.clear();
            for o in &mut g.output {
                if let Some(Type::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    t.shape = None;
                }
            }
        }
        let bytes = model.encode_to_vec();
        let mut m = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(prep)?;
        let graph_inputs: Vec<String> = m
            .input_outlets()
            .map_err(prep)?
            .iter()
            .map(|o| m.node(o.node).name.clone())
            .collect();
        let mut input_names = Vec::new();
        for (k, name) in graph_inputs.iter().enumerate() {
            let Some((_, shape)) = input_shapes.iter().find(|(n, _)| n == name) else {
                return Err(EngineError::Prepare {
                    engine: "tract",
                    message: format!("no shape given for input '{name}'"),
                });
            };
            m = m
                .with_input_fact(k, f32::fact(shape).into())
                .map_err(prep)?;
            input_names.push(name.clone());
        }
        // tract names outlets after their nodes; the graph's own output names are what callers know.
        let output_names: Vec<String> = model
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name().to_owned()).collect())
            .unwrap_or_default();
        let plan = m
            .into_optimized()
            .map_err(prep)?
            .into_runnable()
            .map_err(prep)?;
        Ok(TractEngine {
            plan,
            input_names,
            output_names,
        })
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn provider(&self) -> String {
        "tract (CPU)".to_owned()
    }

    fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, EngineError> {
        let fail = |e: TractError| EngineError::Run {
            engine: "tract",
            message: format!("{e:#}"),
        };
        let mut values = TVec::new();
        for name in &self.input_names {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(EngineError::Run {
                    engine: "tract",
                    message: format!("input '{name}' not given"),
                });
            };
            let tensor = Tensor::from_shape(&t.shape, &t.data).map_err(fail)?;
            values.push(tensor.into_tvalue());
        }
        let outputs = self.plan.run(values).map_err(fail)?;
        let mut result = Vec::new();
        for (name, value) in self.output_names.iter().zip(outputs) {
            let view = value.to_plain_array_view::<f32>().map_err(fail)?;
            result.push((
                name.clone(),
                HostTensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                },
            ));
        }
        Ok(result)
    }
}
