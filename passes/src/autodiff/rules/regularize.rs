//! Clip (min/max as optional inputs, opset 11+) and Dropout (training mask; inference identity).

use crate::autodiff::{Attr, GradCtx, RuleArgs};
use crate::tensor::is_float;

type Grads = Result<Vec<Option<String>>, String>;

fn present(a: &RuleArgs, slot: usize) -> bool {
    a.node.input.get(slot).is_some_and(|s| !s.is_empty())
}

/// `Y = min(max(X, lo), hi)`: dX = dY where lo < X < hi, else 0 — the bounds themselves excluded. A bound
/// given as an input gets dY where it is the output: lo where X ≤ lo < hi, hi where X ≥ hi or lo ≥ hi (the
/// output is then hi everywhere), so that dX + dlo + dhi = dY at every element.
///
/// PyTorch has two conventions at the bounds: F.hardtanh/F.relu6 (nn.Hardtanh, nn.ReLU6, both exported as
/// Clip) give 0 at min and at max, while torch.clamp with tensor bounds splits dY in half between X and the
/// bound it ties with (it is torch.minimum(torch.maximum(x, lo), hi)). The models that reach a Clip here
/// come from the activation modules (MobileNetV2's ReLU6, Hardtanh), so Clip follows hardtanh: exclusive
/// bounds. (torch.clamp with number bounds, in torch 2.15, also gives 0 at the bounds.)
pub fn clip(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let dy = a.dy0()?.to_owned();
    let zero = ctx.scalar(t.dtype, 0.0);
    if a.node
        .attribute
        .iter()
        .any(|x| x.name() == "min" || x.name() == "max")
    {
        return Err("Clip with min/max attributes (opset < 11) is not supported".into());
    }
    let bound = |slot: usize| present(a, slot).then(|| a.input(slot).to_owned());
    let (lo, hi) = (bound(1), bound(2));
    let at_or_below = lo
        .as_ref()
        .map(|lo| ctx.op("LessOrEqual", &[a.input(0), lo], vec![]));
    let at_or_above = hi
        .as_ref()
        .map(|hi| ctx.op("GreaterOrEqual", &[a.input(0), hi], vec![]));
    let mut out = vec![None; a.node.input.len()];
    if a.needs(0) {
        let mut g = dy.clone();
        for m in at_or_below.iter().chain(at_or_above.iter()) {
            g = ctx.op("Where", &[m, &zero, &g], vec![]);
        }
        out[0] = Some(g);
    }
    // where lo ≥ hi every element is hi: the lower bound is never the output
    let ordered = match (&lo, &hi) {
        (Some(lo), Some(hi)) if a.needs(1) || a.needs(2) => Some(ctx.op("Less", &[lo, hi], vec![])),
        _ => None,
    };
    for (slot, mask) in [(1, &at_or_below), (2, &at_or_above)] {
        if present(a, slot) && a.needs(slot) {
            let mut m = mask.as_ref().expect("bound present").clone();
            if let Some(ordered) = &ordered {
                m = if slot == 1 {
                    ctx.op("And", &[&m, ordered], vec![])
                } else {
                    let crossed = ctx.op("Not", &[ordered], vec![]);
                    ctx.op("Or", &[&m, &crossed], vec![])
                };
            }
            let g = ctx.op("Where", &[&m, &dy, &zero], vec![]);
            let all: Vec<usize> = (0..t.shape.len()).collect();
            let s = if all.is_empty() {
                g
            } else {
                ctx.reduce_sum(&g, &all, false)
            };
            out[slot] = Some(ctx.reshape(&s, a.in_shape(slot)?));
        }
    }
    Ok(out)
}

/// The value of a constant boolean (or integer) scalar of the forward graph.
fn const_bool(ctx: &GradCtx, name: &str) -> Option<bool> {
    let t = match ctx.graph.initializer(name) {
        Some(t) => t.clone(),
        None => {
            let p = ctx.graph.producer_node(name)?;
            let n = ctx.graph.node(p);
            if n.op_type() != "Constant" {
                return None;
            }
            n.attribute
                .iter()
                .find(|a| a.name() == "value")?
                .t
                .clone()?
        }
    };
    if let Some(raw) = t.raw_data.as_deref() {
        return raw.first().map(|&b| b != 0);
    }
    t.int32_data
        .first()
        .map(|&v| v != 0)
        .or_else(|| t.int64_data.first().map(|&v| v != 0))
}

/// Dropout: in training mode dX = dY · mask / (1 − ratio), with the node's own mask output (the random
/// draw cannot be repeated); in inference mode dX = dY. A `training_mode` input that is not a constant
/// selects between the two with `Where`. The ratio gets no gradient.
pub fn dropout(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None; a.node.input.len()];
    if !a.needs(0) {
        return Ok(out);
    }
    let training = if present(a, 2) {
        const_bool(ctx, a.input(2))
    } else {
        Some(false)
    };
    if training == Some(false) {
        out[0] = Some(dy);
        return Ok(out);
    }
    let mask = a
        .node
        .output
        .get(1)
        .filter(|m| !m.is_empty())
        .ok_or("training-mode Dropout needs its mask output to be differentiated")?;
    let fmask = ctx.op("Cast", &[mask], vec![("to", Attr::Int(t.dtype as i64))]);
    let one = ctx.scalar(t.dtype, 1.0);
    let keep = if present(a, 1) {
        let r = if a.in_type(1).map(|r| r.dtype) == Ok(t.dtype) {
            a.input(1).to_owned()
        } else if a.in_type(1).is_ok_and(|r| is_float(r.dtype)) {
            ctx.op(
                "Cast",
                &[a.input(1)],
                vec![("to", Attr::Int(t.dtype as i64))],
            )
        } else {
            return Err("ratio must be a float tensor".into());
        };
        ctx.op("Sub", &[&one, &r], vec![])
    } else {
        ctx.scalar(t.dtype, 0.5)
    };
    let scale = ctx.op("Div", &[&fmask, &keep], vec![]);
    let mut g = ctx.op("Mul", &[&dy, &scale], vec![]);
    if training.is_none() {
        g = ctx.op("Where", &[a.input(2), &g, &dy], vec![]);
    }
    out[0] = Some(g);
    Ok(out)
}
