//! Static shape and dtype inference for fixed input shapes.
//!
//! Training compiles for a fixed batch, so every value gets a concrete shape. Shapes that the graph computes
//! (Reshape/Expand targets built from `Shape → Gather → Unsqueeze → Concat` chains, axes from `Constant`
//! nodes) are *evaluated*: small integer tensors whose value is known are kept in a value map alongside the
//! types. An op without a rule, or a rule that cannot resolve its shape, is an error naming the node.

use std::collections::HashMap;

use crate::ir::{node_label, Graph, Producer};
use crate::onnx::{tensor_proto::DataType, type_proto, AttributeProto, NodeProto, TensorProto};

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
    /// Flattened (row-major) values of int64/int32 tensors known statically.
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
    }
    Ok(inf)
}

/// Values of an int64/int32 initializer (raw or typed storage); `None` for other types or large tensors.
pub fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    let n: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
    if n > MAX_TRACKED {
        return None;
    }
    let v: Vec<i64> = match (t.data_type(), &t.raw_data) {
        (INT64, Some(raw)) => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        (INT64, None) => t.int64_data.clone(),
        (INT32, Some(raw)) => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
            .collect(),
        (INT32, None) => t.int32_data.iter().map(|&x| x as i64).collect(),
        _ => return None,
    };
    (v.len() == n).then_some(v)
}

/// A named attribute of a node.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

pub fn attr_float(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).and_then(|a| a.f)
}

pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub fn attr_string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy broadcasting of shapes.
pub fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// Geometry of one sliced axis: (start, step, length) after clamping, per the ONNX Slice semantics.
pub fn slice_axis(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(i64, i64, usize), String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, d), fix(end).clamp(0, d))
    } else {
        (fix(start).clamp(0, d - 1), fix(end).clamp(-1, d - 1))
    };
    let len = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok((s, step, len as usize))
}

/// Per-axis slice parameters of a Slice node: (axis, start, step, length) for each sliced axis.
pub fn slice_params(
    node: &NodeProto,
    shape: &[usize],
    values: &HashMap<String, Vec<i64>>,
) -> Result<Vec<(usize, i64, i64, usize)>, String> {
    let get = |slot: usize| -> Result<Option<Vec<i64>>, String> {
        match node.input.get(slot).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(n) => values
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("input '{n}' is not a known constant")),
        }
    };
    let (starts, ends, axes, steps) = if node.input.len() == 1 {
        (
            attr_ints(node, "starts").unwrap_or_default(),
            attr_ints(node, "ends").unwrap_or_default(),
            attr_ints(node, "axes"),
            None,
        )
    } else {
        (
            get(1)?.unwrap_or_default(),
            get(2)?.unwrap_or_default(),
            get(3)?,
            get(4)?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut out = Vec::new();
    for k in 0..starts.len() {
        let a = norm_axis(axes[k], shape.len())?;
        let (s, st, len) = slice_axis(shape[a], starts[k], ends[k], steps[k])?;
        out.push((a, s, st, len));
    }
    Ok(out)
}

/// Spatial geometry of a convolution or pooling window: padding (begin, end) and output size per axis.
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub out: Vec<usize>,
}

