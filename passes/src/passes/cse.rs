//! Common-subexpression elimination: a node computing what an earlier node computes (same domain, op type,
//! attributes and inputs) goes, and its readers read the earlier node's outputs.
//!
//! Emitters make their own constants (every reduction its axes, every mean its count), so small initializers
//! of equal type, shape and bytes are first made one value; without that, two copies of the same computation
//! never share inputs. Kept whatever they compute: nodes of random ops and Dropout (each draws anew), of other
//! domains (semantics unknown here), with subgraphs, or writing a graph output; initializers that are graph
//! inputs (a caller may override them), graph outputs or read from inside a subgraph.
//! Follow with [`super::dce::DeadCodeElimination`] to drop what the merging left unread.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use prost::Message;

use crate::ir::{Graph, NodeIndex, IMPLICIT_INPUT};
use crate::onnx::{NodeProto, TensorProto};
use crate::pass::{Changed, Pass, PassError};

pub struct CommonSubexpressionElimination;

/// Initializers up to this many elements are compared by value (axes, shapes, scalars); larger ones are
/// weights, where equal copies are rare and hashing them costs.
const SMALL_INITIALIZER: u64 = 64;

/// What makes two nodes compute the same values.
#[derive(PartialEq, Eq, Hash)]
struct NodeKey {
    op: String,
    inputs: Vec<String>,
    /// Encoded attributes, sorted by name.
    attributes: Vec<Vec<u8>>,
    /// Which outputs are present (an omitted optional output is not computed).
    outputs: Vec<bool>,
}

fn default_domain(n: &NodeProto) -> bool {
    n.domain().is_empty() || n.domain() == "ai.onnx"
}

fn mergeable(n: &NodeProto) -> bool {
    let random = matches!(
        n.op_type(),
        "RandomNormal"
            | "RandomNormalLike"
            | "RandomUniform"
            | "RandomUniformLike"
            | "Multinomial"
            | "Bernoulli"
            | "Dropout"
    );
    default_domain(n)
        && !random
        && !n.output.is_empty()
        && n.attribute
            .iter()
            .all(|a| a.g.is_none() && a.graphs.is_empty())
}

/// A tensor's type, shape and data, without its name.
fn tensor_key(t: &TensorProto) -> Vec<u8> {
    let mut t = t.clone();
    t.name = None;
    t.doc_string = None;
    t.encode_to_vec()
}

fn node_key(n: &NodeProto) -> NodeKey {
    let mut inputs = n.input.clone();
    // Exactly commutative in IEEE arithmetic, also under broadcasting.
    if matches!(n.op_type(), "Add" | "Mul") && inputs.len() == 2 {
        inputs.sort();
    }
    let mut attributes: Vec<_> = n.attribute.iter().collect();
    attributes.sort_by_key(|a| a.name());
    let attributes = attributes
        .into_iter()
        .map(|a| {
            let mut a = a.clone();
            a.doc_string = None;
            if let Some(t) = &mut a.t {
                // A Constant's tensor carries a name of its own.
                t.name = None;
            }
            a.encode_to_vec()
        })
        .collect();
    NodeKey {
        op: n.op_type().to_owned(),
        inputs,
        attributes,
        outputs: n.output.iter().map(|o| !o.is_empty()).collect(),
    }
}

impl Pass for CommonSubexpressionElimination {
    fn name(&self) -> &'static str {
        "common-subexpression-elimination"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let graph_outputs: HashSet<String> =
            g.proto.output.iter().map(|o| o.name().to_owned()).collect();
        let graph_inputs: HashSet<String> =
            g.proto.input.iter().map(|i| i.name().to_owned()).collect();
        let read_by_subgraphs: HashSet<String> = g
            .node_indices()
            .flat_map(|i| g.implicit_inputs(i).iter().cloned())
            .collect();

        // Initializer → the equal one its readers read instead.
        let mut canonical: Vec<(String, String)> = Vec::new();
        let mut first_with_value: HashMap<Vec<u8>, String> = HashMap::new();
        let mut duplicate_initializers = Vec::new();
        for (name, t) in g.initializers() {
            if crate::tensor::numel(t) > SMALL_INITIALIZER
                || !t.external_data.is_empty()
                || graph_inputs.contains(name)
                || graph_outputs.contains(name)
                || read_by_subgraphs.contains(name)
            {
                continue;
            }
            match first_with_value.entry(tensor_key(t)) {
                Entry::Occupied(e) => {
                    canonical.push((name.clone(), e.get().clone()));
                    duplicate_initializers.push(name.clone());
                }
                Entry::Vacant(e) => {
                    e.insert(name.clone());
                }
            }
        }

        for (name, kept) in &canonical {
            g.replace_all_uses(name, kept)?;
        }

