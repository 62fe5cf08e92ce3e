//! Normalizations: BatchNormalization (training mode: batch statistics; inference mode: the given mean and
//! variance) and LayerNormalization. Means are emitted as ReduceSum × 1/count (ReduceSum takes its axes as
//! an input from opset 13 on, ReduceMean only from opset 18).

use serde::{Deserialize, Serialize};

use crate::analysis::shapes::{attr_float, attr_int, norm_axis};
use crate::autodiff::{GradCtx, RuleArgs};

type Grads = Result<Vec<Option<String>>, String>;

/// Mean over `axes` (kept), as ReduceSum divided by the count.
fn mean(ctx: &mut GradCtx, x: &str, shape: &[usize], axes: &[usize], dtype: i32) -> String {
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let s = ctx.reduce_sum(x, axes, true);
    let k = ctx.scalar(dtype, count as f64);
    ctx.op("Div", &[&s, &k], vec![])
}

/// The centred input and 1/√(var + ε) over `axes` (kept), recomputed from `x`: (d = x − mean, inv). The step
/// model's lowering of training-mode BatchNormalization (`training::batchnorm`) emits these very ops, so that
/// common-subexpression elimination shares them between its forward and the backward.
fn centre(
    ctx: &mut GradCtx,
    x: &str,
    shape: &[usize],
    axes: &[usize],
    dtype: i32,
    eps: f64,
) -> (String, String) {
    let m = mean(ctx, x, shape, axes, dtype);
    let d = ctx.op("Sub", &[x, &m], vec![]);
    let sq = ctx.op("Mul", &[&d, &d], vec![]);
    // var + ε = (Σ d² + n·ε) / n. Adding before dividing keeps tract 0.23 from fusing
    // `Mul(d, d) → ReduceSum → Mul(1/n)` into its mean-of-squares reducer, which computes in float32
    // even for float64 tensors.
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let ss = ctx.reduce_sum(&sq, axes, true);
    let ne = ctx.scalar(dtype, count as f64 * eps);
    let sse = ctx.op("Add", &[&ss, &ne], vec![]);
    let n = ctx.scalar(dtype, count as f64);
    let ve = ctx.op("Div", &[&sse, &n], vec![]);
    let sd = ctx.op("Sqrt", &[&ve], vec![]);
    let one = ctx.scalar(dtype, 1.0);
    let inv = ctx.op("Div", &[&one, &sd], vec![]);
    (d, inv)
}

/// The normalized input and 1/√(var + ε) over `axes` (kept), recomputed from `x`: (x̂, inv).
fn normalize(
    ctx: &mut GradCtx,
    x: &str,
    shape: &[usize],
    axes: &[usize],
    dtype: i32,
    eps: f64,
) -> (String, String) {
    let (d, inv) = centre(ctx, x, shape, axes, dtype, eps);
    let xhat = ctx.op("Mul", &[&d, &inv], vec![]);
    (xhat, inv)
}

/// dX of `Y = g·x̂ + b` with x̂ normalized over `axes` by its own statistics:
/// dX = inv · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)), dx̂ = dY · g.
fn normalized_input_grad(
    ctx: &mut GradCtx,
    dxhat: &str,
    xhat: &str,
    inv: &str,
    shape: &[usize],
    axes: &[usize],
    dtype: i32,
) -> String {
    let m1 = mean(ctx, dxhat, shape, axes, dtype);
    let p = ctx.op("Mul", &[dxhat, xhat], vec![]);
    let m2 = mean(ctx, &p, shape, axes, dtype);
    let t = ctx.op("Mul", &[xhat, &m2], vec![]);
    let a = ctx.op("Sub", &[dxhat, &m1], vec![]);
    let b = ctx.op("Sub", &[&a, &t], vec![]);
    ctx.op("Mul", &[&b, inv], vec![])
}

/// For X [N, C, …]: C, the per-channel broadcast shape [C, 1, …] and the reduced axes (N and the spatial ones).
fn channel_axes(shape: &[usize]) -> (usize, Vec<usize>, Vec<usize>) {
    let c = shape[1];
    let mut cshape = vec![c];
    cshape.extend(vec![1; shape.len() - 2]);
    let axes = std::iter::once(0).chain(2..shape.len()).collect();
    (c, cshape, axes)
}

