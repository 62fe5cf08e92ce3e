//! Dead-code elimination: removes nodes none of whose outputs reach a graph output, then initializers that no
//! remaining node reads (directly or from inside its subgraphs) and that are neither graph inputs nor graph
//! outputs.

use std::collections::HashSet;

use crate::ir::Graph;
use crate::pass::{Changed, Pass, PassError};

pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dead-code-elimination"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let order = g.topological_order()?;
        let mut needed: HashSet<String> =
            g.proto.output.iter().map(|o| o.name().to_owned()).collect();
        let mut dead = Vec::new();
        for &i in order.iter().rev() {
            let node = g.node(i);
            if node
                .output
                .iter()
                .any(|o| !o.is_empty() && needed.contains(o))
            {
                needed.extend(node.input.iter().filter(|v| !v.is_empty()).cloned());
                // What its subgraphs (If/Loop bodies) read from this graph, initializers included.
                needed.extend(g.implicit_inputs(i).iter().cloned());
            } else {
                dead.push(i);
            }
        }
        let inputs: HashSet<String> = g.proto.input.iter().map(|i| i.name().to_owned()).collect();
        let unused: Vec<String> = g
            .initializers()
            .keys()
            .filter(|k| !needed.contains(*k) && !inputs.contains(*k))
            .cloned()
            .collect();
        Ok(if g.prune(dead, unused) {
            Changed::Yes
        } else {
            Changed::No
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
    use crate::tensor::f32_tensor;

    fn n(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn removes_unreachable_nodes_and_unread_initializers() {
        let m = ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    n("Mul", "keep", &["x", "w"], "y"),
                    n("Relu", "dead1", &["x"], "t"),
                    n("Mul", "dead2", &["t", "u"], "t2"),
                ],
                input: vec![vi("x")],
                output: vec![vi("y")],
                initializer: vec![f32_tensor("w", &[1], &[2.0]), f32_tensor("u", &[1], &[3.0])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut g = Graph::lift(m).unwrap();
        assert_eq!(DeadCodeElimination.run(&mut g).unwrap(), Changed::Yes);
        let out = g.lower().unwrap().graph.unwrap();
        let names: Vec<_> = out.node.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["keep"]);
        let inits: Vec<_> = out.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inits, ["w"]);
        assert_eq!(DeadCodeElimination.run(&mut g).unwrap(), Changed::No);
    }

    /// An If whose branches both return `captured`, read from the enclosing graph.
    fn if_reading(captured: &str, output: &str) -> NodeProto {
        let branch = |name: &str| crate::onnx::AttributeProto {
            name: Some(name.into()),
            g: Some(Box::new(GraphProto {
                name: Some(name.into()),
                node: vec![n("Identity", &format!("{name}/id"), &[captured], "r")],
                output: vec![vi("r")],
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut node = n("If", "pick", &["flag"], output);
        node.attribute = vec![branch("then_branch"), branch("else_branch")];
        node
    }

    #[test]
    fn keeps_initializers_read_only_inside_subgraphs() {
        let m = ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    if_reading("w", "picked"),
                    n("Mul", "keep", &["x", "picked"], "y"),
                    n("Relu", "dead", &["x"], "t"),
                ],
                input: vec![vi("x"), vi("flag")],
                output: vec![vi("y")],
                initializer: vec![f32_tensor("w", &[1], &[2.0]), f32_tensor("u", &[1], &[3.0])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut g = Graph::lift(m).unwrap();
        assert_eq!(DeadCodeElimination.run(&mut g).unwrap(), Changed::Yes);
        let out = g.lower().unwrap().graph.unwrap();
        let names: Vec<_> = out.node.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["pick", "keep"]);
        let inits: Vec<_> = out.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inits, ["w"]);
    }
}
