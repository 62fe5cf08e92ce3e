//! Softmax and LogSoftmax (opset 13 semantics: one axis, default −1).

use crate::analysis::shapes::{attr_int, norm_axis};
use crate::autodiff::{GradCtx, RuleArgs};

type Grads = Result<Vec<Option<String>>, String>;

fn axis(a: &RuleArgs) -> Result<usize, String> {
    norm_axis(attr_int(a.node, "axis").unwrap_or(-1), a.in_shape(0)?.len())
}

/// dX = Y ⊙ (dY − Σ_axis(dY ⊙ Y)).
pub fn softmax(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let ax = axis(a)?;
    let p = ctx.op("Mul", &[a.dy0()?, a.output(0)], vec![]);
    let s = ctx.reduce_sum(&p, &[ax], true);
    let d = ctx.op("Sub", &[a.dy0()?, &s], vec![]);
    let g = ctx.op("Mul", &[a.output(0), &d], vec![]);
    Ok(vec![Some(g)])
}

/// dX = dY − exp(Y) ⊙ Σ_axis dY.
pub fn log_softmax(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let ax = axis(a)?;
    let s = ctx.reduce_sum(a.dy0()?, &[ax], true);
    let e = ctx.op("Exp", &[a.output(0)], vec![]);
    let p = ctx.op("Mul", &[&e, &s], vec![]);
    let g = ctx.op("Sub", &[a.dy0()?, &p], vec![]);
    Ok(vec![Some(g)])
}
