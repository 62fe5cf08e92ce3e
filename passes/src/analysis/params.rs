//! Tracing a node input back to the tensor that stores it, through Identity / Cast / Constant chains.

use petgraph::stable_graph::NodeIndex;

use crate::ir::Graph;
use crate::onnx::TensorProto;

/// A constant input traced to its storage.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRef {
    /// The value as the consumer reads it.
    pub value: String,
    /// The stored tensor: an initializer name, or the output of a Constant node.
    pub root: String,
    /// The Constant node holding the root, if the root is not an initializer.
    pub constant_node: Option<NodeIndex>,
    /// Identity/Cast nodes from the root (first) to the consumer (last).
    pub chain: Vec<NodeIndex>,
    /// Element type as the consumer sees it (after any Cast).
    pub dtype: i32,
    pub dims: Vec<i64>,
}

fn constant_tensor(g: &Graph, index: NodeIndex) -> Option<&TensorProto> {
    let node = g.node(index);
    if node.op_type() != "Constant" {
        return None;
    }
    node.attribute
        .iter()
        .find(|a| a.name() == "value")
        .and_then(|a| a.t.as_ref())
}

/// Follows `value` back through Identity/Cast nodes to an initializer or a Constant node's tensor.
pub fn trace_param(g: &Graph, value: &str) -> Option<ParamRef> {
    let mut chain = Vec::new();
    let mut current = value.to_owned();
    let mut cast_to: Option<i32> = None;
    loop {
        if let Some(t) = g.initializer(&current) {
            chain.reverse();
            return Some(ParamRef {
                value: value.to_owned(),
                root: current,
                constant_node: None,
                chain,
                dtype: cast_to.unwrap_or(t.data_type()),
                dims: t.dims.clone(),
            });
        }
        let index = g.producer_node(&current)?;
        let node = g.node(index);
        match node.op_type() {
            "Identity" | "Cast" if node.domain().is_empty() => {
                if node.op_type() == "Cast" && cast_to.is_none() {
                    cast_to = node
                        .attribute
                        .iter()
                        .find(|a| a.name() == "to")
                        .map(|a| a.i() as i32);
                }
                chain.push(index);
                current = node.input.first()?.clone();
            }
            "Constant" => {
                let t = constant_tensor(g, index)?;
                chain.reverse();
                return Some(ParamRef {
                    value: value.to_owned(),
                    root: current,
                    constant_node: Some(index),
                    chain,
                    dtype: cast_to.unwrap_or(t.data_type()),
                    dims: t.dims.clone(),
                });
            }
            _ => return None,
        }
    }
}

/// The stored tensor behind a traced parameter.
pub fn root_tensor<'g>(g: &'g Graph, p: &ParamRef) -> Option<&'g TensorProto> {
    match p.constant_node {
        Some(index) => constant_tensor(g, index),
        None => g.initializer(&p.root),
    }
}

/// Tensors that gradient descent would learn: floating point with more than one element. Scalars are the
/// constants of formulas (epsilons, GELU's 0.5, attention scales), integers are shapes and indices.
pub fn is_learnable(t: &TensorProto) -> bool {
    crate::tensor::is_float(t.data_type()) && crate::tensor::numel(t) > 1
}
