//! Activations: Relu, Sigmoid, Tanh, Erf, Abs, LeakyRelu, HardSigmoid, HardSwish, Gelu.
//!
//! Where an activation has a kink, its gradient there is that of PyTorch's backward for the module that
//! exports to the op (named at each rule), so that inputs landing exactly on a kink get the gradient they
//! would get in PyTorch.

use serde::{Deserialize, Serialize};

use crate::analysis::shapes::{attr_float, attr_string};
use crate::autodiff::{GradCtx, RuleArgs};
use crate::tensor::is_float;

type Grads = Result<Vec<Option<String>>, String>;

/// Metadata key on the last node of a Relu gradient, whose value is a [`ReluGradNote`] in JSON, so that an
/// engine with a fused kernel can replace the three elementwise ops by one.
pub const RELU_GRAD_NOTE: &str = "rl_rewrite.relu_grad";

/// `dX = dY where Y > 0, else 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReluGradNote {
    /// The Relu's output.
    pub y: String,
    /// The gradient of that output.
    pub dy: String,
}

/// dX = dY where X > 0, else 0, as dY·Ceil(Min(Y, 1)): 0 at X = 0, as torch.nn.functional.relu (its backward
/// is `threshold_backward(grad, y, 0)`: `y <= 0 → 0`); the engine's fused ReluGrad kernel agrees (`y > 0`).
pub fn relu(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    // Ceil(Min(Y, 1)) is 1 where X > 0 (denormal outputs included) and 0 elsewhere. Reading the output rather
    // than the input lets the input (a BatchNorm output, in most networks) be freed after the forward pass, since
    // the next layer keeps Y anyway. Not Sign(Y): ONNX Runtime's CPU Sign is scalar code, about 3× slower than
    // Min and Ceil together on a resnet activation.
    let one = ctx.scalar(a.in_type(0)?.dtype, 1.0);
    let capped = ctx.op("Min", &[a.output(0), &one], vec![]);
    let mask = ctx.op("Ceil", &[&capped], vec![]);
    let g = ctx.op("Mul", &[a.dy0()?, &mask], vec![]);
    let note = ReluGradNote {
        y: a.output(0).to_owned(),
        dy: a.dy0()?.to_owned(),
    };
    let note = serde_json::to_string(&note).expect("plain data serializes");
    ctx.annotate(&g, RELU_GRAD_NOTE, note);
    Ok(vec![Some(g)])
}

/// dX = dY·Y·(1 − Y).
pub fn sigmoid(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let one = ctx.scalar(a.in_type(0)?.dtype, 1.0);
    let c = ctx.op("Sub", &[&one, a.output(0)], vec![]);
    let d = ctx.op("Mul", &[a.output(0), &c], vec![]);
    let g = ctx.op("Mul", &[a.dy0()?, &d], vec![]);
    Ok(vec![Some(g)])
}

/// dX = dY·(1 − Y²).
pub fn tanh(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let one = ctx.scalar(a.in_type(0)?.dtype, 1.0);
    let sq = ctx.op("Mul", &[a.output(0), a.output(0)], vec![]);
    let d = ctx.op("Sub", &[&one, &sq], vec![]);
    let g = ctx.op("Mul", &[a.dy0()?, &d], vec![]);
    Ok(vec![Some(g)])
}

/// dX = dY·(2/√π)·exp(−X²).
pub fn erf(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dtype = a.in_type(0)?.dtype;
    let k = ctx.scalar(dtype, std::f64::consts::FRAC_2_SQRT_PI);
    let sq = ctx.op("Mul", &[a.input(0), a.input(0)], vec![]);
    let n = ctx.op("Neg", &[&sq], vec![]);
    let e = ctx.op("Exp", &[&n], vec![]);
    let d = ctx.op("Mul", &[&e, &k], vec![]);
    let g = ctx.op("Mul", &[a.dy0()?, &d], vec![]);
    Ok(vec![Some(g)])
}

/// `Y = |X|`: dX = dY·Sign(X), so 0 at X = 0, as torch.abs (whose backward is `grad · sgn(x)`).
pub fn abs(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    if !is_float(a.in_type(0)?.dtype) {
        return Ok(vec![None]);
    }
    let sign = ctx.op("Sign", &[a.input(0)], vec![]);
    Ok(vec![Some(ctx.op("Mul", &[a.dy0()?, &sign], vec![]))])
}

