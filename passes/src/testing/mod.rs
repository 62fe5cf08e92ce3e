//! Builders of small ONNX models for tests, and the float64 equivalents tests substitute for ops that tract
//! cannot run in double precision.
//!
//! Compiled for this crate's unit tests and, through the `testing` feature, for the other crates' tests and
//! this crate's integration tests (see `Cargo.toml`). The builders fill in exactly the proto fields a test
//! names, so models built here encode to the same bytes as the equivalent hand-written literals.

mod tract_f64;

pub use tract_f64::tract_f64_equivalents;

use bytes::Bytes;

use crate::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
pub use crate::tensor::f32_tensor;

/// ONNX IR version of the models built here unless a test asks for another.
pub const DEFAULT_IR_VERSION: i64 = 8;
/// Default-domain opset of the models built here unless a test asks for another.
pub const DEFAULT_OPSET: i64 = 17;

/// One dimension of a value's shape: a number or a symbolic name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Value(i64),
    Param(String),
}

/// A symbolic dimension (`N` for a batch of any size).
pub fn sym(name: &str) -> Dim {
    Dim::Param(name.to_owned())
}

/// The dims of a scalar, for the shape arguments below.
pub const SCALAR: [Dim; 0] = [];

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::Value(v)
    }
}

impl From<i32> for Dim {
    fn from(v: i32) -> Dim {
        Dim::Value(v.into())
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::Value(v as i64)
    }
}

impl From<&usize> for Dim {
    fn from(v: &usize) -> Dim {
        Dim::Value(*v as i64)
    }
}

impl From<&i64> for Dim {
    fn from(v: &i64) -> Dim {
        Dim::Value(*v)
    }
}

/// A tensor value with element type `dtype` and the given shape.
pub fn tensor_value<D: Into<Dim>>(
    name: &str,
    dtype: DataType,
    dims: impl IntoIterator<Item = D>,
) -> ValueInfoProto {
    let dim = dims
        .into_iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d.into() {
                Dim::Value(v) => tensor_shape_proto::dimension::Value::DimValue(v),
                Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// A value with a name and no type (which the loader must cope with).
pub fn untyped_value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn raw_tensor(name: &str, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A float64 tensor stored as raw little-endian data.
pub fn f64_tensor(name: &str, dims: &[i64], values: &[f64]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, DataType::Double, dims, raw)
}

/// An int64 tensor stored as raw little-endian data.
pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, DataType::Int64, dims, raw)
}

/// A bool tensor (one byte per element).
pub fn bool_tensor(name: &str, dims: &[i64], values: &[bool]) -> TensorProto {
    let raw = values.iter().map(|&b| b as u8).collect();
    raw_tensor(name, DataType::Bool, dims, raw)
}

/// A float tensor of `dtype` (float32 or float64) from float64 values, for tests run in either precision.
pub fn float_tensor(name: &str, dtype: DataType, dims: &[i64], values: &[f64]) -> TensorProto {
    match dtype {
        DataType::Double => f64_tensor(name, dims, values),
        _ => {
            let raw = values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            raw_tensor(name, dtype, dims, raw)
        }
    }
}

/// A xorshift generator: seeded, reproducible test data without a dependency.
#[derive(Clone, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// Uniform in [0, 1).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// `usize` shape → tensor dims.
pub fn i64_dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Typed attributes, for nodes built without [`NodeExt`] (or attribute lists handed around).
pub mod attr {
    use super::*;

    fn typed(
        name: &str,
        ty: AttributeType,
        fill: impl FnOnce(&mut AttributeProto),
    ) -> AttributeProto {
        let mut a = AttributeProto {
            name: Some(name.into()),
            r#type: Some(ty as i32),
            ..Default::default()
        };
        fill(&mut a);
        a
    }

    pub fn int(name: &str, v: i64) -> AttributeProto {
        typed(name, AttributeType::Int, |a| a.i = Some(v))
    }

    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        typed(name, AttributeType::Ints, |a| a.ints = v.to_vec())
    }

    pub fn float(name: &str, v: f32) -> AttributeProto {
        typed(name, AttributeType::Float, |a| a.f = Some(v))
    }

    pub fn string(name: &str, v: &str) -> AttributeProto {
        typed(name, AttributeType::String, |a| {
            a.s = Some(v.as_bytes().to_vec())
        })
    }

    pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
        typed(name, AttributeType::Tensor, |a| a.t = Some(t))
    }

    pub fn graph(name: &str, g: GraphProto) -> AttributeProto {
        typed(name, AttributeType::Graph, |a| a.g = Some(Box::new(g)))
    }
}

/// A node of the default domain, without name or attributes (add them with [`NodeExt`]).
pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Fluent additions to a [`NodeProto`]: `node("Conv", &["x", "w"], &["y"]).named("conv").ints("pads", &p)`.
pub trait NodeExt: Sized {
    fn named(self, name: impl Into<String>) -> Self;
    fn domain(self, domain: &str) -> Self;
    fn attr(self, attribute: AttributeProto) -> Self;
    fn attrs(self, attributes: impl IntoIterator<Item = AttributeProto>) -> Self;

