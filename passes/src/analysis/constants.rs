//! Which values are constants: initializers and whatever is computed from constants alone.

use std::collections::HashSet;

use crate::ir::{Graph, IMPLICIT_INPUT};

/// Ops whose output is not a function of their inputs.
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Initializers plus outputs of deterministic nodes whose inputs (explicit and captured) are all constant.
/// These are parameters and their plumbing (Constant, Identity/Cast of an initializer, folded shapes), not data
/// flow; layer discovery sets them aside.
pub fn constant_values(g: &Graph) -> HashSet<String> {
    let mut constants: HashSet<String> = g.initializers().keys().cloned().collect();
    let order = g.topological_order().unwrap_or_default();
    for index in order {
        let node = g.node(index);
        if NONDETERMINISTIC.contains(&node.op_type())
            || !node.domain().is_empty() && node.domain() != "ai.onnx"
        {
            continue;
        }
        let explicit_constant = node
            .input
            .iter()
            .all(|i| i.is_empty() || constants.contains(i));
        let has_implicit = g
            .dag()
            .edges_directed(index, petgraph::Direction::Incoming)
            .any(|e| e.weight().to_slot == IMPLICIT_INPUT)
            || node
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty());
        if explicit_constant && !has_implicit {
            constants.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    constants
}

/// Whether every output of the node is constant.
pub fn is_constant_node(
    g: &Graph,
    index: petgraph::stable_graph::NodeIndex,
    constants: &HashSet<String>,
) -> bool {
    g.node(index)
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .all(|o| constants.contains(o))
}