/// `Y = X` where X > 0, else `alpha·X`: dX = dY where X > 0, else alpha·dY, X = 0 included, as
/// torch.nn.functional.leaky_relu (its backward is `x > 0 ? grad : grad · negative_slope`).
pub fn leaky_relu(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dtype = a.in_type(0)?.dtype;
    let alpha = attr_float(a.node, "alpha").unwrap_or(0.01);
    let zero = ctx.scalar(dtype, 0.0);
    let k = ctx.scalar(dtype, alpha as f64);
    let positive = ctx.op("Greater", &[a.input(0), &zero], vec![]);
    let scaled = ctx.op("Mul", &[a.dy0()?, &k], vec![]);
    let g = ctx.op("Where", &[&positive, a.dy0()?, &scaled], vec![]);
    Ok(vec![Some(g)])
}

/// `Y = max(0, min(1, alpha·X + beta))`: dX = alpha·dY where 0 < alpha·X + beta < 1, and 0 at the knots
/// (alpha·X + beta = 0 or 1) and beyond. torch.nn.functional.hardsigmoid (alpha = 1/6, beta = 1/2, which is
/// what its ONNX export writes) passes the gradient on the open interval −3 < x < 3 only; its knots are where
/// alpha·x + beta reaches 0 and 1, so the open interval generalises to any alpha and beta. The interior is
/// read from the output (0 < Y < 1), which is exactly "alpha·X + beta strictly between 0 and 1" as the
/// engine computed it, and lets X be freed after the forward pass.
pub fn hard_sigmoid(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dtype = a.in_type(0)?.dtype;
    let alpha = attr_float(a.node, "alpha").unwrap_or(0.2);
    let (zero, one) = (ctx.scalar(dtype, 0.0), ctx.scalar(dtype, 1.0));
    let k = ctx.scalar(dtype, alpha as f64);
    let above = ctx.op("Greater", &[a.output(0), &zero], vec![]);
    let below = ctx.op("Less", &[a.output(0), &one], vec![]);
    let inside = ctx.op("And", &[&above, &below], vec![]);
    let scaled = ctx.op("Mul", &[a.dy0()?, &k], vec![]);
    let g = ctx.op("Where", &[&inside, &scaled, &zero], vec![]);
    Ok(vec![Some(g)])
}

/// `Y = X·max(0, min(1, X/6 + 1/2))`: dX = 0 for X ≤ −3, dY·(X/3 + 1/2) for −3 < X < 3, dY for X ≥ 3.
/// This is torch.nn.functional.hardswish's backward (`x <= -3 → 0`, `x < 3 → x/3 + 1/2`, else 1): at each
/// knot it takes the derivative of the outer piece, 0 at −3 and 1 at 3, not the middle piece's −1/2 and 3/2.
pub fn hard_swish(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dtype = a.in_type(0)?.dtype;
    let x = a.input(0);
    let (zero, one) = (ctx.scalar(dtype, 0.0), ctx.scalar(dtype, 1.0));
    let (lo, hi) = (ctx.scalar(dtype, -3.0), ctx.scalar(dtype, 3.0));
    let (third, half) = (ctx.scalar(dtype, 1.0 / 3.0), ctx.scalar(dtype, 0.5));
    let slope = ctx.op("Mul", &[x, &third], vec![]);
    let middle = ctx.op("Add", &[&slope, &half], vec![]);
    let below_hi = ctx.op("Less", &[x, &hi], vec![]);
    let upper = ctx.op("Where", &[&below_hi, &middle, &one], vec![]);
    let above_lo = ctx.op("Greater", &[x, &lo], vec![]);
    let d = ctx.op("Where", &[&above_lo, &upper, &zero], vec![]);
    Ok(vec![Some(ctx.op("Mul", &[a.dy0()?, &d], vec![]))])
}

/// Metadata key on the last node of an exact Gelu's gradient, whose value is a [`GeluGradNote`] in JSON, so that
/// an engine with a fused kernel can replace the ten elementwise ops by one.
pub const GELU_GRAD_NOTE: &str = "rl_rewrite.gelu_grad";

/// `dX = dY·(Φ(X) + X·φ(X))`, the exact Gelu's gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeluGradNote {
    /// The Gelu's input.
    pub x: String,
    /// The gradient of its output.
    pub dy: String,
}

