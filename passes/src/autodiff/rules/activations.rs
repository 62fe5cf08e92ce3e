//! Activations: Relu, Sigmoid, Tanh, Erf.

use serde::{Deserialize, Serialize};

use crate::autodiff::{GradCtx, RuleArgs};

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

/// dX = dY where X > 0, else 0, as dY·Ceil(Min(Y, 1)).
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
