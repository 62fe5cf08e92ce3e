//! `MatMul` (numpy semantics: 1-D operands promoted, batch dims broadcast) and `Gemm`.

use super::{attr_int, broadcast, same, NodeResult, OpCtx, TensorType};

pub(super) fn matmul(c: &OpCtx) -> NodeResult {
    let (a, b) = (c.shape(0)?, c.shape(1)?);
    if a.is_empty() || b.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2 = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2 = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    // A promoted 1-D operand's unit dimension is dropped again.
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    same(TensorType::new(c.input(0)?.dtype, out))
}

pub(super) fn gemm(c: &OpCtx) -> NodeResult {
    let (a, b) = (c.shape(0)?, c.shape(1)?);
    if a.len() != 2 || b.len() != 2 {
        return Err("Gemm needs 2-D A and B".into());
    }
    let ta = attr_int(c.node, "transA").unwrap_or(0) != 0;
    let tb = attr_int(c.node, "transB").unwrap_or(0) != 0;
    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(format!("inner dimensions differ: {a:?} x {b:?}"));
    }
    if c.has(2) {
        broadcast(&[c.shape(2)?, &[m, n]])?;
    }
    same(TensorType::new(c.input(0)?.dtype, vec![m, n]))
}
