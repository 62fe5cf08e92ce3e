//! Subgraphs the sweep differentiates as one op: the exact GELU written out in elementary ops, as exporters
//! before opset 20 (torch.onnx) and this crate's zoo emit it, `Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)`.
//! Differentiated op by op it costs about ten elementwise passes and keeps four intermediate activations
//! alive for the backward; as one op, its gradient `dY·(Φ(x) + x·φ(x))` reads `x` alone (the intermediates
//! can be freed, or fused by an engine) and is noted for engines with a one-pass kernel.

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, NodeIndex};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::NodeProto;
use crate::tensor::f32_values;

/// One GELU chain: its input, its output node (the last `Mul`) and its other nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct GeluChain {
    pub x: String,
    pub output_node: NodeIndex,
    pub inner: Vec<NodeIndex>,
}

/// The value of a float32 or float64 scalar constant (an initializer or a `Constant` node's tensor), if `v` is
/// one.
fn scalar_constant(g: &Graph, v: &str) -> Option<f64> {
    let tensor = match g.initializer(v) {
        Some(t) => t.clone(),
        None => {
            let n = g.node(g.producer_node(v)?);
            if n.op_type() != "Constant" || !n.domain().is_empty() {
                return None;
            }
            n.attribute
                .iter()
                .find(|a| a.name() == "value")?
                .t
                .clone()?
        }
    };
    let values: Vec<f64> = if tensor.data_type() == DataType::Double as i32 {
        match &tensor.raw_data {
            Some(raw) => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("eight bytes")))
                .collect(),
            None => tensor.double_data.clone(),
        }
    } else {
        f32_values(&tensor)?.into_iter().map(f64::from).collect()
    };
    match values.as_slice() {
        [x] => Some(*x),
        _ => None,
    }
}

/// For a binary op with a constant on one side: (the other input, the constant).
fn with_constant(g: &Graph, n: &NodeProto, commutes: bool) -> Option<(String, f64)> {
    if n.input.len() != 2 {
        return None;
    }
    if let Some(c) = scalar_constant(g, &n.input[1]) {
        return Some((n.input[0].clone(), c));
    }
    if commutes {
        if let Some(c) = scalar_constant(g, &n.input[0]) {
            return Some((n.input[1].clone(), c));
        }
    }
    None
}

/// Equal up to float32 rounding of the constant.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs()
}