        // In topological order every input is canonical before its reader is compared: a duplicate's readers
        // come after it and are rewired to the kept node's outputs at once.
        let mut first_computing: HashMap<NodeKey, NodeIndex> = HashMap::new();
        let mut duplicate_nodes = Vec::new();
        for i in g.topological_order()? {
            let n = g.node(i);
            if !mergeable(n) {
                continue;
            }
            match first_computing.entry(node_key(n)) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(e) => {
                    let writes_graph_output = n.output.iter().any(|o| graph_outputs.contains(o));
                    let read_by_subgraph = n
                        .output
                        .iter()
                        .any(|o| g.readers(o).any(|(_, slot)| slot == IMPLICIT_INPUT));
                    if writes_graph_output || read_by_subgraph {
                        continue;
                    }
                    let kept = g.node(*e.get()).output.clone();
                    let outputs = n.output.clone();
                    for (o, k) in outputs.iter().zip(&kept) {
                        if !o.is_empty() {
                            g.replace_all_uses(o, k)?;
                        }
                    }
                    duplicate_nodes.push(i);
                }
            }
        }

        Ok(if g.prune(duplicate_nodes, duplicate_initializers) {
            Changed::Yes
        } else {
            Changed::No
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{
        attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto,
        ModelProto, NodeProto,
    };
    use crate::tensor::{f32_tensor, scalar, value_info};

    const F32: i32 = DataType::Float as i32;

    fn n(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}/{output}")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn with_int(mut node: NodeProto, name: &str, i: i64) -> NodeProto {
        node.attribute.push(AttributeProto {
            name: Some(name.into()),
            i: Some(i),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        });
        node
    }

    fn axes(name: &str, values: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, outputs: &[&str]) -> Graph {
        let m = ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                input: vec![value_info("x", F32, &[2, 3])],
                output: outputs.iter().map(|o| value_info(o, F32, &[])).collect(),
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        };
        Graph::lift(m).unwrap()
    }

    fn ops(g: &Graph) -> Vec<(String, Vec<String>)> {
        let out = g.lower().unwrap().graph.unwrap();
        out.node
            .iter()
            .map(|n| (n.output[0].clone(), n.input.clone()))
            .collect()
    }

    #[test]
    fn merges_repeated_computations_over_equal_constants() {
        // Two emitters' means of x over axis 1, each with its own axes and count constants, then their
        // difference: one mean remains, read twice.
        let mut g = graph(
            vec![
                with_int(n("ReduceSum", &["x", "axes_a"], "sum_a"), "keepdims", 1),
                n("Div", &["sum_a", "count_a"], "mean_a"),
                with_int(n("ReduceSum", &["x", "axes_b"], "sum_b"), "keepdims", 1),
                n("Div", &["sum_b", "count_b"], "mean_b"),
                n("Sub", &["mean_a", "mean_b"], "y"),
            ],
            vec![
                axes("axes_a", &[1]),
                axes("axes_b", &[1]),
                scalar("count_a", F32, 3.0),
                scalar("count_b", F32, 3.0),
            ],
            &["y"],
        );
        let mut cse = CommonSubexpressionElimination;
        assert_eq!(cse.run(&mut g).unwrap(), Changed::Yes);
        assert_eq!(
            ops(&g),
            [
                (
                    "sum_a".to_owned(),
                    vec!["x".to_owned(), "axes_a".to_owned()]
                ),
                ("mean_a".into(), vec!["sum_a".into(), "count_a".into()]),
                ("y".into(), vec!["mean_a".into(), "mean_a".into()]),
            ]
        );
        let inits: Vec<&String> = g.initializers().keys().collect();
        assert_eq!(inits, ["axes_a", "count_a"]);
        assert_eq!(cse.run(&mut g).unwrap(), Changed::No);
    }

    #[test]
    fn keeps_nodes_that_differ_in_attributes_constants_or_operand_order() {
        let nodes = vec![
            with_int(n("ReduceSum", &["x", "axes_a"], "keep"), "keepdims", 1),
            with_int(n("ReduceSum", &["x", "axes_a"], "drop"), "keepdims", 0),
            with_int(
                n("ReduceSum", &["x", "axes_b"], "other_axis"),
                "keepdims",
                1,
            ),
            n("Div", &["x", "two"], "half"),
            n("Div", &["x", "three"], "third"),
            n("Sub", &["x", "half"], "d1"),
            n("Sub", &["half", "x"], "d2"),
            n("Mul", &["x", "half"], "m1"),
            n("Mul", &["half", "x"], "m2"),
            n(
                "Concat",
                &["keep", "other_axis", "d1", "d2", "m1", "m2", "third"],
                "y",
            ),
            n("Concat", &["drop"], "z"),
        ];
        let mut g = graph(
            nodes,
            vec![
                axes("axes_a", &[1]),
                axes("axes_b", &[0]),
                scalar("two", F32, 2.0),
                scalar("three", F32, 3.0),
            ],
            &["y", "z"],
        );
        assert_eq!(
            CommonSubexpressionElimination.run(&mut g).unwrap(),
            Changed::Yes
        );
        let names: Vec<String> = ops(&g).into_iter().map(|(o, _)| o).collect();
        // Only the commuted Mul goes.
        assert_eq!(
            names,
            [
                "keep",
                "drop",
                "other_axis",
                "half",
                "third",
                "d1",
                "d2",
                "m1",
                "y",
                "z"
            ]
        );
        assert_eq!(g.node_count(), 10);
    }

    #[test]
    fn keeps_random_ops_overridable_initializers_and_graph_outputs() {
        let mut g = graph(
            vec![
                n("RandomUniformLike", &["x"], "r1"),
                n("RandomUniformLike", &["x"], "r2"),
                n("Mul", &["x", "w1"], "p1"),
                n("Mul", &["x", "w2"], "p2"),
                n("Relu", &["x"], "y1"),
                n("Relu", &["x"], "y2"),
                n("Concat", &["r1", "r2", "p1", "p2"], "y"),
            ],
            vec![
                f32_tensor("w1", &[1], &[2.0]),
                f32_tensor("w2", &[1], &[2.0]),
            ],
            &["y", "y1", "y2"],
        );
        // w2 is an input with a default: a caller may feed another value.
        g.proto.input.push(value_info("w2", F32, &[1]));
        assert_eq!(
            CommonSubexpressionElimination.run(&mut g).unwrap(),
            Changed::No
        );
        assert_eq!(g.node_count(), 7);
        assert_eq!(g.initializers().len(), 2);
    }
}
