//! Elementwise ops: unary ops keep their input's type; binary and variadic ops broadcast numpy-style, and
//! their integer results are evaluated when every operand's value is known (shape arithmetic).

use super::{attr_int, same, NodeResult, OpCtx, TensorType, BOOL, INT32, INT64, MAX_TRACKED};

/// Numpy broadcasting of shapes.
pub fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// Row-major strides (in elements) of a shape.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Elementwise integer op over broadcast values; `None` when the result is too large to track or `f`
/// cannot evaluate some element.
pub(super) fn broadcast_values(
    out: &[usize],
    args: &[(&[usize], &[i64])],
    f: impl Fn(&[i64]) -> Option<i64>,
) -> Option<Vec<i64>> {
    let n: usize = out.iter().product();
    if n > MAX_TRACKED {
        return None;
    }
    let ostr = strides_of(out);
    let mut res = Vec::with_capacity(n);
    let mut buf = vec![0i64; args.len()];
    for flat in 0..n {
        for (k, (shape, vals)) in args.iter().enumerate() {
            let off = out.len() - shape.len();
            let st = strides_of(shape);
            let mut idx = 0;
            for (i, &d) in shape.iter().enumerate() {
                let coord = (flat / ostr[off + i]) % out[off + i];
                if d != 1 {
                    idx += coord * st[i];
                }
            }
            buf[k] = vals[idx];
        }
        res.push(f(&buf)?);
    }
    Some(res)
}

/// Float unary ops: the input's type, no value.
pub(super) fn unary(c: &OpCtx) -> NodeResult {
    Ok((vec![c.input(0)?.clone()], vec![None]))
}

/// `Identity`, `Neg`, `Abs`: the input's type, and its value mapped when known.
pub(super) fn integer_unary(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?.clone();
    let v = c.value(0).map(|v| match c.node.op_type() {
        "Neg" => v.iter().map(|x| -x).collect(),
        "Abs" => v.iter().map(|x| x.abs()).collect(),
        _ => v.clone(),
    });
    Ok((vec![t], vec![v]))
}

pub(super) fn cast(c: &OpCtx) -> NodeResult {
    let to = attr_int(c.node, "to").ok_or("missing attribute 'to'")? as i32;
    let t = TensorType::new(to, c.shape(0)?.to_vec());
    let v = if to == INT64 || to == INT32 {
        c.value(0).cloned()
    } else {
        None
    };
    Ok((vec![t], vec![v]))
}

pub(super) fn cast_like(c: &OpCtx) -> NodeResult {
    same(TensorType::new(c.input(1)?.dtype, c.shape(0)?.to_vec()))
}

pub(super) fn not(c: &OpCtx) -> NodeResult {
    Ok((
        vec![TensorType::new(BOOL, c.shape(0)?.to_vec())],
        vec![c
            .value(0)
            .map(|v| v.iter().map(|&x| (x == 0) as i64).collect())],
    ))
}

/// The output keeps the input's type; the mask is boolean of the same shape.
pub(super) fn dropout(c: &OpCtx) -> NodeResult {
    let t = c.input(0)?.clone();
    let mask = TensorType::new(BOOL, t.shape.clone());
    Ok((vec![t, mask], vec![]))
}

/// Binary and variadic ops (arithmetic, comparisons, logic, `Where`) over broadcast inputs.
pub(super) fn broadcasting(c: &OpCtx) -> NodeResult {
    let op = c.node.op_type();
    let shapes: Vec<&[usize]> = c
        .ins
        .iter()
        .map(|t| {
            t.as_ref()
                .map(|t| t.shape.as_slice())
                .ok_or("missing input")
        })
        .collect::<Result<_, _>>()?;
    let out = broadcast(&shapes)?;
    let dtype = match op {
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => BOOL,
        "Where" => c.input(1)?.dtype,
        _ => c.input(0)?.dtype,
    };
    let mut v = None;
    let ints = c.ins.iter().all(|t| {
        t.as_ref()
            .is_some_and(|t| t.dtype == INT64 || t.dtype == INT32 || t.dtype == BOOL)
    });
    let vals: Option<Vec<&Vec<i64>>> = (0..c.ins.len()).map(|k| c.value(k)).collect();
    if let (true, Some(vals)) = (ints, vals) {
        let args: Vec<(&[usize], &[i64])> = shapes
            .iter()
            .zip(&vals)
            .map(|(s, v)| (*s, v.as_slice()))
            .collect();
        v = broadcast_values(&out, &args, |x| integer_op(op, x));
    }
    Ok((vec![TensorType::new(dtype, out)], vec![v]))
}

/// One element of an integer op over its operands `x`; `None` for ops not evaluated (`Pow`, `Mean`, logic)
/// and for division by zero.
fn integer_op(op: &str, x: &[i64]) -> Option<i64> {
    Some(match op {
        "Add" | "Sum" => x.iter().sum(),
        "Sub" => x[0] - x[1],
        "Mul" => x[0] * x[1],
        "Div" => x[0].checked_div(x[1])?,
        "Mod" => x[0].checked_rem(x[1])?,
        "Max" => *x.iter().max()?,
        "Min" => *x.iter().min()?,
        "Equal" => (x[0] == x[1]) as i64,
        "Less" => (x[0] < x[1]) as i64,
        "Greater" => (x[0] > x[1]) as i64,
        "LessOrEqual" => (x[0] <= x[1]) as i64,
        "GreaterOrEqual" => (x[0] >= x[1]) as i64,
        "Where" => {
            if x[0] != 0 {
                x[1]
            } else {
                x[2]
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[&[2, 1, 3], &[4, 1]]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast(&[&[2, 3], &[4, 3]]).is_err());
        assert_eq!(broadcast(&[&[], &[5]]).unwrap(), vec![5]);
    }
}
