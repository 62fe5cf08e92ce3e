//! Indexing ops, which take or place elements by position: `Slice`, `Gather`, `ScatterElements`/`ScatterND`,
//! `OneHot`. Slices and gathers of known 1-D integer values are evaluated.

use std::collections::HashMap;

use crate::onnx::NodeProto;

use super::{attr_int, attr_ints, norm_axis, same, NodeResult, OpCtx, TensorType};

/// Geometry of one sliced axis: (start, step, length) after clamping, per the ONNX Slice semantics.
pub fn slice_axis(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(i64, i64, usize), String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, d), fix(end).clamp(0, d))
    } else {
        (fix(start).clamp(0, d - 1), fix(end).clamp(-1, d - 1))
    };
    let len = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok((s, step, len as usize))
}

/// Per-axis slice parameters of a Slice node: (axis, start, step, length) for each sliced axis.
pub fn slice_params(
    node: &NodeProto,
    shape: &[usize],
    values: &HashMap<String, Vec<i64>>,
) -> Result<Vec<(usize, i64, i64, usize)>, String> {
    let get = |slot: usize| -> Result<Option<Vec<i64>>, String> {
        match node.input.get(slot).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(n) => values
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("input '{n}' is not a known constant")),
        }
    };
    let (starts, ends, axes, steps) = if node.input.len() == 1 {
        (
            attr_ints(node, "starts").unwrap_or_default(),
            attr_ints(node, "ends").unwrap_or_default(),
            attr_ints(node, "axes"),
            None,
        )
    } else {
        (
            get(1)?.unwrap_or_default(),
            get(2)?.unwrap_or_default(),
            get(3)?,
            get(4)?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut out = Vec::new();
    for k in 0..starts.len() {
        let a = norm_axis(axes[k], shape.len())?;
        let (s, st, len) = slice_axis(shape[a], starts[k], ends[k], steps[k])?;
        out.push((a, s, st, len));
    }
    Ok(out)
}

pub(super) fn slice(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let params = slice_params(c.node, &t.shape, c.values)?;
    let mut out = t.shape.clone();
    for &(a, _, _, len) in &params {
        out[a] = len;
    }
    let v = match (c.value(0), t.shape.len(), params.as_slice()) {
        (Some(v), 1, [(_, s, st, len)]) => {
            Some((0..*len as i64).map(|k| v[(s + k * st) as usize]).collect())
        }
        (Some(v), 1, []) => Some(v.clone()),
        _ => None,
    };
    Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
}

pub(super) fn gather(c: &OpCtx) -> NodeResult {
    let (t, idx) = (c.input(0)?, c.input(1)?);
    let axis = norm_axis(attr_int(c.node, "axis").unwrap_or(0), t.shape.len())?;
    let mut out = t.shape[..axis].to_vec();
    out.extend_from_slice(&idx.shape);
    out.extend_from_slice(&t.shape[axis + 1..]);
    let v = match (c.value(0), c.value(1), t.shape.len()) {
        (Some(data), Some(ix), 1) => ix
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + data.len() as i64 } else { i };
                data.get(i as usize).copied()
            })
            .collect(),
        _ => None,
    };
    Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
}

/// The scatter ops write updates into a copy of their data input.
pub(super) fn scatter(c: &OpCtx) -> NodeResult {
    same(c.input(0)?.clone())
}

pub(super) fn one_hot(c: &OpCtx) -> NodeResult {
    let idx = c.shape(0)?;
    let depth = *c.const_input(1)?.first().ok_or("empty depth")?;
    let axis = norm_axis(attr_int(c.node, "axis").unwrap_or(-1), idx.len() + 1)?;
    let mut out = idx.to_vec();
    out.insert(axis, depth.max(0) as usize);
    same(TensorType::new(c.input(2)?.dtype, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_clamp_like_onnx() {
        assert_eq!(slice_axis(10, 2, 8, 3).unwrap(), (2, 3, 2));
        assert_eq!(slice_axis(10, -1, i64::MIN, -1).unwrap(), (9, -1, 10));
        assert_eq!(slice_axis(10, 0, i64::MAX, 1).unwrap(), (0, 1, 10));
        assert_eq!(slice_axis(10, 5, 2, 1).unwrap().2, 0);
        assert_eq!(slice_axis(10, 8, 1, -2).unwrap(), (8, -2, 4));
    }
}