/// Resolves a Conv/MaxPool/AveragePool window over `spatial` input dims (auto_pad included).
pub fn window(
    node: &NodeProto,
    spatial: &[usize],
    kernel: &[usize],
    ceil_mode: bool,
) -> Result<Window, String> {
    let r = spatial.len();
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; r]);
    let dilations = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; r]);
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * r]);
    if strides.len() != r || dilations.len() != r || pads.len() != 2 * r || kernel.len() != r {
        return Err(format!(
            "window attributes do not match {r} spatial dimensions"
        ));
    }
    let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut w = Window {
        kernel: kernel.to_vec(),
        strides: strides.iter().map(|&s| s as usize).collect(),
        dilations: dilations.iter().map(|&d| d as usize).collect(),
        pads_begin: vec![0; r],
        pads_end: vec![0; r],
        out: vec![0; r],
    };
    for i in 0..r {
        let (n, s, dk) = (
            spatial[i],
            w.strides[i],
            (kernel[i] - 1) * w.dilations[i] + 1,
        );
        match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let out = n.div_ceil(s);
                let total = ((out - 1) * s + dk).saturating_sub(n);
                let small = total / 2;
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                w.pads_begin[i] = b;
                w.pads_end[i] = e;
                w.out[i] = out;
            }
            "VALID" | "NOTSET" => {
                if auto_pad == "NOTSET" {
                    w.pads_begin[i] = pads[i] as usize;
                    w.pads_end[i] = pads[i + r] as usize;
                }
                let padded = n + w.pads_begin[i] + w.pads_end[i];
                if padded < dk {
                    return Err(format!("window {dk} larger than padded input {padded}"));
                }
                let mut out = if ceil_mode {
                    (padded - dk).div_ceil(s) + 1
                } else {
                    (padded - dk) / s + 1
                };
                // The last window must start inside the input or the begin padding.
                if ceil_mode && (out - 1) * s >= n + w.pads_begin[i] {
                    out -= 1;
                }
                w.out[i] = out;
            }
            other => return Err(format!("unknown auto_pad {other}")),
        }
    }
    Ok(w)
}

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

type NodeResult = Result<(Vec<TensorType>, Vec<Option<Vec<i64>>>), String>;