/// BatchNormalization over X [N, C, …] with per-channel scale, bias, mean and var. Training mode
/// (`training_mode = 1`) normalizes by the batch statistics over N and the spatial axes; the running
/// statistics outputs are not differentiated and the input mean/var get no gradient. Inference mode uses
/// the input mean and variance, which then get their gradients too.
pub fn batch_normalization(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let (shape, dtype) = (t.shape.clone(), t.dtype);
    if shape.len() < 2 {
        return Err(format!("input {shape:?} has no channel axis"));
    }
    for slot in 1..5 {
        if a.in_type(slot)?.dtype != dtype {
            return Err("mixed input/parameter float types are not supported".into());
        }
    }
    if attr_int(a.node, "training_mode").unwrap_or(0) != 0 {
        return batch_normalization_training(ctx, a);
    }
    let eps = attr_float(a.node, "epsilon").unwrap_or(1e-5) as f64;
    let (c, cshape, axes) = channel_axes(&shape);
    let dy = a.dy0()?.to_owned();
    let scale = ctx.reshape(a.input(1), &cshape);
    let mut out = vec![None; a.node.input.len()];
    let m = ctx.reshape(a.input(3), &cshape);
    let v = ctx.reshape(a.input(4), &cshape);
    let e = ctx.scalar(dtype, eps);
    let ve = ctx.op("Add", &[&v, &e], vec![]);
    let sd = ctx.op("Sqrt", &[&ve], vec![]);
    let one = ctx.scalar(dtype, 1.0);
    let inv = ctx.op("Div", &[&one, &sd], vec![]);
    let d = ctx.op("Sub", &[a.input(0), &m], vec![]);
    let xhat = ctx.op("Mul", &[&d, &inv], vec![]);
    let dxhat = ctx.op("Mul", &[&dy, &scale], vec![]);
    if a.needs(0) {
        out[0] = Some(ctx.op("Mul", &[&dxhat, &inv], vec![]));
    }
    if a.needs(1) {
        let p = ctx.op("Mul", &[&dy, &xhat], vec![]);
        out[1] = Some(ctx.reduce_sum(&p, &axes, false));
    }
    if a.needs(2) {
        out[2] = Some(ctx.reduce_sum(&dy, &axes, false));
    }
    if a.needs(3) || a.needs(4) {
        // dmean = −Σ dx̂·inv; dvar = Σ dx̂·x̂ · (−½)·inv²
        let g = ctx.op("Mul", &[&dxhat, &inv], vec![]);
        if a.needs(3) {
            let s = ctx.reduce_sum(&g, &axes, false);
            out[3] = Some(ctx.op("Neg", &[&s], vec![]));
        }
        if a.needs(4) {
            let p = ctx.op("Mul", &[&g, &xhat], vec![]);
            let s = ctx.reduce_sum(&p, &axes, true);
            let q = ctx.op("Mul", &[&s, &inv], vec![]);
            let h = ctx.scalar(dtype, -0.5);
            let r = ctx.op("Mul", &[&q, &h], vec![]);
            out[4] = Some(ctx.reshape(&r, &[c]));
        }
    }
    Ok(out)
}

