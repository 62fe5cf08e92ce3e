//! Replaces the im2col weight gradients of a training step by this crate's own ONNX Runtime kernel
//! ([`super::ops`]), which reads X and dY in the blocked layout of the NCHWc convolutions.
//!
//! The autodiff marks the last node of each im2col weight gradient with a [`WeightGradNote`] (the forward
//! input X, the output gradient dY and the window). For every marked gradient whose channel counts are
//! multiples of the block, that node is replaced by ReorderInput(X), ReorderInput(dY) → ConvWeightGrad, reusing
//! the reorders the blocked convolutions already have, and the Transposes, Pad, Gather, GEMM and index tensor
//! that only fed it are removed.

use std::collections::HashMap;

use rl_passes::analysis::shapes::TensorType;
use rl_passes::autodiff::rules::{WeightGradNote, WEIGHT_GRAD_NOTE};
use rl_passes::autodiff::Attr;
use rl_passes::ir::Graph;
use rl_passes::onnx::{tensor_proto::DataType, NodeProto};
use rl_passes::pass::{Changed, Pass, PassError};

use super::nchwc::{node, NCHWC_DOMAIN};
use super::ops::{note, replace_by_own_op, CONV_WEIGHT_GRAD};

pub struct NchwcWeightGrads {
    block: usize,
    /// Types of the step model's values before any lowering (X and dY keep their names and shapes).
    types: HashMap<String, TensorType>,
}

impl NchwcWeightGrads {
    pub fn new(block: usize, types: HashMap<String, TensorType>) -> NchwcWeightGrads {
        NchwcWeightGrads { block, types }
    }

    /// The note of a node this pass can replace: a 2-D float gradient with both channel counts multiples of
    /// the block.
    fn eligible(&self, node: &NodeProto) -> Option<WeightGradNote> {
        let note: WeightGradNote = note(node, WEIGHT_GRAD_NOTE)?;
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32 && t.shape.len() == 4)
        };
        let (x, dy) = (float(&note.x)?, float(&note.dy)?);
        let fits = note.kernel.len() == 2
            && note.strides.len() == 2
            && note.dilations.len() == 2
            && note.pads_begin.len() == 2
            && node.output.len() == 1
            && x.shape[1].is_multiple_of(self.block)
            && dy.shape[1].is_multiple_of(self.block)
            && x.shape[0] == dy.shape[0];
        fits.then_some(note)
    }
}

/// The output of a ReorderInput of `value` already in the graph, or of a new one.
fn blocked(graph: &mut Graph, value: &str) -> Result<String, PassError> {
    let existing = graph.nodes().map(|(_, n)| n).find(|n| {
        n.op_type() == "ReorderInput"
            && n.domain() == NCHWC_DOMAIN
            && n.input.first().is_some_and(|i| i == value)
            && n.attribute
                .iter()
                .all(|a| a.name() != "channels_last" || a.i() == 0)
    });
    if let Some(n) = existing {
        return Ok(n.output[0].clone());
    }
    let name = graph.fresh_name(&format!("{value}/nchwc_blocked"));
    graph.add_node(node(
        "ReorderInput",
        NCHWC_DOMAIN,
        name.clone(),
        vec![value.to_owned()],
        name.clone(),
        vec![],
    ))?;
    Ok(name)
}

fn ints(values: &[usize]) -> Attr {
    Attr::Ints(values.iter().map(|&v| v as i64).collect())
}

impl Pass for NchwcWeightGrads {
    fn name(&self) -> &'static str {
        "nchwc-weight-grads"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        if !super::conv_weight_grad::fast_for(self.block) {
            return Ok(Changed::No);
        }
        let chosen: Vec<_> = graph
            .node_indices()
            .filter_map(|i| self.eligible(graph.node(i)).map(|note| (i, note)))
            .collect();
        if chosen.is_empty() {
            return Ok(Changed::No);
        }
        for (index, note) in chosen {
            let xb = blocked(graph, &note.x)?;
            let dyb = blocked(graph, &note.dy)?;
            // The reorders first: until its replacement is added, the graph would not link without the node.
            replace_by_own_op(
                graph,
                index,
                CONV_WEIGHT_GRAD,
                vec![xb, dyb],
                vec![],
                vec![
                    Attr::Int(self.block as i64).into_proto("block"),
                    ints(&note.kernel).into_proto("kernel_shape"),
                    ints(&note.strides).into_proto("strides"),
                    ints(&note.dilations).into_proto("dilations"),
                    ints(&note.pads_begin).into_proto("pads_begin"),
                ],
            )?;
        }
        Ok(Changed::Yes)
    }
}
