//! Replaces each noted LayerNormalization gradient of a training step (the statistics recomputed from X, then
//! about twenty elementwise ops and reductions for dX, dScale and dB) by this crate's `LayerNormGrad` kernel
//! ([`super::ops`]), one pass over the rows; and that kernel's arithmetic ([`rows`]).

use std::collections::HashMap;

use rl_passes::analysis::shapes::TensorType;
use rl_passes::autodiff::rules::{LayerNormGradNote, LAYER_NORM_GRAD_NOTE};
use rl_passes::autodiff::Attr;
use rl_passes::ir::Graph;
use rl_passes::onnx::tensor_proto::DataType;
use rl_passes::onnx::NodeProto;
use rl_passes::pass::{Changed, Pass, PassError};

use super::ops::{note, replace_by_own_op, LAYER_NORM_GRAD};

pub struct FusedLayerNormGrads {
    /// Types of the step model's values.
    types: HashMap<String, TensorType>,
}

impl FusedLayerNormGrads {
    pub fn new(types: HashMap<String, TensorType>) -> FusedLayerNormGrads {
        FusedLayerNormGrads { types }
    }

    /// Whether the kernel computes what the note describes: float32 X and dY of one shape, Scale (and the
    /// gradients) exactly the normalized shape, no broadcast, and rows to sum over (`axis` ≥ 1: over all axes,
    /// B's gradient would be dY itself, not a value of its own to replace).
    fn eligible(&self, n: &NodeProto, note: &LayerNormGradNote) -> bool {
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32)
        };
        let (Some(x), Some(dy), Some(scale)) =
            (float(&note.x), float(&note.dy), float(&note.scale))
        else {
            return false;
        };
        let normalized = x.shape.get(note.axis..).unwrap_or(&[]);
        let grads_fit = [&note.scale_grad, &note.bias_grad]
            .into_iter()
            .flatten()
            .all(|g| float(g).is_some_and(|t| t.shape == normalized));
        n.output.len() == 1
            && note.axis >= 1
            && x.shape == dy.shape
            && !normalized.is_empty()
            && scale.shape == normalized
            && grads_fit
    }
}

impl Pass for FusedLayerNormGrads {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grads"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        let chosen: Vec<_> = graph
            .node_indices()
            .filter_map(|i| {
                let n = graph.node(i);
                let note: LayerNormGradNote = note(n, LAYER_NORM_GRAD_NOTE)?;
                self.eligible(n, &note).then_some((i, note))
            })
            .collect();
        let mut changed = Changed::No;
        for (index, note) in chosen {
            let grads = [&note.scale_grad, &note.bias_grad];
            let producers: Vec<_> = grads
                .iter()
                .filter_map(|g| g.as_deref())
                .map(|g| graph.producer_node(g))
                .collect();
            if producers
                .iter()
                .any(|p| p.is_none_or(|p| graph.node(p).output.len() != 1))
            {
                continue;
            }
            for p in producers.into_iter().flatten() {
                graph.remove_node(p);
            }
            // Every output named: a gradient nobody asked for goes to a value nothing reads.
            let dx = graph.node(index).output[0].clone();
            let unused = |what: &str| format!("{dx}/unused_{what}");
            replace_by_own_op(
                graph,
                index,
                LAYER_NORM_GRAD,
                vec![note.x, note.scale, note.dy],
                vec![
                    note.scale_grad.unwrap_or_else(|| unused("scale_grad")),
                    note.bias_grad.unwrap_or_else(|| unused("bias_grad")),
                ],
                vec![
                    Attr::Int(note.axis as i64).into_proto("axis"),
                    Attr::Float(note.epsilon as f32).into_proto("epsilon"),
                ],
            )?;
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

/// The gradients over `x.len() / scale.len()` rows of `d = scale.len()` values each: writes dX into `dx` and
/// adds the rows' dScale (Σ dY·x̂) and dB (Σ dY) into `dscale` and `dbias`. Per row, with x̂ = (x − μ)·r,
/// r = 1/√(σ² + ε) and g = dY·Scale: dX = r·(g − mean(g) − x̂·mean(g·x̂)), in float32 as the standard ops.
pub fn rows(
    x: &[f32],
    scale: &[f32],
    dy: &[f32],
    epsilon: f32,
    dx: &mut [f32],
    dscale: &mut [f32],
    dbias: &mut [f32],
) {
    let d = scale.len();
    let n = d as f32;
    let mut xhat = vec![0.0f32; d];
    for ((xr, dyr), dxr) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let mean = xr.iter().sum::<f32>() / n;
        let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let r = 1.0 / (var + epsilon).sqrt();
        let (mut m1, mut m2) = (0.0f32, 0.0f32);
        for k in 0..d {
            xhat[k] = (xr[k] - mean) * r;
            let g = dyr[k] * scale[k];
            m1 += g;
            m2 += g * xhat[k];
            dscale[k] += dyr[k] * xhat[k];
            dbias[k] += dyr[k];
        }
        let (m1, m2) = (m1 / n, m2 / n);
        for k in 0..d {
            dxr[k] = r * (dyr[k] * scale[k] - m1 - xhat[k] * m2);
        }
    }
}