fn same(t: TensorType) -> NodeResult {
    Ok((vec![t], vec![]))
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Elementwise integer op over broadcast values.
fn broadcast_values(
    out: &[usize],
    args: &[(&[usize], &[i64])],
    f: impl Fn(&[i64]) -> Option<i64>,
) -> Option<Vec<i64>> {
    let n: usize = out.iter().product();
    if n > MAX_TRACKED {
        return None;
    }
    let ostr = strides_of(out);
    let mut res = Vec::with_capacity(n);
    let mut buf = vec![0i64; args.len()];
    for flat in 0..n {
        for (k, (shape, vals)) in args.iter().enumerate() {
            let off = out.len() - shape.len();
            let st = strides_of(shape);
            let mut idx = 0;
            for (i, &d) in shape.iter().enumerate() {
                let coord = (flat / ostr[off + i]) % out[off + i];
                if d != 1 {
                    idx += coord * st[i];
                }
            }
            buf[k] = vals[idx];
        }
        res.push(f(&buf)?);
    }
    Some(res)
}

fn infer_node(c: &OpCtx) -> NodeResult {
    let node = c.node;
    let op = node.op_type();
    if !node.domain().is_empty() && node.domain() != "ai.onnx" {
        return Err(format!("domain '{}' is not supported", node.domain()));
    }
    match op {
        "Identity" | "Sqrt" | "Exp" | "Log" | "Neg" | "Abs" | "Relu" | "Sigmoid" | "Tanh"
        | "Erf" | "Clip" | "Softmax" | "LogSoftmax" | "Reciprocal" | "Floor" | "Ceil"
        | "LeakyRelu" | "Elu" | "HardSigmoid" | "HardSwish" | "Softplus" | "Gelu" | "Sin"
        | "Cos" | "Sign" => {
            let t = c.input(0)?.clone();
            let v = if op == "Identity" || op == "Neg" || op == "Abs" {
                c.value(0).map(|v| match op {
                    "Neg" => v.iter().map(|x| -x).collect(),
                    "Abs" => v.iter().map(|x| x.abs()).collect(),
                    _ => v.clone(),
                })
            } else {
                None
            };
            Ok((vec![t], vec![v]))
        }
        "Cast" => {
            let to = attr_int(node, "to").ok_or("missing attribute 'to'")? as i32;
            let t = TensorType::new(to, c.shape(0)?.to_vec());
            let v = if to == INT64 || to == INT32 {
                c.value(0).cloned()
            } else {
                None
            };
            Ok((vec![t], vec![v]))
        }
        "ScatterElements" | "ScatterND" => same(c.input(0)?.clone()),
        "OneHot" => {
            let idx = c.shape(0)?;
            let depth = *c.const_input(1)?.first().ok_or("empty depth")?;
            let axis = norm_axis(attr_int(node, "axis").unwrap_or(-1), idx.len() + 1)?;
            let mut out = idx.to_vec();
            out.insert(axis, depth.max(0) as usize);
            same(TensorType::new(c.input(2)?.dtype, out))
        }
        "CastLike" => Ok((
            vec![TensorType::new(c.input(1)?.dtype, c.shape(0)?.to_vec())],
            vec![],
        )),
        "Dropout" => {
            let t = c.input(0)?.clone();
            let mask = TensorType::new(BOOL, t.shape.clone());
            Ok((vec![t, mask], vec![]))
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod"
        | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
        | "Xor" | "Where" => {
            let shapes: Vec<&[usize]> = c
                .ins
                .iter()
                .map(|t| {
                    t.as_ref()
                        .map(|t| t.shape.as_slice())
                        .ok_or("missing input")
                })
                .collect::<Result<_, _>>()?;
            let out = broadcast(&shapes)?;
            let dtype = match op {
                "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => BOOL,
                "Where" => c.input(1)?.dtype,
                _ => c.input(0)?.dtype,
            };
            let mut v = None;
            let ints = c.ins.iter().all(|t| {
                t.as_ref()
                    .is_some_and(|t| t.dtype == INT64 || t.dtype == INT32 || t.dtype == BOOL)
            });
            let vals: Option<Vec<&Vec<i64>>> = (0..c.ins.len()).map(|k| c.value(k)).collect();
            if let (true, Some(vals)) = (ints, vals) {
                let args: Vec<(&[usize], &[i64])> = shapes
                    .iter()
                    .zip(&vals)
                    .map(|(s, v)| (*s, v.as_slice()))
                    .collect();
                v = broadcast_values(&out, &args, |x| {
                    Some(match op {
                        "Add" | "Sum" => x.iter().sum(),
                        "Sub" => x[0] - x[1],
                        "Mul" => x[0] * x[1],
                        "Div" => x[0].checked_div(x[1])?,
                        "Mod" => x[0].checked_rem(x[1])?,
                        "Max" => *x.iter().max()?,
                        "Min" => *x.iter().min()?,
                        "Equal" => (x[0] == x[1]) as i64,
                        "Less" => (x[0] < x[1]) as i64,
                        "Greater" => (x[0] > x[1]) as i64,
                        "LessOrEqual" => (x[0] <= x[1]) as i64,
                        "GreaterOrEqual" => (x[0] >= x[1]) as i64,
                        "Where" => {
                            if x[0] != 0 {
                                x[1]
                            } else {
                                x[2]
                            }
                        }
                        _ => return None,
                    })
                });
            }
            Ok((vec![TensorType::new(dtype, out)], vec![v]))
        }
        "Not" => Ok((
            vec![TensorType::new(BOOL, c.shape(0)?.to_vec())],
            vec![c
                .value(0)
                .map(|v| v.iter().map(|&x| (x == 0) as i64).collect())],
        )),
        "Constant" => constant(node),
        "ConstantOfShape" => {
            let shape: Vec<usize> = c.const_input(0)?.iter().map(|&d| d as usize).collect();
            let (dtype, fill) = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => (
                    t.data_type(),
                    int_values(t).and_then(|v| v.first().copied()),
                ),
                None => (FLOAT, None),
            };
            let n: usize = shape.iter().product();
            let v = fill.filter(|_| n <= MAX_TRACKED).map(|f| vec![f; n]);
            Ok((vec![TensorType::new(dtype, shape)], vec![v]))
        }
        "Range" => {
            let (s, l, d) = (c.const_input(0)?, c.const_input(1)?, c.const_input(2)?);
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err("delta 0".into());
            }
            let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
            let v: Vec<i64> = (0..n as i64).map(|k| s + k * d).collect();
            Ok((
                vec![TensorType::new(c.input(0)?.dtype, vec![n])],
                vec![Some(v)],
            ))
        }
        "Shape" => {
            let s = c.shape(0)?;
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attr_int(node, "start").unwrap_or(0));
            let end = clampi(attr_int(node, "end").unwrap_or(r));
            let v: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
            Ok((vec![TensorType::new(INT64, vec![v.len()])], vec![Some(v)]))
        }
        "Size" => Ok((
            vec![TensorType::new(INT64, vec![])],
            vec![Some(vec![c.input(0)?.numel() as i64])],
        )),
        "MatMul" => {
            let (a, b) = (c.shape(0)?, c.shape(1)?);
            if a.is_empty() || b.is_empty() {
                return Err("MatMul of a scalar".into());
            }
            let a2 = if a.len() == 1 {
                vec![1, a[0]]
            } else {
                a.to_vec()
            };
            let b2 = if b.len() == 1 {
                vec![b[0], 1]
            } else {
                b.to_vec()
            };
            let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
            let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
            if k != k2 {
                return Err(format!("inner dimensions differ: {a:?} x {b:?}"));
            }
            let mut out = broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
            if a.len() > 1 {
                out.push(m);
            }
            if b.len() > 1 {
                out.push(n);
            }
            same(TensorType::new(c.input(0)?.dtype, out))
        }
        "Gemm" => {
            let (a, b) = (c.shape(0)?, c.shape(1)?);
            if a.len() != 2 || b.len() != 2 {
                return Err("Gemm needs 2-D A and B".into());
            }
            let ta = attr_int(node, "transA").unwrap_or(0) != 0;
            let tb = attr_int(node, "transB").unwrap_or(0) != 0;
            let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(format!("inner dimensions differ: {a:?} x {b:?}"));
            }
            if c.has(2) {
                broadcast(&[c.shape(2)?, &[m, n]])?;
            }
            same(TensorType::new(c.input(0)?.dtype, vec![m, n]))
        }
        "Conv" => {
            let (x, w) = (c.shape(0)?, c.shape(1)?);
            if x.len() < 3 || w.len() != x.len() {
                return Err(format!("input {x:?} and weight {w:?} ranks do not fit"));
            }
            let group = attr_int(node, "group").unwrap_or(1) as usize;
            if x[1] != w[1] * group {
                return Err(format!(
                    "input channels {} != weight channels {} x group {group}",
                    x[1], w[1]
                ));
            }
            let kernel = attr_ints(node, "kernel_shape")
                .map(|k| k.iter().map(|&d| d as usize).collect())
                .unwrap_or_else(|| w[2..].to_vec());
            let win = window(node, &x[2..], &kernel, false)?;
            let mut out = vec![x[0], w[0]];
            out.extend(win.out);
            same(TensorType::new(c.input(0)?.dtype, out))
        }
        "ConvTranspose" => {
            let (x, w) = (c.shape(0)?, c.shape(1)?);
            if x.len() < 3 || w.len() != x.len() {
                return Err(format!("input {x:?} and weight {w:?} ranks do not fit"));
            }
            let r = x.len() - 2;
            let group = attr_int(node, "group").unwrap_or(1) as usize;
            let mut out = vec![x[0], w[1] * group];
            if let Some(os) = attr_ints(node, "output_shape") {
                let os = &os[os.len() - r..];
                out.extend(os.iter().map(|&d| d as usize));
            } else {
                let kernel: Vec<usize> = attr_ints(node, "kernel_shape")
                    .map(|k| k.iter().map(|&d| d as usize).collect())
                    .unwrap_or_else(|| w[2..].to_vec());
                let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; r]);
                let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; r]);
                let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * r]);
                let opad = attr_ints(node, "output_padding").unwrap_or_else(|| vec![0; r]);
                let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
                for i in 0..r {
                    let s = strides[i];
                    let dk = (kernel[i] as i64 - 1) * dil[i] + 1;
                    let o = match auto_pad.as_str() {
                        "SAME_UPPER" | "SAME_LOWER" => x[2 + i] as i64 * s,
                        "VALID" => s * (x[2 + i] as i64 - 1) + opad[i] + dk,
                        _ => s * (x[2 + i] as i64 - 1) + opad[i] + dk - pads[i] - pads[i + r],
                    };
                    if o <= 0 {
                        return Err("empty output".into());
                    }
                    out.push(o as usize);
                }
            }
            same(TensorType::new(c.input(0)?.dtype, out))
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let x = c.shape(0)?;
            if x.len() < 3 {
                return Err(format!("input {x:?} has no spatial dims"));
            }
            let kernel: Vec<usize> = attr_ints(node, "kernel_shape")
                .ok_or("missing kernel_shape")?
                .iter()
                .map(|&d| d as usize)
                .collect();
            let ceil = attr_int(node, "ceil_mode").unwrap_or(0) != 0;
            let win = window(node, &x[2..], &kernel, ceil)?;
            let mut out = vec![x[0], x[1]];
            out.extend(win.out);
            let y = TensorType::new(c.input(0)?.dtype, out.clone());
            Ok((vec![y, TensorType::new(INT64, out)], vec![]))
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = c.shape(0)?;
            let mut out = x[..2.min(x.len())].to_vec();
            out.extend(std::iter::repeat_n(1, x.len().saturating_sub(2)));
            same(TensorType::new(c.input(0)?.dtype, out))
        }
        "BatchNormalization" => {
            let t = c.input(0)?.clone();
            let ch = TensorType::new(c.input(1)?.dtype, vec![*t.shape.get(1).unwrap_or(&1)]);
            Ok((vec![t, ch.clone(), ch.clone(), ch.clone(), ch], vec![]))
        }
        "InstanceNormalization" => same(c.input(0)?.clone()),
        "LayerNormalization" => {
            let t = c.input(0)?.clone();
            let axis = norm_axis(attr_int(node, "axis").unwrap_or(-1), t.shape.len())?;
            let stash = attr_int(node, "stash_type").unwrap_or(1) as i32;
            let mut s = t.shape.clone();
            s[axis..].iter_mut().for_each(|d| *d = 1);
            let stat = TensorType::new(stash, s);
            Ok((vec![t, stat.clone(), stat], vec![]))
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSumExp" => {
            let t = c.input(0)?;
            let axes = reduce_axes(c, t.shape.len())?;
            let keep = attr_int(node, "keepdims").unwrap_or(1) != 0;
            Ok((
                vec![TensorType::new(
                    t.dtype,
                    reduced_shape(&t.shape, &axes, keep),
                )],
                vec![],
            ))
        }
        "ArgMax" | "ArgMin" => {
            let t = c.input(0)?;
            let axis = norm_axis(attr_int(node, "axis").unwrap_or(0), t.shape.len())?;
            let keep = attr_int(node, "keepdims").unwrap_or(1) != 0;
            same(TensorType::new(
                INT64,
                reduced_shape(&t.shape, &[axis], keep),
            ))
        }
        "Flatten" => {
            let t = c.input(0)?;
            let r = t.shape.len() as i64;
            let axis = attr_int(node, "axis").unwrap_or(1);
            let axis = if axis < 0 { axis + r } else { axis };
            if !(0..=r).contains(&axis) {
                return Err(format!("axis {axis} out of range"));
            }
            let a: usize = t.shape[..axis as usize].iter().product();
            let b: usize = t.shape[axis as usize..].iter().product();
            Ok((
                vec![TensorType::new(t.dtype, vec![a, b])],
                vec![c.value(0).cloned()],
            ))
        }
        "Reshape" => {
            let t = c.input(0)?;
            let target = c.const_input(1)?;
            let allowzero = attr_int(node, "allowzero").unwrap_or(0) != 0;
            let out = reshape_target(&t.shape, target, allowzero)?;
            Ok((
                vec![TensorType::new(t.dtype, out)],
                vec![c.value(0).cloned()],
            ))
        }
        "Transpose" => {
            let t = c.input(0)?;
            let r = t.shape.len();
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            if perm.len() != r {
                return Err(format!("perm {perm:?} does not fit rank {r}"));
            }
            let out = perm
                .iter()
                .map(|&p| norm_axis(p, r).map(|p| t.shape[p]))
                .collect::<Result<_, _>>()?;
            same(TensorType::new(t.dtype, out))
        }
        "Concat" => {
            let first = c.input(0)?;
            let r = first.shape.len();
            let axis = norm_axis(attr_int(node, "axis").ok_or("missing axis")?, r)?;
            let mut out = first.shape.clone();
            out[axis] = 0;
            let mut vals = Some(Vec::new());
            for k in 0..c.ins.len() {
                let s = c.shape(k)?;
                if s.len() != r
                    || s.iter()
                        .zip(&first.shape)
                        .enumerate()
                        .any(|(i, (a, b))| i != axis && a != b)
                {
                    return Err(format!("input shapes {:?} and {s:?} differ", first.shape));
                }
                out[axis] += s[axis];
                match (c.value(k), vals.as_mut()) {
                    (Some(v), Some(acc)) if r == 1 => acc.extend_from_slice(v),
                    _ => vals = None,
                }
            }
            Ok((vec![TensorType::new(first.dtype, out)], vec![vals]))
        }
        "Slice" => {
            let t = c.input(0)?;
            let params = slice_params(node, &t.shape, c.values)?;
            let mut out = t.shape.clone();
            for &(a, _, _, len) in &params {
                out[a] = len;
            }
            let v = match (c.value(0), t.shape.len(), params.as_slice()) {
                (Some(v), 1, [(_, s, st, len)]) => {
                    Some((0..*len as i64).map(|k| v[(s + k * st) as usize]).collect())
                }
                (Some(v), 1, []) => Some(v.clone()),
                _ => None,
            };
            Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
        }
        "Gather" => {
            let (t, idx) = (c.input(0)?, c.input(1)?);
            let axis = norm_axis(attr_int(node, "axis").unwrap_or(0), t.shape.len())?;
            let mut out = t.shape[..axis].to_vec();
            out.extend_from_slice(&idx.shape);
            out.extend_from_slice(&t.shape[axis + 1..]);
            let v = match (c.value(0), c.value(1), t.shape.len()) {
                (Some(data), Some(ix), 1) => ix
                    .iter()
                    .map(|&i| {
                        let i = if i < 0 { i + data.len() as i64 } else { i };
                        data.get(i as usize).copied()
                    })
                    .collect(),
                _ => None,
            };
            Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
        }
        "Squeeze" => {
            let t = c.input(0)?;
            let r = t.shape.len();
            let out = match c.axes(1)? {
                Some(axes) => {
                    let axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| norm_axis(a, r))
                        .collect::<Result<_, _>>()?;
                    if let Some(&a) = axes.iter().find(|&&a| t.shape[a] != 1) {
                        return Err(format!("axis {a} of {:?} is not 1", t.shape));
                    }
                    t.shape
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
                None => t.shape.iter().copied().filter(|&d| d != 1).collect(),
            };
            Ok((
                vec![TensorType::new(t.dtype, out)],
                vec![c.value(0).cloned()],
            ))
        }
        "Unsqueeze" => {
            let t = c.input(0)?;
            let axes = c.axes(1)?.ok_or("missing axes")?;
            let r = t.shape.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, r))
                .collect::<Result<_, _>>()?;
            axes.sort();
            let mut out = Vec::with_capacity(r);
            let mut it = t.shape.iter();
            for i in 0..r {
                if axes.contains(&i) {
                    out.push(1);
                } else {
                    out.push(*it.next().ok_or("duplicate axes")?);
                }
            }
            Ok((
                vec![TensorType::new(t.dtype, out)],
                vec![c.value(0).cloned()],
            ))
        }
        "Split" => {
            let t = c.input(0)?;
            let axis = norm_axis(attr_int(node, "axis").unwrap_or(0), t.shape.len())?;
            let d = t.shape[axis];
            let n = node.output.len();
            let sizes: Vec<usize> = if c.has(1) {
                c.const_input(1)?.iter().map(|&s| s as usize).collect()
            } else if let Some(s) = attr_ints(node, "split") {
                s.iter().map(|&s| s as usize).collect()
            } else {
                let parts = attr_int(node, "num_outputs").map_or(n, |k| k as usize);
                let chunk = d.div_ceil(parts);
                (0..parts)
                    .map(|k| chunk.min(d.saturating_sub(k * chunk)))
                    .collect()
            };
            if sizes.iter().sum::<usize>() != d || sizes.len() != n {
                return Err(format!("split sizes {sizes:?} do not fit dimension {d}"));
            }
            let outs = sizes
                .iter()
                .map(|&s| {
                    let mut sh = t.shape.clone();
                    sh[axis] = s;
                    TensorType::new(t.dtype, sh)
                })
                .collect();
            Ok((outs, vec![]))
        }
        "Expand" => {
            let t = c.input(0)?;
            let target: Vec<usize> = c.const_input(1)?.iter().map(|&d| d as usize).collect();
            let out = broadcast(&[&t.shape, &target])?;
            let v = c
                .value(0)
                .and_then(|v| broadcast_values(&out, &[(&t.shape, v)], |x| Some(x[0])));
            Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
        }
        "Tile" => {
            let t = c.input(0)?;
            let reps = c.const_input(1)?;
            if reps.len() != t.shape.len() {
                return Err("repeats do not fit the rank".into());
            }
            let out = t
                .shape
                .iter()
                .zip(reps)
                .map(|(&d, &r)| d * r as usize)
                .collect();
            same(TensorType::new(t.dtype, out))
        }
        "Pad" => {
            let t = c.input(0)?;
            let r = t.shape.len();
            let pads = if c.has(1) {
                c.const_input(1)?.clone()
            } else {
                attr_ints(node, "pads").ok_or("missing pads")?
            };
            let axes: Vec<usize> = match c.axes(3)? {
                Some(a) if c.has(3) => a
                    .iter()
                    .map(|&a| norm_axis(a, r))
                    .collect::<Result<_, _>>()?,
                _ => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err("pads do not fit the axes".into());
            }
            let mut out = t.shape.clone();
            for (k, &a) in axes.iter().enumerate() {
                let d = out[a] as i64 + pads[k] + pads[k + axes.len()];
                if d < 0 {
                    return Err("negative padded size".into());
                }
                out[a] = d as usize;
            }
            same(TensorType::new(t.dtype, out))
        }
        _ => Err("no shape rule for this op".into()),
    }
}