/// The training-mode gradients, dX = γ·inv·(dY − mean(dY) − x̂·mean(dY·x̂)), dγ = Σ dY·x̂, dβ = Σ dY.
/// This is the textbook dX = inv·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dY·γ, written with the centred
/// input d = x̂/inv, which the forward keeps instead of x̂ (it computes Y = d·(γ·inv) + β, one full-size op fewer):
/// dX = γ·inv·(dY − mean(dY) − d·inv²·mean(dY·d)), dγ = inv·Σ dY·d, dβ = Σ dY. γ is constant over the reduced
/// axes, so dX reuses the two sums dγ and dβ take: five full-size ops and two full-size reductions in all.
fn batch_normalization_training(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    if a.dy.iter().skip(1).any(Option::is_some) {
        return Err("gradients through the running-statistics outputs are not supported".into());
    }
    let t = a.in_type(0)?;
    let (shape, dtype) = (&t.shape, t.dtype);
    let eps = attr_float(a.node, "epsilon").unwrap_or(1e-5) as f64;
    let (c, cshape, axes) = channel_axes(shape);
    let axes = &axes;
    let dy = a.dy0()?;
    let mut out = vec![None; a.node.input.len()];
    let (d, inv) = centre(ctx, a.input(0), shape, axes, dtype, eps);
    let sum_dy = (a.needs(0) || a.needs(2)).then(|| ctx.reduce_sum(dy, axes, true));
    let sum_dy_d = (a.needs(0) || a.needs(1)).then(|| {
        let p = ctx.op("Mul", &[dy, &d], vec![]);
        ctx.reduce_sum(&p, axes, true)
    });
    if let (true, Some(s), Some(sd)) = (a.needs(0), &sum_dy, &sum_dy_d) {
        let count: usize = axes.iter().map(|&k| shape[k]).product();
        let n = ctx.scalar(dtype, count as f64);
        let mean_dy = ctx.op("Div", &[s, &n], vec![]);
        let mean_dy_d = ctx.op("Div", &[sd, &n], vec![]);
        let inv2 = ctx.op("Mul", &[&inv, &inv], vec![]);
        let k = ctx.op("Mul", &[&mean_dy_d, &inv2], vec![]);
        let along_d = ctx.op("Mul", &[&d, &k], vec![]);
        let centred = ctx.op("Sub", &[dy, &mean_dy], vec![]);
        let projected = ctx.op("Sub", &[&centred, &along_d], vec![]);
        let scale = ctx.reshape(a.input(1), &cshape);
        let gain = ctx.op("Mul", &[&scale, &inv], vec![]);
        out[0] = Some(ctx.op("Mul", &[&projected, &gain], vec![]));
    }
    if let (true, Some(sd)) = (a.needs(1), &sum_dy_d) {
        let dscale = ctx.op("Mul", &[sd, &inv], vec![]);
        out[1] = Some(ctx.reshape(&dscale, &[c]));
    }
    if let (true, Some(s)) = (a.needs(2), &sum_dy) {
        out[2] = Some(ctx.reshape(s, &[c]));
    }
    Ok(out)
}

/// Metadata key on the node writing LayerNormalization's input gradient, whose value is a
/// [`LayerNormGradNote`] in JSON, so that an engine with a fused kernel can compute the input, scale and bias
/// gradients in one pass over the rows.
pub const LAYER_NORM_GRAD_NOTE: &str = "rl_rewrite.layer_norm_grad";

/// The gradients of `Y = Scale·x̂ + B`, x̂ = `X` normalized over its axes from `axis` on (recomputed from `X`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerNormGradNote {
    pub x: String,
    pub scale: String,
    pub dy: String,
    /// The first normalized axis (non-negative).
    pub axis: usize,
    pub epsilon: f64,
    /// The values holding Scale's and B's gradients, where they are computed.
    pub scale_grad: Option<String>,
    pub bias_grad: Option<String>,
}

/// LayerNormalization over the axes from `axis` on, with Scale and optional B broadcast to that shape.
/// The Mean and InvStdDev outputs are not differentiated.
pub fn layer_normalization(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let (shape, dtype) = (t.shape.clone(), t.dtype);
    let axis = norm_axis(attr_int(a.node, "axis").unwrap_or(-1), shape.len())?;
    let eps = attr_float(a.node, "epsilon").unwrap_or(1e-5) as f64;
    let axes: Vec<usize> = (axis..shape.len()).collect();
    let dy = a.dy0()?.to_owned();
    let (xhat, inv) = normalize(ctx, a.input(0), &shape, &axes, dtype, eps);
    let mut out = vec![None; a.node.input.len()];
    if a.needs(0) {
        let dxhat = ctx.op("Mul", &[&dy, a.input(1)], vec![]);
        out[0] = Some(normalized_input_grad(
            ctx, &dxhat, &xhat, &inv, &shape, &axes, dtype,
        ));
    }
    if a.needs(1) {
        let p = ctx.op("Mul", &[&dy, &xhat], vec![]);
        out[1] = Some(ctx.reduce_to_shape(&p, &shape, a.in_shape(1)?)?);
    }
    if a.node.input.len() > 2 && !a.input(2).is_empty() && a.needs(2) {
        out[2] = Some(ctx.reduce_to_shape(&dy, &shape, a.in_shape(2)?)?);
    }
    if let Some(dx) = &out[0] {
        let note = LayerNormGradNote {
            x: a.input(0).to_owned(),
            scale: a.input(1).to_owned(),
            dy: dy.clone(),
            axis,
            epsilon: eps,
            scale_grad: out[1].clone(),
            bias_grad: out.get(2).cloned().flatten(),
        };
        let note = serde_json::to_string(&note).expect("plain data serializes");
        ctx.annotate(dx, LAYER_NORM_GRAD_NOTE, note);
    }
    Ok(out)
}
