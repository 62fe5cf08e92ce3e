//! A small append-only ONNX graph builder: nodes, parameter initializers and constants with unique names.

use std::collections::HashSet;

use bytes::Bytes;
use rl_passes::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::rng::Rng;

/// ONNX IR version written by the zoo.
pub(crate) const ZOO_IR_VERSION: i64 = 8;
/// Default-domain opset written by the zoo.
pub(crate) const ZOO_OPSET: i64 = 17;
/// `producer_name` of every zoo model.
pub(crate) const PRODUCER_NAME: &str = "rl-rewrite-zoo";

/// How a parameter tensor is initialised.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// Kaiming (He) normal, `fan_out` mode, ReLU gain: std = sqrt(2 / fan_out).
    KaimingNormalFanOut { fan_out: usize },
    /// Uniform in ±bound (PyTorch's `nn.Linear` default uses bound = 1/sqrt(fan_in)).
    Uniform { bound: f64 },
    /// Normal with the given std, redrawn outside ±2 std.
    TruncNormal { std: f64 },
    /// `1 + U(-0.1, 0.1)`: a perturbed "ones" (norm scales, BN running variance).
    NearOne,
    /// `U(-0.1, 0.1)`: a perturbed "zeros" (norm shifts, BN running mean).
    NearZero,
}

/// One dimension of a graph input/output shape.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dim<'a> {
    Sym(&'a str),
    Val(usize),
}

pub(crate) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        i: Some(i),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

pub(crate) fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        f: Some(f),
        r#type: Some(AttributeType::Float as i32),
        ..Default::default()
    }
}

pub(crate) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        ints: ints.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        t: Some(t),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    }
}

fn f32_bytes(values: &[f32]) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Bytes::from(out)
}

fn i64_bytes(values: &[i64]) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Bytes::from(out)
}

