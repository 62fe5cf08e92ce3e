//! The form in which training and eval models run on ONNX Runtime's CPU provider: standard ONNX models
//! lowered to faster kernels that exist only there, ONNX Runtime's blocked-layout ones and this crate's own.

use rl_passes::analysis::shapes::infer_shapes;
use rl_passes::ir::Graph;
use rl_passes::onnx::ModelProto;
use rl_passes::pass::{Changed, Driver};
use rl_passes::passes::DeadCodeElimination;

use super::activation_grads::FusedActivationGrads;
use super::adamw::FusedAdamW;
use super::layer_norm::FusedLayerNormGrads;
use super::nchwc::{block_size, NchwcConvs};
use super::weight_grad::NchwcWeightGrads;

/// `model` with its eligible convolutions in this CPU's blocked layout ([`NchwcConvs`]), their weight gradients
/// computed from that layout ([`NchwcWeightGrads`]), its Relu, Gelu and LayerNormalization gradients and AdamW
/// updates fused ([`FusedActivationGrads`], [`FusedLayerNormGrads`], [`FusedAdamW`]); `None`
/// when nothing was eligible. Sessions of the result need this crate's kernels
/// ([`super::ops::commit_with_own_ops`]). Symbolic input dimensions are taken as 1: eligibility depends on
/// channel counts and on shapes being equal only.
pub fn lower_for_cpu(model: &ModelProto) -> anyhow::Result<Option<ModelProto>> {
    let mut graph = Graph::lift(model.clone())?;
    // Of the standard model, once for all the passes: the lowered values keep their names and shapes, but the
    // ops of the lowered graph are beyond shape inference.
    let types = infer_shapes(&graph, &crate::inputs::input_shapes(model, 1))?;
    let mut driver = Driver::new();
    let mut changed = Changed::No;
    if let Some(block) = block_size() {
        if driver.run(&mut graph, &mut NchwcConvs::new(block, types.clone()))? == Changed::Yes {
            changed = Changed::Yes;
            // After the convolutions, whose reorders of X and dY the weight gradients reuse.
            driver.run(&mut graph, &mut NchwcWeightGrads::new(block, types.clone()))?;
        }
    }
    if driver.run(&mut graph, &mut FusedActivationGrads::new(types.clone()))? == Changed::Yes {
        changed = Changed::Yes;
    }
    if driver.run(&mut graph, &mut FusedLayerNormGrads::new(types.clone()))? == Changed::Yes {
        changed = Changed::Yes;
    }
    if driver.run(&mut graph, &mut FusedAdamW::new(types))? == Changed::Yes {
        changed = Changed::Yes;
    }
    Ok(match changed {
        Changed::Yes => {
            // What only fed the replaced subgraphs (the im2col patches, the Relu masks, the Gelu derivatives, AdamW's temporaries).
            driver.run(&mut graph, &mut DeadCodeElimination)?;
            Some(graph.lower()?)
        }
        Changed::No => None,
    })
}
