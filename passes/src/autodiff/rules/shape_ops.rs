//! Data movement: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Slice, Gather, Expand, Split.

use crate::analysis::shapes::{attr_int, attr_ints, norm_axis, slice_params};
use crate::autodiff::{Attr, GradCtx, RuleArgs};

use super::only;

type Grads = Result<Vec<Option<String>>, String>;

/// Ops that only reinterpret the shape: the gradient is reshaped back; shape/axes inputs get none.
pub fn reshape_like(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let g = ctx.reshape(a.dy0()?, a.in_shape(0)?);
    Ok(only(a.node.input.len(), 0, g))
}

/// The gradient is transposed by the inverse permutation.
pub fn transpose(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let r = a.in_shape(0)?.len();
    let perm = attr_ints(a.node, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
    let mut inv = vec![0i64; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[norm_axis(p, r)?] = i as i64;
    }
    let g = ctx.op("Transpose", &[a.dy0()?], vec![("perm", Attr::Ints(inv))]);
    Ok(vec![Some(g)])
}

/// Each input gets its slice of the gradient along the concatenation axis.
pub fn concat(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let r = a.out_shape(0)?.len();
    let axis = norm_axis(attr_int(a.node, "axis").ok_or("missing axis")?, r)?;
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None; a.node.input.len()];
    let mut offset = 0i64;
    for (slot, o) in out.iter_mut().enumerate() {
        let len = a.in_shape(slot)?[axis] as i64;
        if a.needs(slot) {
            let s = ctx.const_i64(&[offset]);
            let e = ctx.const_i64(&[offset + len]);
            let ax = ctx.const_i64(&[axis as i64]);
            *o = Some(ctx.op("Slice", &[&dy, &s, &e, &ax], vec![]));
        }
        offset += len;
    }
    Ok(out)
}

/// Unit-step slices: the gradient is zero-padded back to the input shape.
pub fn slice(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let shape = a.in_shape(0)?.to_vec();
    let params = slice_params(a.node, &shape, ctx.values)?;
    let r = shape.len();
    let mut pads = vec![0i64; 2 * r];
    for &(axis, start, step, len) in &params {
        if step != 1 {
            return Err(format!("slices with step {step} have no gradient rule yet"));
        }
        pads[axis] = start;
        pads[axis + r] = shape[axis] as i64 - start - len as i64;
    }
    let p = ctx.const_i64(&pads);
    let g = ctx.op("Pad", &[a.dy0()?, &p], vec![]);
    Ok(only(a.node.input.len(), 0, g))
}

/// `Y = Gather(X, I, axis)`: dX[.., v, ..] = Σ over positions p with I[p] = v of dY[.., p, ..], computed as a
/// product with the one-hot matrix of the (flattened) indices.
pub fn gather(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let shape = a.in_shape(0)?.to_vec();
    let dtype = a.in_type(0)?.dtype;
    let axis = norm_axis(attr_int(a.node, "axis").unwrap_or(0), shape.len())?;
    let pre: usize = shape[..axis].iter().product();
    let post: usize = shape[axis + 1..].iter().product();
    let v = shape[axis];
    let n: usize = a.in_shape(1)?.iter().product();
    let idx = ctx.reshape(a.input(1), &[n]);
    let depth = ctx.const_i64(&[v as i64]);
    let off = ctx.scalar(dtype, 0.0);
    let on = ctx.scalar(dtype, 1.0);
    let off = ctx.reshape(&off, &[1]);
    let on = ctx.reshape(&on, &[1]);
    let values = ctx.op("Concat", &[&off, &on], vec![("axis", Attr::Int(0))]);
    let oh = ctx.op("OneHot", &[&idx, &depth, &values], vec![]);
    let oht = ctx.op("Transpose", &[&oh], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let dy3 = ctx.reshape(a.dy0()?, &[pre, n, post]);
    let p = ctx.op("MatMul", &[&oht, &dy3], vec![]);
    let g = ctx.reshape(&p, &shape);
    Ok(only(2, 0, g))
}

/// `Y = Expand(X, shape)` (bidirectional broadcasting): dX sums dY over the broadcast axes.
pub fn expand(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let g = ctx.reduce_to_shape(a.dy0()?, a.out_shape(0)?, a.in_shape(0)?)?;
    Ok(only(2, 0, g))
}

/// `Split(X, split?)` along `axis`: dX concatenates the outputs' gradients, zeros for outputs no gradient
/// reaches.
pub fn split(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let axis = norm_axis(attr_int(a.node, "axis").unwrap_or(0), t.shape.len())?;
    let mut parts = Vec::with_capacity(a.node.output.len());
    for k in 0..a.node.output.len() {
        match a.dy.get(k).and_then(Option::as_ref) {
            Some(g) => parts.push(g.clone()),
            None => {
                let s = a.out_shape(k)?.to_vec();
                parts.push(ctx.filled(t.dtype, &s, 0.0));
            }
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let g = ctx.op("Concat", &refs, vec![("axis", Attr::Int(axis as i64))]);
    Ok(only(a.node.input.len(), 0, g))
}