/// The exact Gelu's input gradient `dY·(Φ(X) + X·φ(X))`, Φ(x) = (1 + erf(x/√2))/2, φ(x) = e^(−x²/2)/√(2π), in
/// standard ops, noted ([`GELU_GRAD_NOTE`]); also the gradient of the elementary form of the exact Gelu
/// ([`crate::autodiff::composite`]).
pub fn gelu_exact_grad(ctx: &mut GradCtx, x: &str, dy: &str, dtype: i32) -> String {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};
    let half = ctx.scalar(dtype, 0.5);
    let one = ctx.scalar(dtype, 1.0);
    let sq = ctx.op("Mul", &[x, x], vec![]);
    let r = ctx.scalar(dtype, FRAC_1_SQRT_2);
    let scaled = ctx.op("Mul", &[x, &r], vec![]);
    let e = ctx.op("Erf", &[&scaled], vec![]);
    let e1 = ctx.op("Add", &[&e, &one], vec![]);
    let cdf = ctx.op("Mul", &[&e1, &half], vec![]);
    let minus_half = ctx.scalar(dtype, -0.5);
    let arg = ctx.op("Mul", &[&sq, &minus_half], vec![]);
    let ex = ctx.op("Exp", &[&arg], vec![]);
    let norm = ctx.scalar(dtype, 1.0 / (2.0 * PI).sqrt());
    let pdf = ctx.op("Mul", &[&ex, &norm], vec![]);
    let xpdf = ctx.op("Mul", &[x, &pdf], vec![]);
    let d = ctx.op("Add", &[&cdf, &xpdf], vec![]);
    let g = ctx.op("Mul", &[dy, &d], vec![]);
    let note = GeluGradNote {
        x: x.to_owned(),
        dy: dy.to_owned(),
    };
    let note = serde_json::to_string(&note).expect("plain data serializes");
    ctx.annotate(&g, GELU_GRAD_NOTE, note);
    g
}

/// Gelu (opset 20). `approximate = "none"`: Y = X·Φ(X), dX = dY·(Φ(X) + X·φ(X)) with Φ(x) =
/// (1 + erf(x/√2))/2 and φ(x) = e^(−x²/2)/√(2π). `approximate = "tanh"`: Y = X·(1 + tanh(u))/2 with
/// u = √(2/π)·(X + 0.044715·X³), dX = dY·((1 + t)/2 + X/2·(1 − t²)·√(2/π)·(1 + 3·0.044715·X²)), t = tanh(u).
/// Both are torch.nn.functional.gelu's backward formulas; Gelu is smooth, so there is no convention to pick.
pub fn gelu(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    use std::f64::consts::FRAC_2_PI;
    let dtype = a.in_type(0)?.dtype;
    let x = a.input(0);
    let approximate = attr_string(a.node, "approximate").unwrap_or_else(|| "none".into());
    let half = ctx.scalar(dtype, 0.5);
    let one = ctx.scalar(dtype, 1.0);
    let sq = ctx.op("Mul", &[x, x], vec![]);
    let d = match approximate.as_str() {
        "none" => return Ok(vec![Some(gelu_exact_grad(ctx, x, a.dy0()?, dtype))]),
        "tanh" => {
            const KAPPA: f64 = 0.044715;
            let beta = FRAC_2_PI.sqrt();
            let kappa = ctx.scalar(dtype, KAPPA);
            let k_sq = ctx.op("Mul", &[&sq, &kappa], vec![]);
            let poly = ctx.op("Add", &[&k_sq, &one], vec![]);
            let cubic = ctx.op("Mul", &[x, &poly], vec![]);
            let b = ctx.scalar(dtype, beta);
            let u = ctx.op("Mul", &[&cubic, &b], vec![]);
            let t = ctx.op("Tanh", &[&u], vec![]);
            let t1 = ctx.op("Add", &[&t, &one], vec![]);
            let left = ctx.op("Mul", &[&t1, &half], vec![]);
            let t_sq = ctx.op("Mul", &[&t, &t], vec![]);
            let sech_sq = ctx.op("Sub", &[&one, &t_sq], vec![]);
            let k3 = ctx.scalar(dtype, 3.0 * KAPPA);
            let k3_sq = ctx.op("Mul", &[&sq, &k3], vec![]);
            let du = ctx.op("Add", &[&k3_sq, &one], vec![]);
            let half_beta = ctx.scalar(dtype, 0.5 * beta);
            let hx = ctx.op("Mul", &[x, &half_beta], vec![]);
            let r1 = ctx.op("Mul", &[&hx, &sech_sq], vec![]);
            let right = ctx.op("Mul", &[&r1, &du], vec![]);
            ctx.op("Add", &[&left, &right], vec![])
        }
        other => {
            return Err(format!(
                "Gelu approximate = \"{other}\" is not an ONNX value"
            ))
        }
    };
    Ok(vec![Some(ctx.op("Mul", &[a.dy0()?, &d], vec![]))])
}
