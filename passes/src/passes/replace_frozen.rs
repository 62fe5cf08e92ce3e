//! Replaces the parameters of each frozen unit by `a·P_prev + b·P_next`.
//!
//! Each frozen unit gets two scalar initializers, and each of its learnable tensors becomes the output of
//! `Add(Mul(a, P_prev), Mul(b, P_next))` under the tensor's own name, so no consumer changes. Storage that only
//! the replaced value used (the initializer, or its Identity/Cast/Constant chain) is removed. The plan is stored
//! in the model's metadata.

use crate::ir::{Graph, Producer};
use crate::onnx::{NodeProto, StringStringEntryProto};
use crate::pass::{Changed, Pass, PassError};
use crate::plan::{Plan, PLAN_KEY};
use crate::tensor::scalar;

pub struct ReplaceFrozenUnits {
    pub plan: Plan,
    pub init_a: f64,
    pub init_b: f64,
}

fn node(op: &str, name: String, inputs: [&str; 2], output: String) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_owned()),
        name: Some(name),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output],
        ..Default::default()
    }
}

/// Removes whatever produced `value` and, walking up, storage nothing else reads any more.
fn remove_storage(g: &mut Graph, value: &str) {
    let mut current = value.to_owned();
    loop {
        match g.producer(&current) {
            Some(Producer::Initializer) => {
                g.remove_initializer(&current);
                return;
            }
            Some(Producer::Node(index, _)) => {
                let Some(node) = g.remove_node(index) else {
                    return;
                };
                let Some(upstream) = node.input.first().filter(|i| !i.is_empty()).cloned() else {
                    return;
                };
                let still_read = g.dag.node_weights().any(|n| n.input.contains(&upstream))
                    || g.proto.output.iter().any(|o| o.name() == upstream);
                if still_read {
                    return;
                }
                current = upstream;
            }
            _ => return,
        }
    }
}

impl Pass for ReplaceFrozenUnits {
    fn name(&self) -> &'static str {
        "replace-frozen-units"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        if self.plan.frozen.is_empty() {
            return Ok(Changed::No);
        }
        for unit in &self.plan.frozen {
            g.add_initializer(scalar(&unit.a, unit.dtype, self.init_a));
            g.add_initializer(scalar(&unit.b, unit.dtype, self.init_b));
            let mut nodes = Vec::new();
            for p in &unit.params {
                for (what, v) in [("prev", &p.prev), ("next", &p.next)] {
                    if g.producer(v).is_none() {
                        return Err(PassError::Invalid {
                            pass: "replace-frozen-units",
                            message: format!(
                                "{what} tensor '{v}' of '{}' does not exist in the graph",
                                p.tensor
                            ),
                        });
                    }
                }
                remove_storage(g, &p.tensor);
                let (a_prev, b_next) = (
                    format!("{}/rl_a_prev", p.tensor),
                    format!("{}/rl_b_next", p.tensor),
                );
                nodes.push(node(
                    "Mul",
                    format!("{}/rl_mul_a", p.tensor),
                    [&unit.a, &p.prev],
                    a_prev.clone(),
                ));
                nodes.push(node(
                    "Mul",
                    format!("{}/rl_mul_b", p.tensor),
                    [&unit.b, &p.next],
                    b_next.clone(),
                ));
                nodes.push(node(
                    "Add",
                    format!("{}/rl_add", p.tensor),
                    [&a_prev, &b_next],
                    p.tensor.clone(),
                ));
            }
            g.add_nodes(nodes)?;
        }
        let plan_json = serde_json::to_string(&self.plan).expect("plans serialize");
        g.model.metadata_props.retain(|e| e.key() != PLAN_KEY);
        g.model
            .metadata_props
            .push(StringStringEntryProto::new(PLAN_KEY, plan_json));
        Ok(Changed::Yes)
    }
}
