//! Static shape and dtype inference for fixed input shapes.
//!
//! Training compiles for a fixed batch, so every value gets a concrete shape. Shapes that the graph computes
//! (Reshape/Expand targets built from `Shape → Gather → Unsqueeze → Concat` chains, axes from `Constant`
//! nodes) are *evaluated*: small integer tensors whose value is known are kept in a value map alongside the
//! types, and autodiff reads its axes and slice bounds from that map. Each op's rule lives with its family
//! (one file per family, looked up by `rule_for`). An op without a rule, or a rule that cannot resolve its
//! shape, is an error naming the node.

mod attrs;
mod constants;
mod elementwise;
mod indexing;
mod matmul;
mod norm;
mod reduce;
mod shape_ops;
mod windows;

use std::collections::HashMap;

use crate::ir::{node_label, Graph, NodeIndex, Producer};
use crate::onnx::{tensor_proto::DataType, type_proto, NodeProto};

pub use attrs::{attr, attr_float, attr_int, attr_ints, attr_string, norm_axis};
pub use constants::int_values;
pub use elementwise::broadcast;
pub use indexing::{slice_axis, slice_params};
pub use reduce::{reduce_axes_of, reduced_shape};
pub use windows::{window, Window};

/// Element type (ONNX `DataType` code) and concrete shape of a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: i32,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: i32, shape: Vec<usize>) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error("graph input '{value}' has no shape: give it one")]
    MissingInput { value: String },
    #[error("node {node}: {message}")]
    Node { node: String, message: String },
    #[error("value '{value}' read by node {node} has no inferred type")]
    Unknown { node: String, value: String },
    #[error(transparent)]
    Graph(#[from] crate::ir::GraphError),
}

/// Types of every value, plus the values of the small integer tensors that could be evaluated.
#[derive(Debug, Clone, Default)]
pub struct Inference {
    pub types: HashMap<String, TensorType>,
    /// Flattened (row-major) values of int64/int32 tensors known statically: integer initializers, `Constant`
    /// outputs and what shape arithmetic computes from them.
    pub values: HashMap<String, Vec<i64>>,
}

/// Largest integer tensor whose value is tracked.
const MAX_TRACKED: usize = 4096;

const FLOAT: i32 = DataType::Float as i32;
const INT64: i32 = DataType::Int64 as i32;
const INT32: i32 = DataType::Int32 as i32;
const BOOL: i32 = DataType::Bool as i32;

/// Types of every value of `g`, given the shapes of its data inputs (dtypes come from the graph inputs).
pub fn infer_shapes(
    g: &Graph,
    inputs: &[(String, Vec<usize>)],
) -> Result<HashMap<String, TensorType>, ShapeError> {
    Ok(infer(g, inputs)?.types)
}

/// [`infer_shapes`], keeping the evaluated integer values too.
pub fn infer(g: &Graph, inputs: &[(String, Vec<usize>)]) -> Result<Inference, ShapeError> {
    let mut inf = Inference::default();
    for (name, t) in g.initializers() {
        let shape = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        inf.types
            .insert(name.clone(), TensorType::new(t.data_type(), shape));
        if let Some(v) = int_values(t) {
            inf.values.insert(name.clone(), v);
        }
    }
    for name in g.data_inputs() {
        let shape = inputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| ShapeError::MissingInput {
                value: name.clone(),
            })?;
        let dtype = g
            .value_info(&name)
            .and_then(|v| v.r#type.as_ref())
            .and_then(|t| match &t.value {
                Some(type_proto::Value::TensorType(tt)) => tt.elem_type,
                _ => None,
            })
            .unwrap_or(FLOAT);
        inf.types.insert(name, TensorType::new(dtype, shape));
    }
    for index in g.topological_order()? {
        infer_at(g, index, &mut inf)?;
    }
    Ok(inf)
}

/// Applies the rule of the node at `index` and records the types (and evaluated values) of its outputs.
fn infer_at(g: &Graph, index: NodeIndex, inf: &mut Inference) -> Result<(), ShapeError> {
    let node = g.node(index);
    let label = node_label(node, index);
    let mut ins = Vec::with_capacity(node.input.len());
    for i in &node.input {
        if i.is_empty() {
            ins.push(None);
            continue;
        }
        match inf.types.get(i) {
            Some(t) => ins.push(Some(t.clone())),
            None => {
                debug_assert!(g.producer(i) != Some(Producer::GraphInput));
                return Err(ShapeError::Unknown {
                    node: label,
                    value: i.clone(),
                });
            }
        }
    }
    let ctx = OpCtx {
        node,
        ins: &ins,
        values: &inf.values,
    };
    let (outs, vals) = infer_node(&ctx).map_err(|message| ShapeError::Node {
        node: label.clone(),
        message: format!("{}: {message}", node.op_type()),
    })?;
    for (slot, name) in node.output.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        let Some(t) = outs.get(slot) else {
            return Err(ShapeError::Node {
                node: label,
                message: format!("{}: no rule for output {slot}", node.op_type()),
            });
        };
        if let Some(Some(v)) = vals.get(slot) {
            if v.len() <= MAX_TRACKED && v.len() == t.numel() {
                inf.values.insert(name.clone(), v.clone());
            }
        }
        inf.types.insert(name.clone(), t.clone());
    }
    Ok(())
}