/// Every exact-GELU chain of `g` whose intermediate values are read by the chain alone (not by another node,
/// not a graph output), keyed by its output node. `x / √2` may also be written `x · (1/√2)`, and the
/// commutative ops may take their operands in either order.
pub fn gelu_chains(g: &Graph) -> HashMap<NodeIndex, GeluChain> {
    let consumers = g.consumers();
    let outputs: HashSet<&str> = g.proto.output.iter().map(|o| o.name()).collect();
    // The single reader of `v`, if `v` is an internal value read once.
    let only_reader = |v: &str| -> Option<NodeIndex> {
        match consumers.get(v).map(Vec::as_slice) {
            Some([(i, _)]) if !outputs.contains(v) => Some(*i),
            _ => None,
        }
    };
    let op = |i: NodeIndex, t: &str| {
        let n = g.node(i);
        n.op_type() == t && n.domain().is_empty() && n.output.len() == 1
    };
    let mut chains = HashMap::new();
    for (erf, n) in g.nodes() {
        if !op(erf, "Erf") {
            continue;
        }
        let Some(scale) = g.producer_node(&n.input[0]) else {
            continue;
        };
        let s = g.node(scale);
        let x = match s.op_type() {
            "Div" if op(scale, "Div") => with_constant(g, s, false)
                .filter(|(_, c)| close(*c, std::f64::consts::SQRT_2))
                .map(|(x, _)| x),
            "Mul" if op(scale, "Mul") => with_constant(g, s, true)
                .filter(|(_, c)| close(*c, std::f64::consts::FRAC_1_SQRT_2))
                .map(|(x, _)| x),
            _ => None,
        };
        let Some(x) = x else { continue };
        if only_reader(&s.output[0]) != Some(erf) {
            continue;
        }
        let Some(add) = only_reader(&n.output[0]).filter(|&i| op(i, "Add")) else {
            continue;
        };
        if !with_constant(g, g.node(add), true).is_some_and(|(_, c)| c == 1.0) {
            continue;
        }
        let Some(mul) = only_reader(&g.node(add).output[0]).filter(|&i| op(i, "Mul")) else {
            continue;
        };
        let m = g.node(mul);
        if !(m.input.len() == 2 && m.input.contains(&x) && m.input[0] != m.input[1]) {
            continue;
        }
        let Some(half) = only_reader(&m.output[0]).filter(|&i| op(i, "Mul")) else {
            continue;
        };
        if !with_constant(g, g.node(half), true).is_some_and(|(_, c)| c == 0.5) {
            continue;
        }
        chains.insert(
            half,
            GeluChain {
                x,
                output_node: half,
                inner: vec![scale, erf, add, mul],
            },
        );
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, ModelBuilder};

    fn gelu_model(extra_reader: bool) -> Graph {
        let mut b = ModelBuilder::new("gelu")
            .input("x", DataType::Float, [2i64, 3])
            .f32_initializer("sqrt2", &[], &[std::f32::consts::SQRT_2])
            .f32_initializer("one", &[], &[1.0])
            .f32_initializer("half", &[], &[0.5])
            .node(node("Div", &["x", "sqrt2"], &["t"]))
            .node(node("Erf", &["t"], &["e"]))
            .node(node("Add", &["one", "e"], &["a"]))
            .node(node("Mul", &["a", "x"], &["m"]))
            .node(node("Mul", &["m", "half"], &["y"]))
            .output("y", DataType::Float, [2i64, 3]);
        if extra_reader {
            b = b
                .node(node("Relu", &["e"], &["z"]))
                .output("z", DataType::Float, [2i64, 3]);
        }
        Graph::lift(b.build()).unwrap()
    }

    #[test]
    fn finds_the_elementary_exact_gelu_in_either_operand_order() {
        let g = gelu_model(false);
        let chains = gelu_chains(&g);
        assert_eq!(chains.len(), 1);
        let c = chains.values().next().unwrap();
        assert_eq!(c.x, "x");
        assert_eq!(g.node(c.output_node).output, vec!["y".to_string()]);
        assert_eq!(c.inner.len(), 4);
    }

    #[test]
    fn the_sweep_differentiates_the_chain_as_one_noted_gelu() {
        use crate::analysis::shapes::infer;
        use crate::autodiff::rules::GELU_GRAD_NOTE;
        let mut g = gelu_model(false);
        g.add_node(node("ReduceSum", &["y"], &["loss"])).unwrap();
        let inference = infer(&g, &[("x".to_string(), vec![2, 3])]).unwrap();
        let before = g.node_count();
        crate::autodiff::differentiate(&mut g, "loss", &["x".to_string()], &inference).unwrap();
        let backward: Vec<_> = g.nodes().map(|(_, n)| n).skip(before).collect();
        let noted = backward
            .iter()
            .filter(|n| n.metadata_props.iter().any(|p| p.key() == GELU_GRAD_NOTE))
            .count();
        // One Gelu gradient (recomputing Φ from x: one Erf), not the chain's op-by-op rules (no Erf, no note).
        let count = |op: &str| backward.iter().filter(|n| n.op_type() == op).count();
        assert_eq!((noted, count("Erf"), count("Exp")), (1, 1, 1));
    }

    #[test]
    fn leaves_a_chain_whose_intermediate_is_read_elsewhere() {
        assert!(gelu_chains(&gelu_model(true)).is_empty());
    }
}