/// Reduction axes of a Reduce* node (attribute or input), normalised and sorted; all axes when empty
/// (unless `noop_with_empty_axes`).
fn reduce_axes(c: &OpCtx, rank: usize) -> Result<Vec<usize>, String> {
    let axes = c.axes(1)?.unwrap_or_default();
    if axes.is_empty() {
        if attr_int(c.node, "noop_with_empty_axes").unwrap_or(0) != 0 {
            return Ok(vec![]);
        }
        return Ok((0..rank).collect());
    }
    let mut a: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_, _>>()?;
    a.sort();
    a.dedup();
    Ok(a)
}

/// Reduction axes of a Reduce* node given the constant values (for autodiff).
pub fn reduce_axes_of(
    node: &NodeProto,
    rank: usize,
    values: &HashMap<String, Vec<i64>>,
) -> Result<Vec<usize>, String> {
    let ins: Vec<Option<TensorType>> = node
        .input
        .iter()
        .map(|i| (!i.is_empty()).then(|| TensorType::new(INT64, vec![])))
        .collect();
    let c = OpCtx {
        node,
        ins: &ins,
        values,
    };
    reduce_axes(&c, rank)
}

pub fn reduced_shape(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keep.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

fn reshape_target(shape: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err("two -1 in the target shape".into());
                }
                out.push(1);
            }
            0 if !allowzero => out.push(
                *shape
                    .get(i)
                    .ok_or_else(|| format!("0 at position {i} beyond input rank"))?,
            ),
            d if d < 0 => return Err(format!("invalid dimension {d}")),
            d => out.push(d as usize),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {shape:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {shape:?} to {target:?}"));
    }
    Ok(out)
}

