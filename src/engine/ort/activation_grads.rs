//! Replaces each noted activation gradient of a training step by one of this crate's one-pass kernels
//! ([`super::ops`]): a Relu's (`dY · Ceil(Min(Y, 1))`, three passes over an activation) by `ReluGrad(Y, dY)`,
//! an exact Gelu's (`dY·(Φ(X) + X·φ(X))`, about ten) by `GeluGrad(X, dY)`.

use std::collections::HashMap;

use rl_passes::analysis::shapes::TensorType;
use rl_passes::autodiff::rules::{GeluGradNote, ReluGradNote, GELU_GRAD_NOTE, RELU_GRAD_NOTE};
use rl_passes::ir::Graph;
use rl_passes::onnx::tensor_proto::DataType;
use rl_passes::onnx::NodeProto;
use rl_passes::pass::{Changed, Pass, PassError};

use super::ops::{note, replace_by_own_op, GELU_GRAD, RELU_GRAD};

pub struct FusedActivationGrads {
    /// Types of the step model's values (the kernels' inputs keep their names and shapes through the lowering).
    types: HashMap<String, TensorType>,
}

impl FusedActivationGrads {
    pub fn new(types: HashMap<String, TensorType>) -> FusedActivationGrads {
        FusedActivationGrads { types }
    }

    /// The kernel and its two inputs (the activation's output or input, then dY) for a noted node.
    fn kernel_for(&self, n: &NodeProto) -> Option<(&'static str, [String; 2])> {
        let (op, inputs) = if let Some(r) = note::<ReluGradNote>(n, RELU_GRAD_NOTE) {
            (RELU_GRAD, [r.y, r.dy])
        } else {
            let g: GeluGradNote = note(n, GELU_GRAD_NOTE)?;
            (GELU_GRAD, [g.x, g.dy])
        };
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32)
        };
        let (a, dy) = (float(&inputs[0])?, float(&inputs[1])?);
        (a.shape == dy.shape && n.output.len() == 1).then_some((op, inputs))
    }
}

impl Pass for FusedActivationGrads {
    fn name(&self) -> &'static str {
        "fused-activation-grads"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        let chosen: Vec<_> = graph
            .node_indices()
            .filter_map(|i| Some((i, self.kernel_for(graph.node(i))?)))
            .collect();
        if chosen.is_empty() {
            return Ok(Changed::No);
        }
        for (index, (op, inputs)) in chosen {
            replace_by_own_op(graph, index, op, inputs.to_vec(), vec![], vec![])?;
        }
        Ok(Changed::Yes)
    }
}
