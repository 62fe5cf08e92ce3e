//! Arithmetic: Add, Sub, Mul, Div, Pow, Max, Min (numpy broadcasting undone by `reduce_to_shape`), Neg,
//! Sqrt, Exp, Identity, Cast.

use super::only;
use crate::autodiff::{Attr, GradCtx, RuleArgs};

type Grads = Result<Vec<Option<String>>, String>;

/// Reduces `g` (shaped like the output) to input `slot`'s shape.
fn to_input(ctx: &mut GradCtx, a: &RuleArgs, slot: usize, g: &str) -> Result<String, String> {
    ctx.reduce_to_shape(g, a.out_shape(0)?, a.in_shape(slot)?)
}

pub fn add(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None, None];
    for (slot, o) in out.iter_mut().enumerate() {
        if a.needs(slot) {
            *o = Some(to_input(ctx, a, slot, &dy)?);
        }
    }
    Ok(out)
}

pub fn sub(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None, None];
    if a.needs(0) {
        out[0] = Some(to_input(ctx, a, 0, &dy)?);
    }
    if a.needs(1) {
        let n = ctx.op("Neg", &[&dy], vec![]);
        out[1] = Some(to_input(ctx, a, 1, &n)?);
    }
    Ok(out)
}

pub fn mul(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None, None];
    for (slot, o) in out.iter_mut().enumerate() {
        if a.needs(slot) {
            let p = ctx.op("Mul", &[&dy, a.input(1 - slot)], vec![]);
            *o = Some(to_input(ctx, a, slot, &p)?);
        }
    }
    Ok(out)
}

pub fn div(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None, None];
    if a.needs(0) {
        let q = ctx.op("Div", &[&dy, a.input(1)], vec![]);
        out[0] = Some(to_input(ctx, a, 0, &q)?);
    }
    if a.needs(1) {
        // d(A/B)/dB = -(A/B)/B = -Y/B
        let q = ctx.op("Div", &[a.output(0), a.input(1)], vec![]);
        let p = ctx.op("Mul", &[&dy, &q], vec![]);
        let n = ctx.op("Neg", &[&p], vec![]);
        out[1] = Some(to_input(ctx, a, 1, &n)?);
    }
    Ok(out)
}

/// `Y = A^B`: dA = dY·B·A^(B-1), dB = dY·Y·ln A (defined for A > 0).
pub fn pow(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let dy = a.dy0()?.to_owned();
    let dtype = a.in_type(0)?.dtype;
    let b = if a.in_type(1)?.dtype == dtype {
        a.input(1).to_owned()
    } else {
        ctx.op("Cast", &[a.input(1)], vec![("to", Attr::Int(dtype as i64))])
    };
    let mut out = vec![None, None];
    if a.needs(0) {
        let one = ctx.scalar(dtype, 1.0);
        let bm1 = ctx.op("Sub", &[&b, &one], vec![]);
        let p = ctx.op("Pow", &[a.input(0), &bm1], vec![]);
        let d = ctx.op("Mul", &[&p, &b], vec![]);
        let g = ctx.op("Mul", &[&dy, &d], vec![]);
        out[0] = Some(to_input(ctx, a, 0, &g)?);
    }
    if a.needs(1) {
        let ln = ctx.op("Log", &[a.input(0)], vec![]);
        let d = ctx.op("Mul", &[a.output(0), &ln], vec![]);
        let g = ctx.op("Mul", &[&dy, &d], vec![]);
        out[1] = Some(to_input(ctx, a, 1, &g)?);
    }
    Ok(out)
}

pub fn neg(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let g = ctx.op("Neg", &[a.dy0()?], vec![]);
    Ok(vec![Some(g)])
}

/// `Y = √X`: dX = dY / (2Y).
pub fn sqrt(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let two = ctx.scalar(a.in_type(0)?.dtype, 2.0);
    let d = ctx.op("Mul", &[a.output(0), &two], vec![]);
    let g = ctx.op("Div", &[a.dy0()?, &d], vec![]);
    Ok(vec![Some(g)])
}

/// `Y = eˣ`: dX = dY·Y.
pub fn exp(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let g = ctx.op("Mul", &[a.dy0()?, a.output(0)], vec![]);
    Ok(vec![Some(g)])
}

pub fn identity(_: &mut GradCtx, a: &RuleArgs) -> Grads {
    Ok(vec![Some(a.dy0()?.to_owned())])
}

/// The gradient is cast back to the input's float type.
pub fn cast(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let from = a.in_type(0)?.dtype;
    if !crate::tensor::is_float(from) {
        return Ok(vec![None]);
    }
    if a.out_type(0)?.dtype == from {
        return Ok(vec![Some(a.dy0()?.to_owned())]);
    }
    let g = ctx.op("Cast", &[a.dy0()?], vec![("to", Attr::Int(from as i64))]);
    Ok(only(1, 0, g))
}

/// `Y = Max(X₁, …, Xₙ)` or `Min(…)`, broadcasting: dXₖ = dY·[Xₖ = Y] / #{j : Xⱼ = Y}, reduced to Xₖ's
/// shape. Where inputs tie for the extremum the gradient is split equally among all the tied inputs:
/// torch.maximum/torch.minimum give half to each of their two arguments when they are equal, and for more
/// than two inputs each of m tied inputs gets 1/m, as torch.amax/torch.amin over the stacked inputs do
/// (nested torch.maximum calls would give 1/4, 1/4, 1/2 instead, an artifact of the nesting order).
pub fn max_min(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let n = a.node.input.len();
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None; n];
    if n == 1 {
        out[0] = Some(dy);
        return Ok(out);
    }
    let dtype = a.out_type(0)?.dtype;
    let masks: Vec<String> = (0..n)
        .map(|k| {
            let e = ctx.op("Equal", &[a.input(k), a.output(0)], vec![]);
            ctx.op("Cast", &[&e], vec![("to", Attr::Int(dtype as i64))])
        })
        .collect();
    let mut count = masks[0].clone();
    for m in &masks[1..] {
        count = ctx.op("Add", &[&count, m], vec![]);
    }
    let share = ctx.op("Div", &[&dy, &count], vec![]);
    for (k, mask) in masks.iter().enumerate() {
        if a.needs(k) {
            let g = ctx.op("Mul", &[&share, mask], vec![]);
            out[k] = Some(to_input(ctx, a, k, &g)?);
        }
    }
    Ok(out)
}
