//! Canonical signatures: two pieces of graph with equal signatures compute the same function of their entry
//! values, up to the values of their parameters.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use petgraph::stable_graph::NodeIndex;
use sha2::{Digest, Sha256};

use crate::analysis::params::{is_learnable, root_tensor, trace_param};
use crate::ir::Graph;
use crate::onnx::{AttributeProto, TensorProto};
use crate::tensor::{describe, numel};

/// Constants with at most this many elements are part of a signature by value (shapes, axes, scales);
/// larger ones by type and shape only (weights).
const BY_VALUE_MAX: u64 = 64;

fn tensor_key(t: &TensorProto) -> String {
    if numel(t) <= BY_VALUE_MAX {
        let mut h = Sha256::new();
        h.update(t.raw_data.as_deref().unwrap_or_default());
        for v in &t.float_data {
            h.update(v.to_le_bytes());
        }
        for v in &t.int64_data {
            h.update(v.to_le_bytes());
        }
        for v in &t.int32_data {
            h.update(v.to_le_bytes());
        }
        for v in &t.double_data {
            h.update(v.to_le_bytes());
        }
        let d = h.finalize();
        format!(
            "{}={:02x}{:02x}{:02x}{:02x}",
            describe(t),
            d[0],
            d[1],
            d[2],
            d[3]
        )
    } else {
        describe(t)
    }
}

fn attribute_key(a: &AttributeProto) -> String {
    let mut s = format!("{}=", a.name());
    if let Some(f) = a.f {
        let _ = write!(s, "f{f:?}");
    }
    if let Some(i) = a.i {
        let _ = write!(s, "i{i}");
    }
    if let Some(b) = &a.s {
        let _ = write!(s, "s{}", String::from_utf8_lossy(b));
    }
    if let Some(t) = &a.t {
        let _ = write!(s, "t{}", tensor_key(t));
    }
    if let Some(g) = &a.g {
        let _ = write!(s, "g{}", g.node.len());
    }
    if !a.floats.is_empty() {
        let _ = write!(s, "fs{:?}", a.floats);
    }
    if !a.ints.is_empty() {
        let _ = write!(s, "is{:?}", a.ints);
    }
    for b in &a.strings {
        let _ = write!(s, "ss{}", String::from_utf8_lossy(b));
    }
    for t in &a.tensors {
        let _ = write!(s, "ts{}", tensor_key(t));
    }
    s
}

/// The canonical text of a group of nodes (given in topological order). Inputs are described by origin:
/// a parameter by dtype and shape, a small constant by value, a value made inside the group by its
/// producer's position, anything else as an entry.
pub fn signature(g: &Graph, nodes: &[NodeIndex], constants: &HashSet<String>) -> String {
    let position: HashMap<NodeIndex, usize> =
        nodes.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let mut out = String::new();
    for &index in nodes {
        let node = g.node(index);
        let _ = write!(out, "{}:{}(", node.domain(), node.op_type());
        let mut attrs: Vec<String> = node.attribute.iter().map(attribute_key).collect();
        attrs.sort();
        out.push_str(&attrs.join(","));
        out.push_str(")[");
        for (slot, input) in node.input.iter().enumerate() {
            if slot > 0 {
                out.push(',');
            }
            if input.is_empty() {
                out.push('_');
            } else if constants.contains(input) {
                match trace_param(g, input).and_then(|p| root_tensor(g, &p).map(|t| (p, t))) {
                    Some((p, t)) if is_learnable(t) => {
                        let _ = write!(
                            out,
                            "P:{}",
                            crate::tensor::dtype_name(p.dtype).unwrap_or("?")
                        );
                        let _ = write!(out, "{:?}", p.dims);
                    }
                    Some((_, t)) => {
                        let _ = write!(out, "C:{}", tensor_key(t));
                    }
                    None => out.push_str("C:computed"),
                }
            } else if let Some(p) = g.producer_node(input).and_then(|p| position.get(&p)) {
                let slot = g
                    .node(g.producer_node(input).expect("checked"))
                    .output
                    .iter()
                    .position(|o| o == input);
                let _ = write!(out, "{}.{}", p, slot.unwrap_or(0));
            } else {
                out.push_str("in");
            }
        }
        out.push_str("];");
    }
    out
}

/// A short stable identifier for a signature, for display.
pub fn short_id(signature: &str) -> String {
    let d = Sha256::digest(signature.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}
