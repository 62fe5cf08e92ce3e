//! A simple constant folding, for graphs compiled for fixed input shapes.
//!
//! Two rewrites, both exact:
//! - `Identity` of an initializer: its consumers read the initializer directly (the node goes; an Identity
//!   whose output is a graph output or is read inside a subgraph stays);
//! - integer nodes whose every output is evaluated statically by [`crate::analysis::shapes::infer`] (`Shape`
//!   of a statically-shaped value and the `Gather`/`Concat`/`Unsqueeze`/… chains over it, integer `Constant`s)
//!   become int64/int32 initializers.
//!
//! Shapes depend on the input shapes the pass is given: the folded graph is valid for those shapes only.
//! Follow with [`super::dce::DeadCodeElimination`] to drop what the folding left unread.

use bytes::Bytes;

use crate::analysis::shapes::infer;
use crate::ir::{Graph, Producer, IMPLICIT_INPUT};
use crate::onnx::{tensor_proto::DataType, TensorProto};
use crate::pass::{Changed, Pass, PassError};

pub struct ConstantFolding {
    /// Shapes of the graph's data inputs.
    pub inputs: Vec<(String, Vec<usize>)>,
}

const INT64: i32 = DataType::Int64 as i32;
const INT32: i32 = DataType::Int32 as i32;

fn int_tensor(name: &str, dtype: i32, dims: &[usize], values: &[i64]) -> TensorProto {
    let raw: Vec<u8> = if dtype == INT32 {
        values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

impl ConstantFolding {
    fn fold_identities(&self, g: &mut Graph) -> Result<bool, PassError> {
        let outputs: Vec<String> = g.proto.output.iter().map(|o| o.name().to_owned()).collect();
        let identities: Vec<_> = g
            .nodes()
            .filter(|(_, n)| {
                n.op_type() == "Identity"
                    && (n.domain().is_empty() || n.domain() == "ai.onnx")
                    && n.input.len() == 1
                    && g.producer(&n.input[0]) == Some(Producer::Initializer)
                    && !outputs.contains(&n.output[0])
                    // A subgraph reading the output would need its body rewritten.
                    && g.readers(&n.output[0]).all(|(_, slot)| slot != IMPLICIT_INPUT)
            })
            .map(|(i, _)| i)
            .collect();
        if identities.is_empty() {
            return Ok(false);
        }
        for i in identities {
            let (src, out) = (g.node(i).input[0].clone(), g.node(i).output[0].clone());
            g.replace_all_uses(&out, &src)?;
            g.remove_node(i);
        }
        Ok(true)
    }

    fn fold_integers(&self, g: &mut Graph) -> Result<bool, PassError> {
        // A graph the shape analysis cannot type is left as it is: folding is an optimisation.
        let Ok(inf) = infer(g, &self.inputs) else {
            return Ok(false);
        };
        let mut folded = Vec::new();
        for (i, n) in g.nodes() {
            let plain = (n.domain().is_empty() || n.domain() == "ai.onnx")
                && n.attribute
                    .iter()
                    .all(|a| a.g.is_none() && a.graphs.is_empty());
            let outs: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
            if !plain || outs.is_empty() {
                continue;
            }
            let known = outs.iter().all(|o| {
                inf.values.contains_key(*o)
                    && inf
                        .types
                        .get(*o)
                        .is_some_and(|t| t.dtype == INT64 || t.dtype == INT32)
            });
            if known {
                folded.push(i);
            }
        }
        if folded.is_empty() {
            return Ok(false);
        }
        for i in folded {
            let node = g.remove_node(i).expect("a node of the graph");
            for o in node.output.iter().filter(|o| !o.is_empty()) {
                let t = &inf.types[o];
                g.add_initializer(int_tensor(o, t.dtype, &t.shape, &inf.values[o]));
            }
        }
        Ok(true)
    }
}

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "constant-folding"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let a = self.fold_identities(g)?;
        let b = self.fold_integers(g)?;
        Ok(if a || b { Changed::Yes } else { Changed::No })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::shapes::int_values;
    use crate::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    use crate::tensor::{f32_tensor, value_info};

    fn n(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn folds_shape_chains_and_identities_of_initializers() {
        let m = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(GraphProto {
                node: vec![
                    n("Identity", "id", &["w"], "w_id"),
                    n("Mul", "scale", &["x", "w_id"], "t"),
                    n("Shape", "shape", &["t"], "s"),
                    n("Reshape", "flat", &["t", "s"], "y"),
                ],
                input: vec![value_info("x", DataType::Float as i32, &[2, 3])],
                output: vec![value_info("y", DataType::Float as i32, &[2, 3])],
                initializer: vec![f32_tensor("w", &[3], &[1.0, 2.0, 3.0])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut g = Graph::lift(m).unwrap();
        let mut pass = ConstantFolding {
            inputs: vec![("x".into(), vec![2, 3])],
        };
        assert_eq!(pass.run(&mut g).unwrap(), Changed::Yes);
        let out = g.lower().unwrap().graph.unwrap();
        let ops: Vec<_> = out.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Mul", "Reshape"]);
        assert_eq!(out.node[0].input, ["x", "w"]);
        assert_eq!(int_values(&g.initializers()["s"]).unwrap(), [2, 3]);
        assert_eq!(pass.run(&mut g).unwrap(), Changed::No);
    }
}
