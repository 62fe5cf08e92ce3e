//! ReduceSum and ReduceMean: the gradient is broadcast back over the reduced axes.

use crate::analysis::shapes::{attr_int, reduce_axes_of, reduced_shape};
use crate::autodiff::{GradCtx, RuleArgs};

use super::only;

type Grads = Result<Vec<Option<String>>, String>;

/// dY reshaped with the reduced axes kept (as 1) and expanded to X's shape; also returns the element count
/// of one reduction.
fn spread(ctx: &mut GradCtx, a: &RuleArgs) -> Result<(String, usize), String> {
    let shape = a.in_shape(0)?.to_vec();
    let axes = reduce_axes_of(a.node, shape.len(), ctx.values)?;
    let kept = reduced_shape(&shape, &axes, true);
    let keep = attr_int(a.node, "keepdims").unwrap_or(1) != 0;
    let dy = if keep {
        a.dy0()?.to_owned()
    } else {
        ctx.reshape(a.dy0()?, &kept)
    };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let target = ctx.const_i64(&dims);
    let g = ctx.op("Expand", &[&dy, &target], vec![]);
    let count = axes.iter().map(|&i| shape[i]).product();
    Ok((g, count))
}

pub fn reduce_sum(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let (g, _) = spread(ctx, a)?;
    Ok(only(a.node.input.len(), 0, g))
}

pub fn reduce_mean(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let (g, count) = spread(ctx, a)?;
    let k = ctx.scalar(a.in_type(0)?.dtype, 1.0 / count.max(1) as f64);
    let g = ctx.op("Mul", &[&g, &k], vec![]);
    Ok(only(a.node.input.len(), 0, g))
}
