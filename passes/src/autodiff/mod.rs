//! Reverse-mode automatic differentiation emitting backward graphs in standard ONNX ops only.
//!
//! [`differentiate`] appends to a graph the nodes computing the gradient of a scalar loss with respect to
//! chosen float values (parameters or inputs). Shapes are static (see [`crate::analysis::shapes`]), so every
//! broadcast can be undone exactly ([`GradCtx::reduce_to_shape`]). The sweep visits, in reverse topological
//! order, the nodes lying on a float path from some `wrt` value to the loss; each applies its op's rule
//! (one small unit per op family in [`rules`]), and gradients of values read by several nodes are summed with
//! `Add`. New values and nodes are named `grad/…`. The backward ops need default-domain opset 13 or later.

pub mod composite;
pub mod rules;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::analysis::shapes::{Inference, TensorType};
use crate::ir::{node_label, Graph, GraphError, NodeIndex};
use crate::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto,
    StringStringEntryProto, TensorProto,
};
use crate::tensor::is_float;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AutodiffError {
    #[error("node {node}: no gradient rule for op {op}")]
    NoRule { node: String, op: String },
    #[error("node {node}: {message}")]
    Rule { node: String, message: String },
    #[error("value '{value}' has no inferred type; run shape inference over the whole graph")]
    NoType { value: String },
    #[error("the loss '{value}' must be a float scalar (one element), got {found}")]
    BadLoss { value: String, found: String },
    #[error("'{value}' is not a float value of the graph, so it cannot be differentiated")]
    BadWrt { value: String },
    #[error("default-domain opset {found} is too old: the backward graph needs opset 13 or later")]
    Opset { found: i64 },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// What a rule sees of its forward node.
pub struct RuleArgs<'a> {
    pub node: &'a NodeProto,
    /// Types of the node's inputs (`None` for omitted optional inputs).
    pub ins: Vec<Option<TensorType>>,
    /// Types of the node's outputs (`None` for omitted outputs).
    pub outs: Vec<Option<TensorType>>,
    /// Gradient of the loss with respect to each output, where one flows back.
    pub dy: Vec<Option<String>>,
    /// Which inputs need a gradient (they lie on a path from a `wrt` value).
    pub needs: Vec<bool>,
}

impl RuleArgs<'_> {
    pub fn input(&self, slot: usize) -> &str {
        &self.node.input[slot]
    }

    pub fn output(&self, slot: usize) -> &str {
        &self.node.output[slot]
    }

    pub fn in_type(&self, slot: usize) -> Result<&TensorType, String> {
        self.ins
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("input {slot} is missing"))
    }

    pub fn in_shape(&self, slot: usize) -> Result<&[usize], String> {
        Ok(&self.in_type(slot)?.shape)
    }

    pub fn out_type(&self, slot: usize) -> Result<&TensorType, String> {
        self.outs
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("output {slot} is missing"))
    }

    pub fn out_shape(&self, slot: usize) -> Result<&[usize], String> {
        Ok(&self.out_type(slot)?.shape)
    }

    /// The gradient of the single/first output (rules of one-output ops).
    pub fn dy0(&self) -> Result<&str, String> {
        self.dy
            .first()
            .and_then(Option::as_deref)
            .ok_or_else(|| "no gradient reaches output 0".to_owned())
    }

    pub fn needs(&self, slot: usize) -> bool {
        self.needs.get(slot).copied().unwrap_or(false)
    }
}

/// Emits backward nodes and constants with fresh `grad/` names.
pub struct GradCtx<'a> {
    graph: &'a Graph,
    /// Types of the forward values.
    pub types: &'a HashMap<String, TensorType>,
    /// Evaluated integer constants of the forward graph (axes, shapes, slice bounds), as shape inference
    /// found them.
    pub values: &'a HashMap<String, Vec<i64>>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    taken: HashSet<String>,
    counter: usize,
}

/// An attribute for emitted nodes.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Tensor(Box<TensorProto>),
}

