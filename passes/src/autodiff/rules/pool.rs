//! Pooling: GlobalAveragePool, AveragePool (count_include_pad, strides, pads, dilations, ceil_mode) and
//! MaxPool (gradient routed through its Indices output).

use bytes::Bytes;

use super::conv::transposed_window;
use crate::analysis::shapes::{attr_int, attr_ints, window, Window};
use crate::autodiff::{Attr, GradCtx, RuleArgs};
use crate::onnx::{attribute_proto::AttributeType, AttributeProto, TensorProto};

type Grads = Result<Vec<Option<String>>, String>;

/// A float initializer of `dtype` holding `values` in a static shape.
fn const_float(ctx: &mut GradCtx, dtype: i32, shape: &[usize], values: &[f64]) -> String {
    let name = ctx.fresh("const");
    let mut raw = Vec::new();
    for &v in values {
        let t = crate::tensor::scalar("", dtype, v);
        raw.extend_from_slice(t.raw_data.as_deref().unwrap_or_default());
    }
    ctx.initializers.push(TensorProto {
        name: Some(name.clone()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    });
    name
}

/// dX = dY / (spatial size), broadcast back over the spatial axes.
pub fn global_average_pool(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let t = a.in_type(0)?.clone();
    let count: usize = t.shape[2..].iter().product();
    let k = ctx.scalar(t.dtype, count as f64);
    let q = ctx.op("Div", &[a.dy0()?, &k], vec![]);
    let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let target = ctx.const_i64(&dims);
    Ok(vec![Some(ctx.op("Expand", &[&q, &target], vec![]))])
}

/// The pooling window of a MaxPool/AveragePool node, checked against the inferred output.
fn pool_window(a: &RuleArgs) -> Result<Window, String> {
    let x = a.in_shape(0)?;
    if x.len() < 3 {
        return Err(format!("input {x:?} has no spatial dims"));
    }
    let kernel: Vec<usize> = attr_ints(a.node, "kernel_shape")
        .ok_or("missing kernel_shape")?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let ceil = attr_int(a.node, "ceil_mode").unwrap_or(0) != 0;
    let win = window(a.node, &x[2..], &kernel, ceil)?;
    if win.out != a.out_shape(0)?[2..] {
        return Err(format!(
            "window output {:?} differs from the inferred output {:?}",
            win.out,
            a.out_shape(0)?
        ));
    }
    Ok(win)
}

/// Number of taps of each output window lying in `[lo, hi)` (input coordinates), per spatial axis.
fn taps(win: &Window, axis: usize, lo: i64, hi: i64) -> Vec<usize> {
    (0..win.out[axis])
        .map(|o| {
            (0..win.kernel[axis])
                .filter(|&j| {
                    let p = (o * win.strides[axis] + j * win.dilations[axis]) as i64
                        - win.pads_begin[axis] as i64;
                    lo <= p && p < hi
                })
                .count()
        })
        .collect()
}

/// `Y = Σ_window X / count`: dX = ConvTranspose(dY / count, ones[C, 1, k…], group C). `count` counts the
/// window taps inside the input (count_include_pad = 0) or inside the padded input (= 1); it is a
/// constant of the static shapes.
pub fn average_pool(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let win = pool_window(a)?;
    let t = a.in_type(0)?.clone();
    let (spatial, c) = (&t.shape[2..], t.shape[1]);
    let include_pad = attr_int(a.node, "count_include_pad").unwrap_or(0) != 0;
    let per_axis: Vec<Vec<usize>> = (0..spatial.len())
        .map(|i| {
            let (lo, hi) = if include_pad {
                (
                    -(win.pads_begin[i] as i64),
                    (spatial[i] + win.pads_end[i]) as i64,
                )
            } else {
                (0, spatial[i] as i64)
            };
            taps(&win, i, lo, hi)
        })
        .collect();
    // The outer product of the per-axis counts, row-major over the output's spatial axes.
    let mut counts = vec![1.0f64];
    for axis in &per_axis {
        counts = counts
            .iter()
            .flat_map(|&p| axis.iter().map(move |&q| p * q as f64))
            .collect();
    }
    if counts.contains(&0.0) {
        return Err("a pooling window lies entirely in the padding".into());
    }
    let mut cshape = vec![1, 1];
    cshape.extend(&win.out);
    let count = const_float(ctx, t.dtype, &cshape, &counts);
    let q = ctx.op("Div", &[a.dy0()?, &count], vec![]);
    let mut wshape = vec![c, 1];
    wshape.extend(&win.kernel);
    let ones = ctx.filled(t.dtype, &wshape, 1.0);
    Ok(vec![Some(transposed_window(
        ctx, &q, &ones, c, &win, spatial,
    ))])
}

/// `Y = max over the window`: each dY element flows to the input element MaxPool's Indices output names
/// (flat over N, C, spatial; one element per window). Contributions of overlapping windows are summed by
/// ScatterElements with `reduction = "add"` (opset 16); windows that cannot overlap scatter without
/// reduction. The forward Indices output is reused when the graph has one, else a second MaxPool computes it.
///
/// Ties: torch.nn.functional.max_pool*d routes each window's gradient to its *first* maximum in scan order
/// (row-major over the window, padding never chosen), and summed over overlapping windows. ONNX leaves the
/// index of a tie unspecified; ONNX Runtime's CPU kernel and tract both keep the first maximum (a later
/// element must be strictly greater to replace it), so routing through Indices is torch's routing on both
/// (the conventions tests of tests/autodiff_fd check it on tract; tests/ort_crosscheck.py runs the same graphs
/// in ONNX Runtime).
pub fn max_pool(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let win = pool_window(a)?;
    if attr_int(a.node, "storage_order").unwrap_or(0) != 0 {
        return Err("storage_order = 1 (column-major Indices) is not supported".into());
    }
    let t = a.in_type(0)?.clone();
    let indices = match a.node.output.get(1).filter(|o| !o.is_empty()) {
        Some(i) => i.clone(),
        None => {
            let mut n = a.node.clone();
            let outs = ctx.op_n("MaxPool", &[a.input(0)], vec![], 2);
            n.input = vec![a.input(0).to_owned()];
            n.output = outs.clone();
            n.name = Some(outs[0].clone());
            *ctx.nodes.last_mut().expect("just emitted") = n;
            outs[1].clone()
        }
    };
    let overlap =
        (0..win.kernel.len()).any(|i| win.strides[i] < (win.kernel[i] - 1) * win.dilations[i] + 1);
    let numel = t.numel();
    let flat = [numel];
    let zeros = ctx.filled(t.dtype, &flat, 0.0);
    let minus_one = ctx.const_i64(&[-1]);
    let idx = ctx.op("Reshape", &[&indices, &minus_one], vec![]);
    let upd = ctx.op("Reshape", &[a.dy0()?, &minus_one], vec![]);
    let scattered = ctx.op(
        "ScatterElements",
        &[&zeros, &idx, &upd],
        vec![("axis", Attr::Int(0))],
    );
    if overlap {
        let opset = super::super::default_opset(ctx.graph);
        if opset < 16 {
            return Err(format!(
                "overlapping windows need ScatterElements reduction (opset 16), the model has opset {opset}"
            ));
        }
        let n = ctx.nodes.last_mut().expect("just emitted");
        n.attribute.push(AttributeProto {
            name: Some("reduction".into()),
            s: Some(b"add".to_vec()),
            r#type: Some(AttributeType::String as i32),
            ..Default::default()
        });
    }
    Ok(vec![Some(ctx.reshape(&scattered, &t.shape))])
}