fn value_info(name: &str, dims: &[Dim<'_>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match *d {
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_owned()),
                Dim::Val(v) => tensor_shape_proto::dimension::Value::DimValue(v as i64),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// Append-only graph builder. Value names (graph inputs, initializers, node outputs) share one namespace and
/// node names another; both are checked to be unique as they are added (a clash panics: names come from
/// the fixed module paths of the architectures, so it would be a builder bug, and the tests build them all).
pub(crate) struct GraphBuilder {
    graph: GraphProto,
    values: HashSet<String>,
    node_names: HashSet<String>,
    rng: Rng,
    weights: bool,
}

impl GraphBuilder {
    /// A builder drawing weights from `seed`; with `weights == false` initializers get their names and
    /// shapes but no data (see `build_without_weights`).
    pub(crate) fn new(seed: u64, weights: bool) -> Self {
        GraphBuilder {
            weights,
            graph: GraphProto::default(),
            values: HashSet::new(),
            node_names: HashSet::new(),
            rng: Rng::new(seed),
        }
    }

    fn unique(set: &mut HashSet<String>, name: &str) -> String {
        // Names derive from the fixed module paths of the architectures, so a clash is a bug in a builder;
        // every architecture is built by the tests.
        assert!(
            set.insert(name.to_owned()),
            "duplicate name `{name}` in zoo graph"
        );
        name.to_owned()
    }

    fn unique_value(&mut self, base: &str) -> String {
        Self::unique(&mut self.values, base)
    }

    /// Declares a float32 graph input.
    pub(crate) fn input(&mut self, name: &str, dims: &[Dim<'_>]) -> String {
        let name = self.unique_value(name);
        self.graph.input.push(value_info(&name, dims));
        name
    }

    /// Declares an existing value as a float32 graph output.
    pub(crate) fn output(&mut self, name: &str, dims: &[Dim<'_>]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// Adds a float32 initializer of shape `dims`, filled according to `init`; returns its name.
    pub(crate) fn param(&mut self, name: &str, dims: &[usize], init: Init) -> String {
        let raw_data = self.weights.then(|| self.fill(dims, init));
        let name = self.unique_value(name);
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.clone()),
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Draws `dims.product()` float32 values and returns them as little-endian bytes.
    fn fill(&mut self, dims: &[usize], init: Init) -> Bytes {
        let n: usize = dims.iter().product();
        // Written straight into little-endian bytes with plain loops: this runs for hundreds of millions
        // of elements and must stay tolerable in unoptimised (test) builds.
        let mut raw = vec![0u8; 4 * n];
        let rng = &mut self.rng;
        let mut i = 0;
        macro_rules! fill {
            ($sample:expr) => {
                while i < raw.len() {
                    let v: f32 = $sample as f32;
                    raw[i..i + 4].copy_from_slice(&v.to_le_bytes());
                    i += 4;
                }
            };
        }
        match init {
            Init::KaimingNormalFanOut { fan_out } => {
                let std = (2.0 / fan_out as f64).sqrt();
                while i + 8 <= raw.len() {
                    let (z0, z1) = rng.normal_pair();
                    raw[i..i + 4].copy_from_slice(&((z0 * std) as f32).to_le_bytes());
                    raw[i + 4..i + 8].copy_from_slice(&((z1 * std) as f32).to_le_bytes());
                    i += 8;
                }
                fill!(rng.normal_pair().0 * std)
            }
            Init::Uniform { bound } => fill!(rng.uniform(bound)),
            Init::TruncNormal { std } => fill!(rng.trunc_normal(std)),
            Init::NearOne => fill!(1.0 + rng.uniform(0.1)),
            Init::NearZero => fill!(rng.uniform(0.1)),
        }
        Bytes::from(raw)
    }

    /// Adds a node with one output; node and output value are both named after `name`.
    pub(crate) fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.node_with_outputs(op, name, inputs, &[name], attrs)
            .pop()
            .expect("one output")
    }

    /// Adds a node whose output values get explicit names.
    pub(crate) fn node_with_outputs(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let node_name = Self::unique(&mut self.node_names, name);
        let outputs: Vec<String> = outputs.iter().map(|o| self.unique_value(o)).collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.clone(),
            name: Some(node_name),
            op_type: Some(op.to_owned()),
            attribute: attrs,
            ..Default::default()
        });
        outputs
    }

    /// A `Constant` node holding an int64 tensor of shape `dims` (`&[]` for a scalar).
    pub(crate) fn const_i64(&mut self, name: &str, values: &[i64], dims: &[usize]) -> String {
        let t = TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(i64_bytes(values)),
            ..Default::default()
        };
        self.node("Constant", name, &[], vec![attr_tensor("value", t)])
    }

    /// A `Constant` node holding a float32 scalar.
    pub(crate) fn const_f32(&mut self, name: &str, value: f32) -> String {
        let t = TensorProto {
            dims: vec![],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(f32_bytes(&[value])),
            ..Default::default()
        };
        self.node("Constant", name, &[], vec![attr_tensor("value", t)])
    }

    /// Wraps the graph into a model (IR 8, opset 17).
    pub(crate) fn finish(mut self, graph_name: &str, doc: String) -> ModelProto {
        self.graph.name = Some(graph_name.to_owned());
        ModelProto {
            ir_version: Some(ZOO_IR_VERSION),
            producer_name: Some(PRODUCER_NAME.to_owned()),
            producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            doc_string: Some(doc),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(ZOO_OPSET),
            }],
            ..Default::default()
        }
    }

    // ---- layers shared by the families -------------------------------------------------------------

    /// `Conv` without bias, Kaiming-normal (fan_out, ReLU) weight `{name}.weight` [out, in, k, k].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        &mut self,
        name: &str,
        x: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let w = self.param(
            &format!("{name}.weight"),
            &[out_ch, in_ch, kernel, kernel],
            Init::KaimingNormalFanOut {
                fan_out: out_ch * kernel * kernel,
            },
        );
        let (k, s, p) = (kernel as i64, stride as i64, pad as i64);
        self.node(
            "Conv",
            name,
            &[x, &w],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        )
    }

    /// Inference-mode `BatchNormalization` (epsilon 1e-5) with `{name}.weight/bias/running_mean/running_var`.
    pub(crate) fn batch_norm(&mut self, name: &str, x: &str, ch: usize) -> String {
        let scale = self.param(&format!("{name}.weight"), &[ch], Init::NearOne);
        let bias = self.param(&format!("{name}.bias"), &[ch], Init::NearZero);
        let mean = self.param(&format!("{name}.running_mean"), &[ch], Init::NearZero);
        let var = self.param(&format!("{name}.running_var"), &[ch], Init::NearOne);
        self.node(
            "BatchNormalization",
            name,
            &[x, &scale, &bias, &mean, &var],
            vec![attr_float("epsilon", 1e-5), attr_float("momentum", 0.9)],
        )
    }

    pub(crate) fn relu(&mut self, name: &str, x: &str) -> String {
        self.node("Relu", name, &[x], vec![])
    }

    /// `Gemm` (transB = 1) with PyTorch-default uniform ±1/sqrt(fan_in) weight [out, in] and bias [out].
    pub(crate) fn linear_gemm(
        &mut self,
        name: &str,
        out_value: &str,
        x: &str,
        fan_in: usize,
        fan_out: usize,
        init: Option<Init>,
    ) -> String {
        let init = init.unwrap_or(Init::Uniform {
            bound: 1.0 / (fan_in as f64).sqrt(),
        });
        let w = self.param(&format!("{name}.weight"), &[fan_out, fan_in], init);
        let b = self.param(&format!("{name}.bias"), &[fan_out], init);
        self.node_with_outputs(
            "Gemm",
            name,
            &[x, &w, &b],
            &[out_value],
            vec![attr_int("transB", 1)],
        )
        .pop()
        .expect("one output")
    }
}
