//! Constants and integer evaluation: `Constant`, `ConstantOfShape`, `Range`, `Shape`, `Size`, whose outputs
//! are known statically and feed the shape arithmetic of later nodes.

use crate::onnx::TensorProto;

use super::{attr, attr_int, NodeResult, OpCtx, TensorType, FLOAT, INT32, INT64, MAX_TRACKED};

/// Values of an int64/int32 initializer (raw or typed storage); `None` for other types or large tensors.
pub fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    let n: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
    if n > MAX_TRACKED {
        return None;
    }
    let v: Vec<i64> = match (t.data_type(), &t.raw_data) {
        (INT64, Some(raw)) => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        (INT64, None) => t.int64_data.clone(),
        (INT32, Some(raw)) => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
            .collect(),
        (INT32, None) => t.int32_data.iter().map(|&x| x as i64).collect(),
        _ => return None,
    };
    (v.len() == n).then_some(v)
}

pub(super) fn constant(c: &OpCtx) -> NodeResult {
    let a = c.node.attribute.first().ok_or("no value attribute")?;
    let (t, v) = match a.name() {
        "value" => {
            let t = a.t.as_ref().ok_or("value is not a tensor")?;
            (
                TensorType::new(
                    t.data_type(),
                    t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                ),
                int_values(t),
            )
        }
        "value_int" => (TensorType::new(INT64, vec![]), a.i.map(|i| vec![i])),
        "value_ints" => (
            TensorType::new(INT64, vec![a.ints.len()]),
            Some(a.ints.clone()),
        ),
        "value_float" => (TensorType::new(FLOAT, vec![]), None),
        "value_floats" => (TensorType::new(FLOAT, vec![a.floats.len()]), None),
        other => return Err(format!("unsupported attribute {other}")),
    };
    Ok((vec![t], vec![v]))
}

pub(super) fn constant_of_shape(c: &OpCtx) -> NodeResult {
    let shape: Vec<usize> = c.const_input(0)?.iter().map(|&d| d as usize).collect();
    let (dtype, fill) = match attr(c.node, "value").and_then(|a| a.t.as_ref()) {
        Some(t) => (
            t.data_type(),
            int_values(t).and_then(|v| v.first().copied()),
        ),
        None => (FLOAT, None),
    };
    let n: usize = shape.iter().product();
    let v = fill.filter(|_| n <= MAX_TRACKED).map(|f| vec![f; n]);
    Ok((vec![TensorType::new(dtype, shape)], vec![v]))
}

pub(super) fn range(c: &OpCtx) -> NodeResult {
    let (s, l, d) = (c.const_input(0)?, c.const_input(1)?, c.const_input(2)?);
    let (s, l, d) = (s[0], l[0], d[0]);
    if d == 0 {
        return Err("delta 0".into());
    }
    let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
    let v: Vec<i64> = (0..n as i64).map(|k| s + k * d).collect();
    Ok((
        vec![TensorType::new(c.input(0)?.dtype, vec![n])],
        vec![Some(v)],
    ))
}

pub(super) fn shape(c: &OpCtx) -> NodeResult {
    let s = c.shape(0)?;
    let r = s.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(attr_int(c.node, "start").unwrap_or(0));
    let end = clampi(attr_int(c.node, "end").unwrap_or(r));
    let v: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok((vec![TensorType::new(INT64, vec![v.len()])], vec![Some(v)]))
}

pub(super) fn size(c: &OpCtx) -> NodeResult {
    Ok((
        vec![TensorType::new(INT64, vec![])],
        vec![Some(vec![c.input(0)?.numel() as i64])],
    ))
}
