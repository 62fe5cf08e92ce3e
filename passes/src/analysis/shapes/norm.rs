//! Normalisations: the output keeps the input's type; the extra outputs are per-channel or per-row
//! statistics.

use super::{attr_int, norm_axis, same, NodeResult, OpCtx, TensorType};

/// Y, then running mean/var and saved mean/var (training mode), one value per channel.
pub(super) fn batch_normalization(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?.clone();
    let ch = TensorType::new(c.input(1)?.dtype, vec![*t.shape.get(1).unwrap_or(&1)]);
    Ok((vec![t, ch.clone(), ch.clone(), ch.clone(), ch], vec![]))
}

pub(super) fn instance_normalization(c: &OpCtx) -> NodeResult {
    same(c.input(0)?.clone())
}

/// Y, then Mean and InvStdDev in the stash type, with the normalised axes kept as 1.
pub(super) fn layer_normalization(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?.clone();
    let axis = norm_axis(attr_int(c.node, "axis").unwrap_or(-1), t.shape.len())?;
    let stash = attr_int(c.node, "stash_type").unwrap_or(1) as i32;
    let mut s = t.shape.clone();
    s[axis..].iter_mut().for_each(|d| *d = 1);
    let stat = TensorType::new(stash, s);
    Ok((vec![t, stat.clone(), stat], vec![]))
}