    fn int(self, name: &str, v: i64) -> Self {
        self.attr(attr::int(name, v))
    }
    fn ints(self, name: &str, v: &[i64]) -> Self {
        self.attr(attr::ints(name, v))
    }
    fn float(self, name: &str, v: f32) -> Self {
        self.attr(attr::float(name, v))
    }
    fn string(self, name: &str, v: &str) -> Self {
        self.attr(attr::string(name, v))
    }
    fn tensor(self, name: &str, t: TensorProto) -> Self {
        self.attr(attr::tensor(name, t))
    }
    fn graph(self, name: &str, g: GraphProto) -> Self {
        self.attr(attr::graph(name, g))
    }
}

impl NodeExt for NodeProto {
    fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    fn domain(mut self, domain: &str) -> Self {
        self.domain = Some(domain.into());
        self
    }
    fn attr(mut self, attribute: AttributeProto) -> Self {
        self.attribute.push(attribute);
        self
    }
    fn attrs(mut self, attributes: impl IntoIterator<Item = AttributeProto>) -> Self {
        self.attribute.extend(attributes);
        self
    }
}

/// A model under construction: IR version 8 and default-domain opset 17 unless set otherwise, one graph.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    model: ModelProto,
    graph: GraphProto,
}

impl ModelBuilder {
    /// An empty graph called `graph_name`.
    pub fn new(graph_name: &str) -> ModelBuilder {
        ModelBuilder {
            model: ModelProto {
                ir_version: Some(DEFAULT_IR_VERSION),
                opset_import: vec![OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(DEFAULT_OPSET),
                }],
                ..Default::default()
            },
            graph: GraphProto {
                name: Some(graph_name.into()),
                ..Default::default()
            },
        }
    }

    /// An empty graph without a name.
    pub fn unnamed() -> ModelBuilder {
        let mut builder = ModelBuilder::new("");
        builder.graph.name = None;
        builder
    }

    pub fn ir_version(mut self, version: i64) -> Self {
        self.model.ir_version = Some(version);
        self
    }

    /// Imports `domain` at `version` (`""` is the default domain), replacing an earlier import of it.
    pub fn opset(mut self, domain: &str, version: i64) -> Self {
        let import = OperatorSetIdProto {
            domain: Some(domain.into()),
            version: Some(version),
        };
        match self
            .model
            .opset_import
            .iter_mut()
            .find(|o| o.domain() == domain)
        {
            Some(existing) => *existing = import,
            None => self.model.opset_import.push(import),
        }
        self
    }

    pub fn producer(mut self, name: &str) -> Self {
        self.model.producer_name = Some(name.into());
        self
    }

    /// A tensor graph input of `dtype` (dims: numbers, or [`sym`] for symbolic ones; [`SCALAR`] for none).
    pub fn input<D: Into<Dim>>(
        self,
        name: &str,
        dtype: DataType,
        dims: impl IntoIterator<Item = D>,
    ) -> Self {
        self.input_value(tensor_value(name, dtype, dims))
    }

    /// A tensor graph output, like [`ModelBuilder::input`].
    pub fn output<D: Into<Dim>>(
        self,
        name: &str,
        dtype: DataType,
        dims: impl IntoIterator<Item = D>,
    ) -> Self {
        self.output_value(tensor_value(name, dtype, dims))
    }

    pub fn input_value(mut self, value: ValueInfoProto) -> Self {
        self.graph.input.push(value);
        self
    }

    pub fn output_value(mut self, value: ValueInfoProto) -> Self {
        self.graph.output.push(value);
        self
    }

    pub fn initializer(mut self, tensor: TensorProto) -> Self {
        self.graph.initializer.push(tensor);
        self
    }

    pub fn initializers(mut self, tensors: impl IntoIterator<Item = TensorProto>) -> Self {
        self.graph.initializer.extend(tensors);
        self
    }

    /// A float32 initializer (raw data).
    pub fn f32_initializer(self, name: &str, dims: &[i64], values: &[f32]) -> Self {
        self.initializer(f32_tensor(name, dims, values))
    }

    /// An int64 initializer (raw data).
    pub fn i64_initializer(self, name: &str, dims: &[i64], values: &[i64]) -> Self {
        self.initializer(i64_tensor(name, dims, values))
    }

    pub fn node(mut self, node: NodeProto) -> Self {
        self.graph.node.push(node);
        self
    }

    pub fn nodes(mut self, nodes: impl IntoIterator<Item = NodeProto>) -> Self {
        self.graph.node.extend(nodes);
        self
    }

    pub fn build(self) -> ModelProto {
        ModelProto {
            graph: Some(self.graph),
            ..self.model
        }
    }
}