impl Attr {
    /// The attribute as a named `AttributeProto`.
    pub fn into_proto(self, name: &str) -> AttributeProto {
        let mut p = AttributeProto {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let ty = match self {
            Attr::Int(i) => {
                p.i = Some(i);
                AttributeType::Int
            }
            Attr::Ints(v) => {
                p.ints = v;
                AttributeType::Ints
            }
            Attr::Float(f) => {
                p.f = Some(f);
                AttributeType::Float
            }
            Attr::Tensor(t) => {
                p.t = Some(*t);
                AttributeType::Tensor
            }
        };
        p.r#type = Some(ty as i32);
        p
    }
}

impl<'a> GradCtx<'a> {
    fn new(graph: &'a Graph, inference: &'a Inference) -> GradCtx<'a> {
        GradCtx {
            graph,
            types: &inference.types,
            values: &inference.values,
            nodes: Vec::new(),
            initializers: Vec::new(),
            taken: HashSet::new(),
            counter: 0,
        }
    }

    /// A value or node name unused in the graph and in what this context emitted: `grad/{hint}.{k}`.
    pub fn fresh(&mut self, hint: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("grad/{hint}.{}", self.counter);
            if self.graph.producer(&name).is_none() && !self.taken.contains(&name) {
                self.taken.insert(name.clone());
                return name;
            }
        }
    }

    /// The op type of the node this context emitted that produces `value` (`None` for forward values).
    pub fn emitted_op(&self, value: &str) -> Option<&str> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.output.iter().any(|o| o == value))
            .map(|n| n.op_type())
    }

    /// Attaches `key = value` to the metadata of the emitted node producing `output`: a note for later passes
    /// (the forward op a subgraph computes the gradient of), ignored by runtimes.
    pub fn annotate(&mut self, output: &str, key: &str, value: String) {
        annotate(&mut self.nodes, output, key, value);
    }

    /// Emits a one-output node and returns its output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op, inputs, attrs, 1).remove(0)
    }

    /// Emits a node with `n` outputs.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        n: usize,
    ) -> Vec<String> {
        let name = self.fresh(op);
        let outputs: Vec<String> = (0..n)
            .map(|k| if k == 0 { name.clone() } else { self.fresh(op) })
            .collect();
        let attribute = attrs.into_iter().map(|(n, a)| a.into_proto(n)).collect();
        self.nodes.push(NodeProto {
            op_type: Some(op.to_owned()),
            name: Some(name),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            attribute,
            ..Default::default()
        });
        outputs
    }

    /// A 1-D int64 initializer.
    pub fn const_i64(&mut self, values: &[i64]) -> String {
        self.const_i64_shaped(&[values.len()], values)
    }

    /// An int64 initializer of the given dims (row-major `values`).
    pub fn const_i64_shaped(&mut self, dims: &[usize], values: &[i64]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let name = self.fresh("const");
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        });
        name
    }

    /// A rank-0 float initializer of `dtype` (float32/float64/float16/bfloat16).
    pub fn scalar(&mut self, dtype: i32, value: f64) -> String {
        let name = self.fresh("const");
        self.initializers
            .push(crate::tensor::scalar(&name, dtype, value));
        name
    }

    /// A float tensor of `dtype` filled with `value`, of a static shape.
    pub fn filled(&mut self, dtype: i32, shape: &[usize], value: f64) -> String {
        let s = self.scalar(dtype, value);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let target = self.const_i64(&dims);
        self.op("Expand", &[&s, &target], vec![])
    }

    /// `Reshape(x, shape)`.
    pub fn reshape(&mut self, x: &str, shape: &[usize]) -> String {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let s = self.const_i64(&dims);
        self.op("Reshape", &[x, &s], vec![])
    }

    /// `ReduceSum(x, axes, keepdims)` (opset 13 form, axes as an input).
    pub fn reduce_sum(&mut self, x: &str, axes: &[usize], keepdims: bool) -> String {
        let a: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let a = self.const_i64(&a);
        self.op(
            "ReduceSum",
            &[x, &a],
            vec![("keepdims", Attr::Int(keepdims as i64))],
        )
    }

    /// Sums a gradient of shape `from` down to `to`, undoing numpy broadcasting: ReduceSum over the broadcast
    /// axes, then Reshape to `to`. Returns `grad` itself when the shapes are equal.
    pub fn reduce_to_shape(
        &mut self,
        grad: &str,
        from: &[usize],
        to: &[usize],
    ) -> Result<String, String> {
        if from == to {
            return Ok(grad.to_owned());
        }
        if from.len() < to.len() {
            return Err(format!("cannot reduce {from:?} to {to:?}"));
        }
        let off = from.len() - to.len();
        let mut axes: Vec<usize> = (0..off).collect();
        for (i, &d) in to.iter().enumerate() {
            if d == 1 && from[off + i] != 1 {
                axes.push(off + i);
            } else if d != from[off + i] {
                return Err(format!("cannot reduce {from:?} to {to:?}"));
            }
        }
        let summed = if axes.is_empty() {
            grad.to_owned()
        } else {
            self.reduce_sum(grad, &axes, true)
        };
        Ok(self.reshape(&summed, to))
    }

    /// Type of a forward value.
    pub fn type_of(&self, value: &str) -> Result<&TensorType, String> {
        self.types
            .get(value)
            .ok_or_else(|| format!("value '{value}' has no type"))
    }

    /// An integer value of the forward graph known statically (initializer, `Constant`, shape arithmetic).
    pub fn const_value(&self, value: &str) -> Result<&Vec<i64>, String> {
        self.values
            .get(value)
            .ok_or_else(|| format!("'{value}' must be a constant integer tensor"))
    }
}