/// What a rule sees of its node: the node, its input types and the integer values known so far.
struct OpCtx<'a> {
    node: &'a NodeProto,
    ins: &'a [Option<TensorType>],
    values: &'a HashMap<String, Vec<i64>>,
}

impl OpCtx<'_> {
    fn input(&self, slot: usize) -> Result<&TensorType, String> {
        self.ins
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("input {slot} is missing"))
    }

    fn has(&self, slot: usize) -> bool {
        self.ins.get(slot).is_some_and(Option::is_some)
    }

    fn shape(&self, slot: usize) -> Result<&[usize], String> {
        Ok(&self.input(slot)?.shape)
    }

    fn value(&self, slot: usize) -> Option<&Vec<i64>> {
        self.node
            .input
            .get(slot)
            .filter(|s| !s.is_empty())
            .and_then(|n| self.values.get(n))
    }

    fn const_input(&self, slot: usize) -> Result<&Vec<i64>, String> {
        self.value(slot).ok_or_else(|| {
            format!(
                "input '{}' must be a constant integer tensor to infer shapes statically",
                self.node.input.get(slot).map(String::as_str).unwrap_or("")
            )
        })
    }

    /// Axes from the input `slot` (newer opsets) or the `axes` attribute (older).
    fn axes(&self, slot: usize) -> Result<Option<Vec<i64>>, String> {
        if self.has(slot) {
            Ok(Some(self.const_input(slot)?.clone()))
        } else {
            Ok(attr_ints(self.node, "axes"))
        }
    }
}

/// Output types, and the evaluated value of each output where one is known (missing entries: unknown).
type NodeResult = Result<(Vec<TensorType>, Vec<Option<Vec<i64>>>), String>;

/// A shape rule: the types (and integer values) of a node's outputs.
type Rule = fn(&OpCtx) -> NodeResult;

/// One output of type `t`, value unknown.
fn same(t: TensorType) -> NodeResult {
    Ok((vec![t], vec![]))
}

fn infer_node(c: &OpCtx) -> NodeResult {
    let node = c.node;
    if !node.domain().is_empty() && node.domain() != "ai.onnx" {
        return Err(format!("domain '{}' is not supported", node.domain()));
    }
    let rule = rule_for(node.op_type()).ok_or("no shape rule for this op")?;
    rule(c)
}

/// The shape rule of a default-domain op, if it has one.
fn rule_for(op: &str) -> Option<Rule> {
    Some(match op {
        "Identity" | "Neg" | "Abs" => elementwise::integer_unary,
        "Sqrt" | "Exp" | "Log" | "Relu" | "Sigmoid" | "Tanh" | "Erf" | "Clip" | "Softmax"
        | "LogSoftmax" | "Reciprocal" | "Floor" | "Ceil" | "LeakyRelu" | "Elu" | "HardSigmoid"
        | "HardSwish" | "Softplus" | "Gelu" | "Sin" | "Cos" | "Sign" => elementwise::unary,
        "Cast" => elementwise::cast,
        "CastLike" => elementwise::cast_like,
        "Not" => elementwise::not,
        "Dropout" => elementwise::dropout,
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod"
        | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
        | "Xor" | "Where" => elementwise::broadcasting,
        "Constant" => constants::constant,
        "ConstantOfShape" => constants::constant_of_shape,
        "Range" => constants::range,
        "Shape" => constants::shape,
        "Size" => constants::size,
        "MatMul" => matmul::matmul,
        "Gemm" => matmul::gemm,
        "Conv" => windows::conv,
        "ConvTranspose" => windows::conv_transpose,
        "MaxPool" | "AveragePool" | "LpPool" => windows::pool,
        "GlobalAveragePool" | "GlobalMaxPool" => windows::global_pool,
        "BatchNormalization" => norm::batch_normalization,
        "InstanceNormalization" => norm::instance_normalization,
        "LayerNormalization" => norm::layer_normalization,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSumExp" => reduce::reduce,
        "ArgMax" | "ArgMin" => reduce::arg_reduce,
        "Flatten" => shape_ops::flatten,
        "Reshape" => shape_ops::reshape,
        "Transpose" => shape_ops::transpose,
        "Concat" => shape_ops::concat,
        "Squeeze" => shape_ops::squeeze,
        "Unsqueeze" => shape_ops::unsqueeze,
        "Split" => shape_ops::split,
        "Expand" => shape_ops::expand,
        "Tile" => shape_ops::tile,
        "Pad" => shape_ops::pad,
        "Slice" => indexing::slice,
        "Gather" => indexing::gather,
        "ScatterElements" | "ScatterND" => indexing::scatter,
        "OneHot" => indexing::one_hot,
        _ => return None,
    })
}
