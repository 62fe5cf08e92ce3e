//! Replaces each noted AdamW update of a training step (about fifteen elementwise ops per parameter, each a
//! pass over the parameter's size) by this crate's one-pass `AdamWStep` kernel ([`super::ops`]), which reads
//! `p, g, m, v` once and writes `p', m', v'`, rounding every operation as the standard ops do.

use std::collections::HashMap;

use rl_passes::analysis::shapes::TensorType;
use rl_passes::autodiff::Attr;
use rl_passes::ir::Graph;
use rl_passes::onnx::tensor_proto::DataType;
use rl_passes::onnx::AttributeProto;
use rl_passes::pass::{Changed, Pass, PassError};
use rl_passes::training::{next_name, AdamWNote, ADAMW_NOTE};

use super::ops::{note, replace_by_own_op, ADAMW_STEP_OP};

pub struct FusedAdamW {
    /// Types of the step model's values.
    types: HashMap<String, TensorType>,
}

impl FusedAdamW {
    pub fn new(types: HashMap<String, TensorType>) -> FusedAdamW {
        FusedAdamW { types }
    }
}

fn float_attr(name: &str, value: f64) -> AttributeProto {
    Attr::Float(value as f32).into_proto(name)
}

impl Pass for FusedAdamW {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32)
        };
        let scalar = |v: &str| float(v).is_some_and(|t| t.shape.is_empty());
        let chosen: Vec<_> = graph
            .node_indices()
            .filter_map(|i| {
                let n = graph.node(i);
                let note: AdamWNote = note(n, ADAMW_NOTE)?;
                let p = float(&note.param)?;
                let same = [&note.grad, &note.exp_avg, &note.exp_avg_sq]
                    .iter()
                    .all(|v| float(v).is_some_and(|t| t.shape == p.shape));
                let scalars = [&note.lr, &note.bias_correction1, &note.bias_correction2]
                    .iter()
                    .all(|v| scalar(v));
                (same && scalars && n.output.len() == 1).then_some((i, note))
            })
            .collect();
        let mut changed = Changed::No;
        for (index, note) in chosen {
            let (m_next, v_next) = (next_name(&note.exp_avg), next_name(&note.exp_avg_sq));
            let (Some(m_node), Some(v_node)) =
                (graph.producer_node(&m_next), graph.producer_node(&v_next))
            else {
                continue;
            };
            if [m_node, v_node]
                .iter()
                .any(|&i| graph.node(i).output.len() != 1)
            {
                continue;
            }
            // The node indices are stable: removing these leaves the other chosen ones valid.
            graph.remove_node(m_node);
            graph.remove_node(v_node);
            replace_by_own_op(
                graph,
                index,
                ADAMW_STEP_OP,
                vec![
                    note.param,
                    note.grad,
                    note.exp_avg,
                    note.exp_avg_sq,
                    note.lr,
                    note.bias_correction1,
                    note.bias_correction2,
                ],
                vec![m_next, v_next],
                vec![
                    float_attr("beta1", note.beta1),
                    float_attr("one_minus_beta1", 1.0 - note.beta1),
                    float_attr("beta2", note.beta2),
                    float_attr("one_minus_beta2", 1.0 - note.beta2),
                    float_attr("eps", note.eps),
                    float_attr("weight_decay", note.weight_decay),
                ],
            )?;
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}
