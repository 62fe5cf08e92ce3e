//! Folds each Replacement Learning integration subgraph back into a stored tensor.
//!
//! For every replaced tensor of the plan, `Add(Mul(a, P_prev), Mul(b, P_next))` is evaluated from the current
//! (trained) values of a, b and the neighbours and stored as an initializer under the tensor's own name; the
//! integration nodes and the scalars go, and so does the plan metadata. The result is a plain inference model
//! with the original structure.

use crate::contract::{self, IntegrationNames, IntegrationNode};
use crate::ir::{Graph, Producer};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::TensorProto;
use crate::pass::{Changed, Pass, PassError};
use crate::tensor::{f32_tensor, f32_values};

pub struct BakeIntegrations;

fn invalid(message: String) -> PassError {
    PassError::Invalid {
        pass: "bake",
        message,
    }
}

fn stored_f32(g: &Graph, name: &str, role: &str, tensor: &str) -> Result<Vec<f32>, PassError> {
    let t = g.initializer(name).ok_or_else(|| {
        invalid(format!("{role} '{name}' of '{tensor}' is not a stored tensor; bake needs a model whose parameters are initializers"))
    })?;
    f32_values(t).ok_or_else(|| {
        invalid(format!(
            "{role} '{name}' is not float32; bake supports float32 models"
        ))
    })
}

impl Pass for BakeIntegrations {
    fn name(&self) -> &'static str {
        "bake-integrations"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let plan = match contract::read_plan(&g.model) {
            Ok(None) => return Ok(Changed::No),
            Ok(Some(plan)) => plan,
            Err(e) => return Err(invalid(e.to_string())),
        };
        let mut baked: Vec<TensorProto> = Vec::new();
        for unit in &plan.frozen {
            let a = stored_f32(g, &unit.a, "scalar a", &unit.unit)?;
            let b = stored_f32(g, &unit.b, "scalar b", &unit.unit)?;
            let (&[a], &[b]) = (a.as_slice(), b.as_slice()) else {
                return Err(invalid(format!(
                    "'{}' and '{}' must be scalars",
                    unit.a, unit.b
                )));
            };
            for p in &unit.params {
                let Some(Producer::Node(add, _)) = g.producer(&p.tensor) else {
                    return Err(invalid(format!(
                        "'{}' is not produced by an integration subgraph",
                        p.tensor
                    )));
                };
                if g.node(add).name() != IntegrationNode::Add.name(&p.tensor) {
                    return Err(invalid(format!(
                        "'{}' is produced by node '{}', not by its integration subgraph",
                        p.tensor,
                        g.node(add).name()
                    )));
                }
                let prev = stored_f32(g, &p.prev, "prev tensor", &p.tensor)?;
                let next = stored_f32(g, &p.next, "next tensor", &p.tensor)?;
                if prev.len() != next.len() {
                    return Err(invalid(format!(
                        "'{}' and '{}' differ in size",
                        p.prev, p.next
                    )));
                }
                // Same float32 operations, in the same order, as the integration subgraph computes.
                let values: Vec<f32> = prev.iter().zip(&next).map(|(x, y)| a * x + b * y).collect();
                let dims: Vec<i64> = p.shape.clone();
                baked.push(f32_tensor(&p.tensor, &dims, &values));
            }
        }
        for t in &baked {
            let names = IntegrationNames::of(t.name());
            let indices: Vec<_> = g
                .nodes()
                .filter(|(_, n)| names.nodes().contains(&n.name()))
                .map(|(i, _)| i)
                .collect();
            for i in indices {
                g.remove_node(i);
            }
        }
        for unit in &plan.frozen {
            for scalar in [&unit.a, &unit.b] {
                let still_read = g.readers(scalar).next().is_some();
                if !still_read {
                    g.remove_initializer(scalar);
                }
            }
        }
        for t in baked {
            debug_assert_eq!(t.data_type(), DataType::Float as i32);
            g.add_initializer(t);
        }
        contract::remove_plan(&mut g.model);
        Ok(Changed::Yes)
    }
}
