//! Ops that rearrange a tensor without computing on it: `Reshape`, `Flatten`, `Transpose`, `Squeeze`,
//! `Unsqueeze`, `Concat`, `Split`, `Expand`, `Tile`, `Pad`. Reshapes keep a known integer value (the element
//! order is unchanged) and `Concat` and `Expand` evaluate theirs, so shape vectors stay known through them.

use super::elementwise::broadcast_values;
use super::{attr_int, attr_ints, broadcast, norm_axis, same, NodeResult, OpCtx, TensorType};

pub(super) fn flatten(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let r = t.shape.len() as i64;
    let axis = attr_int(c.node, "axis").unwrap_or(1);
    let axis = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&axis) {
        return Err(format!("axis {axis} out of range"));
    }
    let a: usize = t.shape[..axis as usize].iter().product();
    let b: usize = t.shape[axis as usize..].iter().product();
    Ok((
        vec![TensorType::new(t.dtype, vec![a, b])],
        vec![c.value(0).cloned()],
    ))
}

pub(super) fn reshape(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let target = c.const_input(1)?;
    let allowzero = attr_int(c.node, "allowzero").unwrap_or(0) != 0;
    let out = reshape_target(&t.shape, target, allowzero)?;
    Ok((
        vec![TensorType::new(t.dtype, out)],
        vec![c.value(0).cloned()],
    ))
}

/// The shape a Reshape `target` resolves to over an input of `shape` (`-1` inferred, `0` copied unless
/// `allowzero`).
fn reshape_target(shape: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err("two -1 in the target shape".into());
                }
                out.push(1);
            }
            0 if !allowzero => out.push(
                *shape
                    .get(i)
                    .ok_or_else(|| format!("0 at position {i} beyond input rank"))?,
            ),
            d if d < 0 => return Err(format!("invalid dimension {d}")),
            d => out.push(d as usize),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {shape:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {shape:?} to {target:?}"));
    }
    Ok(out)
}

pub(super) fn transpose(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let r = t.shape.len();
    let perm = attr_ints(c.node, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
    if perm.len() != r {
        return Err(format!("perm {perm:?} does not fit rank {r}"));
    }
    let out = perm
        .iter()
        .map(|&p| norm_axis(p, r).map(|p| t.shape[p]))
        .collect::<Result<_, _>>()?;
    same(TensorType::new(t.dtype, out))
}

pub(super) fn squeeze(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let r = t.shape.len();
    let out = match c.axes(1)? {
        Some(axes) => {
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, r))
                .collect::<Result<_, _>>()?;
            if let Some(&a) = axes.iter().find(|&&a| t.shape[a] != 1) {
                return Err(format!("axis {a} of {:?} is not 1", t.shape));
            }
            t.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        None => t.shape.iter().copied().filter(|&d| d != 1).collect(),
    };
    Ok((
        vec![TensorType::new(t.dtype, out)],
        vec![c.value(0).cloned()],
    ))
}

pub(super) fn unsqueeze(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let axes = c.axes(1)?.ok_or("missing axes")?;
    let r = t.shape.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<Result<_, _>>()?;
    axes.sort();
    let mut out = Vec::with_capacity(r);
    let mut it = t.shape.iter();
    for i in 0..r {
        if axes.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or("duplicate axes")?);
        }
    }
    Ok((
        vec![TensorType::new(t.dtype, out)],
        vec![c.value(0).cloned()],
    ))
}

/// Concatenation; 1-D integer values are concatenated too when every part is known.
pub(super) fn concat(c: &OpCtx) -> NodeResult {
    let first = c.input(0)?;
    let r = first.shape.len();
    let axis = norm_axis(attr_int(c.node, "axis").ok_or("missing axis")?, r)?;
    let mut out = first.shape.clone();
    out[axis] = 0;
    let mut vals = Some(Vec::new());
    for k in 0..c.ins.len() {
        let s = c.shape(k)?;
        if s.len() != r
            || s.iter()
                .zip(&first.shape)
                .enumerate()
                .any(|(i, (a, b))| i != axis && a != b)
        {
            return Err(format!("input shapes {:?} and {s:?} differ", first.shape));
        }
        out[axis] += s[axis];
        match (c.value(k), vals.as_mut()) {
            (Some(v), Some(acc)) if r == 1 => acc.extend_from_slice(v),
            _ => vals = None,
        }
    }
    Ok((vec![TensorType::new(first.dtype, out)], vec![vals]))
}

/// Split sizes from the `split` input (newer opsets) or attribute (older), else `num_outputs` (or the
/// output count) equal parts, the last one smaller when the dimension does not divide.
pub(super) fn split(c: &OpCtx) -> NodeResult {
    let node = c.node;
    let t = c.input(0)?;
    let axis = norm_axis(attr_int(node, "axis").unwrap_or(0), t.shape.len())?;
    let d = t.shape[axis];
    let n = node.output.len();
    let sizes: Vec<usize> = if c.has(1) {
        c.const_input(1)?.iter().map(|&s| s as usize).collect()
    } else if let Some(s) = attr_ints(node, "split") {
        s.iter().map(|&s| s as usize).collect()
    } else {
        let parts = attr_int(node, "num_outputs").map_or(n, |k| k as usize);
        let chunk = d.div_ceil(parts);
        (0..parts)
            .map(|k| chunk.min(d.saturating_sub(k * chunk)))
            .collect()
    };
    if sizes.iter().sum::<usize>() != d || sizes.len() != n {
        return Err(format!("split sizes {sizes:?} do not fit dimension {d}"));
    }
    let outs = sizes
        .iter()
        .map(|&s| {
            let mut sh = t.shape.clone();
            sh[axis] = s;
            TensorType::new(t.dtype, sh)
        })
        .collect();
    Ok((outs, vec![]))
}

pub(super) fn expand(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let target: Vec<usize> = c.const_input(1)?.iter().map(|&d| d as usize).collect();
    let out = broadcast(&[&t.shape, &target])?;
    let v = c
        .value(0)
        .and_then(|v| broadcast_values(&out, &[(&t.shape, v)], |x| Some(x[0])));
    Ok((vec![TensorType::new(t.dtype, out)], vec![v]))
}

pub(super) fn tile(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let reps = c.const_input(1)?;
    if reps.len() != t.shape.len() {
        return Err("repeats do not fit the rank".into());
    }
    let out = t
        .shape
        .iter()
        .zip(reps)
        .map(|(&d, &r)| d * r as usize)
        .collect();
    same(TensorType::new(t.dtype, out))
}

/// Pads from the input (newer opsets) or attribute (older), over the `axes` input's axes or all of them.
pub(super) fn pad(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?;
    let r = t.shape.len();
    let pads = if c.has(1) {
        c.const_input(1)?.clone()
    } else {
        attr_ints(c.node, "pads").ok_or("missing pads")?
    };
    let axes: Vec<usize> = match c.axes(3)? {
        Some(a) if c.has(3) => a
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<Result<_, _>>()?,
        _ => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err("pads do not fit the axes".into());
    }
    let mut out = t.shape.clone();
    for (k, &a) in axes.iter().enumerate() {
        let d = out[a] as i64 + pads[k] + pads[k + axes.len()];
        if d < 0 {
            return Err("negative padded size".into());
        }
        out[a] = d as usize;
    }
    same(TensorType::new(t.dtype, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
    }
}
