//! Replaces the parameters of each frozen unit by `a·P_prev + b·P_next`.
//!
//! Each frozen unit gets two scalar initializers, and each of its learnable tensors becomes the output of
//! `Add(Mul(a, P_prev), Mul(b, P_next))` under the tensor's own name, so no consumer changes. Storage that only
//! the replaced value used (the initializer, or its Identity/Cast/Constant chain) is removed. The plan is stored
//! in the model's metadata.

use crate::contract::{self, IntegrationNames};
use crate::ir::{Graph, Producer};
use crate::onnx::NodeProto;
use crate::pass::{Changed, Pass, PassError};
use crate::plan::Plan;
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
                let still_read = g.readers(&upstream).next().is_some()
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
                let IntegrationNames {
                    mul_a,
                    mul_b,
                    add,
                    a_prev,
                    b_next,
                } = IntegrationNames::of(&p.tensor);
                nodes.push(node("Mul", mul_a, [&unit.a, &p.prev], a_prev.clone()));
                nodes.push(node("Mul", mul_b, [&unit.b, &p.next], b_next.clone()));
                nodes.push(node("Add", add, [&a_prev, &b_next], p.tensor.clone()));
            }
            g.add_nodes(nodes)?;
        }
        contract::write_plan(&mut g.model, &self.plan);
        Ok(Changed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::units::{discover_units, UnitKind};
    use crate::onnx::{GraphProto, ModelProto, ValueInfoProto};
    use crate::plan::{make_plan, PlanError, PlanOptions};
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

    /// Four residual blocks `h = h + h·W_k`, block k reading its weight as `weights[k]`.
    fn residual_chain(
        weights: [&str; 4],
        extra_nodes: Vec<NodeProto>,
        initializers: &[&str],
    ) -> Graph {
        let mut nodes = extra_nodes;
        let mut h = "x".to_owned();
        for (k, w) in weights.iter().enumerate() {
            let (m, out) = (
                format!("m{k}"),
                if k == 3 {
                    "y".to_owned()
                } else {
                    format!("h{k}")
                },
            );
            nodes.push(n("MatMul", &format!("block{k}.matmul"), &[&h, w], &m));
            nodes.push(n("Add", &format!("block{k}.add"), &[&h, &m], &out));
            h = out;
        }
        let vi = |name: &str| ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                node: nodes,
                input: vec![vi("x")],
                output: vec![vi("y")],
                initializer: initializers
                    .iter()
                    .map(|i| f32_tensor(i, &[4, 4], &[0.25; 16]))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Graph::lift(model).unwrap()
    }

    #[test]
    fn identity_shared_constant_is_one_parameter_per_unit() {
        // Exporters de-duplicate equal constants: blocks 1 and 2 read one initializer through separate Identities.
        let ids = vec![
            n("Identity", "dedup1", &["shared"], "w1"),
            n("Identity", "dedup2", &["shared"], "w2"),
        ];
        let mut g = residual_chain(["w0", "w1", "w2", "w3"], ids, &["w0", "shared", "w3"]);
        let analysis = discover_units(&g, UnitKind::Block);
        assert_eq!(analysis.stages.iter().map(|s| s.units.len()).max(), Some(4));
        assert!(analysis.tied.is_empty(), "{:?}", analysis.tied);
        let plan = make_plan(
            &g,
            &analysis,
            &PlanOptions {
                unit: UnitKind::Block,
                every: 2,
                offset: 0,
            },
        )
        .unwrap();
        assert_eq!(plan.frozen.len(), 1);
        assert_eq!(plan.frozen[0].params[0].tensor, "w1");
        assert_eq!(
            (
                plan.frozen[0].params[0].prev.as_str(),
                plan.frozen[0].params[0].next.as_str()
            ),
            ("w0", "w2")
        );
        // The shared initializer stays (block 2 still reads it): nothing is removed from the count.
        assert_eq!(plan.params_after, plan.params_before + 2);
        ReplaceFrozenUnits {
            plan,
            init_a: 0.5,
            init_b: 0.5,
        }
        .run(&mut g)
        .unwrap();
        let producer = g
            .producer_node("w1")
            .map(|i| g.node(i).op_type().to_owned());
        assert_eq!(
            producer.as_deref(),
            Some("Add"),
            "w1 is now made by the integration subgraph"
        );
        assert!(g.initializers().contains_key("shared"));
        assert!(g.nodes().any(|(_, n)| n.name() == "dedup2"));
        assert!(!g.nodes().any(|(_, n)| n.name() == "dedup1"));
        g.lower().unwrap();
    }

    #[test]
    fn value_read_directly_by_two_units_is_tied_and_never_replaced() {
        let g = residual_chain(
            ["w0", "tied", "tied", "w3"],
            Vec::new(),
            &["w0", "tied", "w3"],
        );
        let analysis = discover_units(&g, UnitKind::Block);
        assert_eq!(analysis.tied.len(), 1);
        assert_eq!(analysis.tied[0].tensor, "tied");
        assert_eq!(analysis.tied[0].units.len(), 2);
        let err = make_plan(
            &g,
            &analysis,
            &PlanOptions {
                unit: UnitKind::Block,
                every: 2,
                offset: 0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::NothingFreezable { .. }));
    }

    #[test]
    fn replaced_initializer_is_removed_and_the_plan_stored() {
        let mut g = residual_chain(
            ["w0", "w1", "w2", "w3"],
            Vec::new(),
            &["w0", "w1", "w2", "w3"],
        );
        let analysis = discover_units(&g, UnitKind::Block);
        let plan = make_plan(
            &g,
            &analysis,
            &PlanOptions {
                unit: UnitKind::Block,
                every: 2,
                offset: 0,
            },
        )
        .unwrap();
        assert_eq!(plan.params_before, 64);
        assert_eq!(plan.params_after, 64 - 16 + 2);
        ReplaceFrozenUnits {
            plan,
            init_a: 1.0,
            init_b: 0.0,
        }
        .run(&mut g)
        .unwrap();
        assert!(!g.initializers().contains_key("w1"));
        assert!(contract::read_plan(&g.model).unwrap().is_some());
        let ops: Vec<String> = g
            .lower()
            .unwrap()
            .graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type().to_owned())
            .collect();
        assert_eq!(ops.iter().filter(|o| *o == "Mul").count(), 2);
    }
}