fn default_opset(g: &Graph) -> i64 {
    g.model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .unwrap_or(1)
}

/// Options of [`differentiate_with`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// (node name, input slot) pairs where the gradient stops: no gradient flows from that node into that
    /// input (as if the input were a constant there; its other uses still carry gradient).
    pub stop: HashSet<(String, usize)>,
}

/// Appends to `g` the gradient of the scalar `loss` with respect to each of `wrt`, and returns the name of
/// each gradient value. `inference` holds the static types of the forward values and their evaluated integer
/// constants ([`crate::analysis::shapes::infer`] over `g`).
/// A `wrt` value on no path to the loss gets a gradient of zeros.
pub fn differentiate(
    g: &mut Graph,
    loss: &str,
    wrt: &[String],
    inference: &Inference,
) -> Result<HashMap<String, String>, AutodiffError> {
    differentiate_with(g, loss, wrt, inference, &DiffOptions::default())
}

/// [`differentiate`] with options (gradient stops).
pub fn differentiate_with(
    g: &mut Graph,
    loss: &str,
    wrt: &[String],
    inference: &Inference,
    opts: &DiffOptions,
) -> Result<HashMap<String, String>, AutodiffError> {
    let types = &inference.types;
    let opset = default_opset(g);
    if opset < 13 {
        return Err(AutodiffError::Opset { found: opset });
    }
    let lt = types.get(loss).ok_or_else(|| AutodiffError::NoType {
        value: loss.to_owned(),
    })?;
    if !is_float(lt.dtype) || lt.numel() != 1 {
        return Err(AutodiffError::BadLoss {
            value: loss.to_owned(),
            found: format!(
                "{}{:?}",
                crate::tensor::dtype_name(lt.dtype).unwrap_or("?"),
                lt.shape
            ),
        });
    }
    for w in wrt {
        if g.producer(w).is_none() || !types.get(w).is_some_and(|t| is_float(t.dtype)) {
            return Err(AutodiffError::BadWrt { value: w.clone() });
        }
    }
    let order = g.topological_order()?;
    let float = |v: &str| types.get(v).is_some_and(|t| is_float(t.dtype));

    // Float values that depend on some wrt value.
    let mut live: HashSet<String> = wrt.iter().cloned().collect();
    for &i in &order {
        let n = g.node(i);
        if n.input.iter().any(|v| live.contains(v)) {
            live.extend(
                n.output
                    .iter()
                    .filter(|o| !o.is_empty() && float(o))
                    .cloned(),
            );
        }
    }
    // Values the loss depends on.
    let mut needed: HashSet<String> = HashSet::from([loss.to_owned()]);
    for &i in order.iter().rev() {
        let n = g.node(i);
        if n.output.iter().any(|o| needed.contains(o)) {
            needed.extend(n.input.iter().filter(|v| !v.is_empty()).cloned());
        }
    }

    // Elementary GELUs, differentiated as one op at their output node; their inner nodes are skipped (their
    // values are read by the chain alone, so nothing else waits for a gradient through them).
    let stopped = |n: NodeIndex| opts.stop.iter().any(|(name, _)| name == g.node(n).name());
    let gelus: HashMap<NodeIndex, composite::GeluChain> = composite::gelu_chains(g)
        .into_iter()
        .filter(|(_, c)| !stopped(c.output_node) && !c.inner.iter().any(|&n| stopped(n)))
        .collect();
    let inside_gelu: HashSet<NodeIndex> = gelus.values().flat_map(|c| c.inner.clone()).collect();

    let mut ctx = GradCtx::new(g, inference);
    let mut contrib: HashMap<String, Vec<String>> = HashMap::new();
    let seed = ctx.filled(lt.dtype, &lt.shape, 1.0);
    contrib.insert(loss.to_owned(), vec![seed]);

    for &i in order.iter().rev() {
        if inside_gelu.contains(&i) {
            continue;
        }
        let node = g.node(i);
        let on_path = node
            .output
            .iter()
            .any(|o| live.contains(o) && needed.contains(o))
            && node.input.iter().any(|v| live.contains(v));
        if !on_path {
            continue;
        }
        let dy: Vec<Option<String>> = node
            .output
            .iter()
            .map(|o| accumulate(&mut ctx, &mut contrib, o))
            .collect();
        if dy.iter().all(Option::is_none) {
            continue;
        }
        if let Some(chain) = gelus.get(&i) {
            if let (Some(dy), true) = (&dy[0], live.contains(&chain.x)) {
                let dtype = types[&chain.x].dtype;
                let gx = rules::activations::gelu_exact_grad(&mut ctx, &chain.x, dy, dtype);
                contrib.entry(chain.x.clone()).or_default().push(gx);
            }
            continue;
        }
        let label = node_label(node, i);
        let rule = rules::rule_for(node.op_type())
            .filter(|_| node.domain().is_empty() || node.domain() == "ai.onnx")
            .ok_or_else(|| AutodiffError::NoRule {
                node: label.clone(),
                op: node.op_type().to_owned(),
            })?;
        let needs: Vec<bool> = node
            .input
            .iter()
            .enumerate()
            .map(|(slot, v)| {
                live.contains(v) && !opts.stop.contains(&(node.name().to_owned(), slot))
            })
            .collect();
        if !needs.contains(&true) {
            continue;
        }
        let lookup = |v: &String| (!v.is_empty()).then(|| types.get(v).cloned()).flatten();
        let args = RuleArgs {
            node,
            ins: node.input.iter().map(lookup).collect(),
            outs: node.output.iter().map(lookup).collect(),
            dy,
            needs,
        };
        let grads = rule(&mut ctx, &args).map_err(|message| AutodiffError::Rule {
            node: label.clone(),
            message: format!("{}: {message}", node.op_type()),
        })?;
        for (slot, v) in node.input.iter().enumerate() {
            if !args.needs(slot) {
                continue;
            }
            if let Some(Some(gv)) = grads.get(slot) {
                contrib.entry(v.clone()).or_default().push(gv.clone());
            }
        }
    }

    let mut result = HashMap::new();
    for w in wrt {
        let gv = match accumulate(&mut ctx, &mut contrib, w) {
            Some(gv) => gv,
            None => {
                let t = &types[w];
                ctx.filled(t.dtype, &t.shape, 0.0)
            }
        };
        result.insert(w.clone(), gv);
    }
    let GradCtx {
        nodes,
        initializers,
        ..
    } = ctx;
    for t in initializers {
        g.add_initializer(t);
    }
    g.add_nodes(nodes)?;
    Ok(result)
}

/// Attaches a note (`key`: `value`) to the last of `nodes` writing `output`, for engines with fused kernels.
pub fn annotate(nodes: &mut [NodeProto], output: &str, key: &str, value: String) {
    if let Some(node) = nodes
        .iter_mut()
        .rev()
        .find(|n| n.output.iter().any(|o| o == output))
    {
        node.metadata_props.push(StringStringEntryProto {
            key: Some(key.to_owned()),
            value: Some(value),
        });
    }
}

/// The total gradient of `value`: its contributions summed with `Add` (and cached as one value).
fn accumulate(
    ctx: &mut GradCtx,
    contrib: &mut HashMap<String, Vec<String>>,
    value: &str,
) -> Option<String> {
    let parts = contrib.get_mut(value)?;
    let mut acc = parts.first()?.clone();
    for p in &parts[1..] {
        acc = ctx.op("Add", &[&acc, p], vec![]);
    }
    *parts = vec![acc.clone()];
    Some(acc)
}
