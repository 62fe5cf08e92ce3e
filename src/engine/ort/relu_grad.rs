//! Replaces each noted Relu gradient of a training step (`dY · Ceil(Min(Y, 1))`: three passes over an
//! activation) by this crate's one-pass `ReluGrad` kernel ([`super::ops`]).

use std::collections::HashMap;

use rl_passes::analysis::shapes::TensorType;
use rl_passes::autodiff::rules::{ReluGradNote, RELU_GRAD_NOTE};
use rl_passes::ir::Graph;
use rl_passes::onnx::tensor_proto::DataType;
use rl_passes::pass::{Changed, Pass, PassError};

use super::ops::{note, replace_by_own_op, RELU_GRAD};

pub struct FusedReluGrads {
    /// Types of the step model's values (Y and dY keep their names and shapes through the lowering).
    types: HashMap<String, TensorType>,
}

impl FusedReluGrads {
    pub fn new(types: HashMap<String, TensorType>) -> FusedReluGrads {
        FusedReluGrads { types }
    }
}

impl Pass for FusedReluGrads {
    fn name(&self) -> &'static str {
        "fused-relu-grads"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32)
        };
        let chosen: Vec<_> = graph
            .node_indices()
            .filter_map(|i| {
                let n = graph.node(i);
                let note: ReluGradNote = note(n, RELU_GRAD_NOTE)?;
                let (y, dy) = (float(&note.y)?, float(&note.dy)?);
                (y.shape == dy.shape && n.output.len() == 1).then_some((i, note))
            })
            .collect();
        if chosen.is_empty() {
            return Ok(Changed::No);
        }
        for (index, note) in chosen {
            replace_by_own_op(graph, index, RELU_GRAD, vec![note.y, note.dy], vec![])?;
        }
        Ok(Changed::Yes)
    }
}
