//! Reductions (`Reduce*`, `ArgMax`/`ArgMin`) and their axes, shared with the autodiff rules.

use std::collections::HashMap;

use crate::onnx::NodeProto;

use super::{attr_int, norm_axis, same, NodeResult, OpCtx, TensorType, INT64};

/// Reduction axes of a Reduce* node (attribute or input), normalised and sorted; all axes when empty
/// (unless `noop_with_empty_axes`).
fn reduce_axes(c: &OpCtx, rank: usize) -> Result<Vec<usize>, String> {
    let axes = c.axes(1)?.unwrap_or_default();
    if axes.is_empty() {
        if attr_int(c.node, "noop_with_empty_axes").unwrap_or(0) != 0 {
            return Ok(vec![]);
        }
        return Ok((0..rank).collect());
    }
    let mut a: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_, _>>()?;
    a.sort();
    a.dedup();
    Ok(a)
}

/// Reduction axes of a Reduce* node given the constant values (for autodiff).
pub fn reduce_axes_of(
    node: &NodeProto,
    rank: usize,
    values: &HashMap<String, Vec<i64>>,
) -> Result<Vec<usize>, String> {
    // Only the presence of the inputs matters here, not their types.
    let ins: Vec<Option<TensorType>> = node
        .input
        .iter()
        .map(|i| (!i.is_empty()).then(|| TensorType::new(INT64, vec![])))
        .collect();
    let c = OpCtx {
        node,
        ins: &ins,
        values,
    };
    reduce_axes(&c, rank)
}

pub fn reduced_shape(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keep.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

pub(super) fn reduce(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let axes = reduce_axes(c, t.shape.len())?;
    let keep = attr_int(c.node, "keepdims").unwrap_or(1) != 0;
    same(TensorType::new(
        t.dtype,
        reduced_shape(&t.shape, &axes, keep),
    ))
}

pub(super) fn arg_reduce(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let axis = norm_axis(attr_int(c.node, "axis").unwrap_or(0), t.shape.len())?;
    let keep = attr_int(c.node, "keepdims").unwrap_or(1) != 0;
    same(TensorType::new(
        INT64,
        reduced_shape(&t.shape, &[axis], keep),
    ))
}