fn constant(node: &NodeProto) -> NodeResult {
    let a = node.attribute.first().ok_or("no value attribute")?;
    let (t, v) = match a.name() {
        "value" => {
            let t = a.t.as_ref().ok_or("value is not a tensor")?;
            (
                TensorType::new(
                    t.data_type(),
                    t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                ),
                int_values(t),
            )
        }
        "value_int" => (TensorType::new(INT64, vec![]), a.i.map(|i| vec![i])),
        "value_ints" => (
            TensorType::new(INT64, vec![a.ints.len()]),
            Some(a.ints.clone()),
        ),
        "value_float" => (TensorType::new(FLOAT, vec![]), None),
        "value_floats" => (TensorType::new(FLOAT, vec![a.floats.len()]), None),
        other => return Err(format!("unsupported attribute {other}")),
    };
    Ok((vec![t], vec![v]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[&[2, 1, 3], &[4, 1]]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast(&[&[2, 3], &[4, 3]]).is_err());
        assert_eq!(broadcast(&[&[], &[5]]).unwrap(), vec![5]);
    }

    #[test]
    fn slices_clamp_like_onnx() {
        assert_eq!(slice_axis(10, 2, 8, 3).unwrap(), (2, 3, 2));
        assert_eq!(slice_axis(10, -1, i64::MIN, -1).unwrap(), (9, -1, 10));
        assert_eq!(slice_axis(10, 0, i64::MAX, 1).unwrap(), (0, 1, 10));
        assert_eq!(slice_axis(10, 5, 2, 1).unwrap().2, 0);
        assert_eq!(slice_axis(10, 8, 1, -2).unwrap(), (8, -2, 4));
    }

    fn win_node(attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            s: Some(v.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn windows_follow_auto_pad_and_ceil_mode() {
        // 7 wide, kernel 3, stride 2: NOTSET pads 1/1 -> 4; VALID -> 3; SAME -> ceil(7/2) = 4.
        let n = win_node(vec![ints("strides", &[2]), ints("pads", &[1, 1])]);
        assert_eq!(window(&n, &[7], &[3], false).unwrap().out, vec![4]);
        let n = win_node(vec![ints("strides", &[2]), string("auto_pad", "VALID")]);
        assert_eq!(window(&n, &[7], &[3], false).unwrap().out, vec![3]);
        // 8 wide, kernel 3, stride 2: SAME total pad 1, UPPER puts it at the end, LOWER at the start.
        let n = win_node(vec![
            ints("strides", &[2]),
            string("auto_pad", "SAME_UPPER"),
        ]);
        let w = window(&n, &[8], &[3], false).unwrap();
        assert_eq!(
            (w.out, w.pads_begin, w.pads_end),
            (vec![4], vec![0], vec![1])
        );
        let n = win_node(vec![
            ints("strides", &[2]),
            string("auto_pad", "SAME_LOWER"),
        ]);
        let w = window(&n, &[8], &[3], false).unwrap();
        assert_eq!((w.pads_begin, w.pads_end), (vec![1], vec![0]));
        // Dilation 2 makes kernel 3 span 5: (9 - 5) / 1 + 1 = 5.
        let n = win_node(vec![ints("dilations", &[2])]);
        assert_eq!(window(&n, &[9], &[3], false).unwrap().out, vec![5]);
        // ceil_mode: 6 wide, kernel 2, stride 2, pad 0/1 -> floor 3, ceil 4 would start in the end pad -> 3;
        // 5 wide, kernel 2, stride 2 -> floor 2, ceil 3.
        let n = win_node(vec![ints("strides", &[2]), ints("pads", &[0, 1])]);
        assert_eq!(window(&n, &[6], &[2], true).unwrap().out, vec![3]);
        let n = win_node(vec![ints("strides", &[2])]);
        assert_eq!(window(&n, &[5], &[2], false).unwrap().out, vec![2]);
        assert_eq!(window(&n, &[5], &[2], true).unwrap().out, vec![3]);
    }

    #[test]
    fn reshape_targets() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
    }
}
