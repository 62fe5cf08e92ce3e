//! Conv (1-D, 2-D, N-D; groups incl. depthwise, strides, dilations, explicit or automatic pads).
//!
//! With `Y[n,m,o] = Σ_{c∈group(m), j} X[n,c,o·s + j·d − pb] · W[m,c',j] + B[m]`:
//! - dX is the transposed convolution of dY with W (same strides, dilations, pads and group), with
//!   `output_padding` restoring the input rows the forward windows never reached; at stride 1 it is written as
//!   the equivalent Conv of dY with W flipped and its channel axes swapped, which ONNX Runtime runs faster;
//! - dW (group 1) is one matrix product of the patches of X as [C·k, O·N] with dY as [M, O·N] (im2col by one
//!   Gather of whole batch rows from X laid out [C, S, N]; columns N·O from a reshape when the windows tile the
//!   input). In ONNX Runtime this takes half the time of the convolution below (resnet32, batch 128), which is
//!   why it is the default; one GEMM per tap was measured 2.5× slower (small GEMMs use the cores poorly), and
//!   the earlier im2col from one strided Slice per tap plus a Concat 1.3–1.5× slower than the Gather;
//! - dW (groups, or index tensors over 4 Mi entries) is a convolution of X with dY in which the
//!   roles of batch and channel are swapped and strides and dilations trade places, grouped by the forward
//!   `group`, then sliced to the kernel size;
//! - dB sums dY over the batch and spatial axes.

use serde::{Deserialize, Serialize};

use crate::analysis::shapes::{attr_int, window, Window};
use crate::autodiff::{Attr, GradCtx, RuleArgs};

/// Metadata key on the last node of an im2col weight gradient, whose value is a [`WeightGradNote`] in JSON:
/// what the subgraph computes, so that an engine with a kernel of its own for it can replace the subgraph.
pub const WEIGHT_GRAD_NOTE: &str = "rl_rewrite.conv_weight_grad";

/// The weight gradient of an ungrouped convolution: `dW = Σ_{n,o} dY[n, m, o] · X[n, c, o·s + j·d − pads_begin]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightGradNote {
    /// The convolution's input X [N, C, spatial…].
    pub x: String,
    /// The gradient of its output, dY [N, M, out…].
    pub dy: String,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
}

type Grads = Result<Vec<Option<String>>, String>;

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// The adjoint of a windowed operator: the transposed convolution of `dy` ([N, M, O…]) with `w`
/// ([M, C/group, k…]) over the geometry `win`, giving a tensor shaped [N, C, spatial…] exactly.
/// Output rows past the last window get `output_padding` zeros; when the windows reach past the padded
/// input (pooling with `ceil_mode`) the end crop grows instead.
pub(super) fn transposed_window(
    ctx: &mut GradCtx,
    dy: &str,
    w: &str,
    group: usize,
    win: &Window,
    spatial: &[usize],
) -> String {
    let r = spatial.len();
    let mut pads_end = win.pads_end.clone();
    let mut opad = vec![0usize; r];
    for i in 0..r {
        let dk = (win.kernel[i] - 1) * win.dilations[i] + 1;
        let full = win.strides[i] * (win.out[i] - 1) + dk;
        let target = spatial[i] + win.pads_begin[i] + win.pads_end[i];
        if full <= target {
            opad[i] = target - full;
        } else {
            pads_end[i] += full - target;
        }
    }
    let mut pads = ints(&win.pads_begin);
    pads.extend(ints(&pads_end));
    let mut attrs = vec![
        ("group", Attr::Int(group as i64)),
        ("kernel_shape", Attr::Ints(ints(&win.kernel))),
        ("strides", Attr::Ints(ints(&win.strides))),
        ("dilations", Attr::Ints(ints(&win.dilations))),
        ("pads", Attr::Ints(pads)),
    ];
    if opad.iter().any(|&p| p != 0) {
        attrs.push(("output_padding", Attr::Ints(ints(&opad))));
    }
    ctx.op("ConvTranspose", &[dy, w], attrs)
}

/// The forward window of a Conv node.
fn conv_window(a: &RuleArgs) -> Result<(Window, usize), String> {
    let (x, w) = (a.in_shape(0)?, a.in_shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!("input {x:?} and weight {w:?} ranks do not fit"));
    }
    let group = attr_int(a.node, "group").unwrap_or(1) as usize;
    let win = window(a.node, &x[2..], &w[2..], false)?;
    if win.out != a.out_shape(0)?[2..] {
        return Err(format!(
            "window output {:?} differs from the inferred output {:?}",
            win.out,
            a.out_shape(0)?
        ));
    }
    Ok((win, group))
}

/// dX at stride 1 as `Conv(dY, W')` with `W'[g·Cg + c, m', j] = W[g·Mg + m', c, k − 1 − j]` (per group: channel
/// axes swapped, kernel flipped) and pads `(k − 1)·d − pad` on each side; `None` at other strides or when a
/// pad exceeds the dilated kernel.
fn input_grad_flipped(
    ctx: &mut GradCtx,
    dy: &str,
    w: &str,
    ws: &[usize],
    group: usize,
    win: &Window,
) -> Option<String> {
    let r = ws.len() - 2;
    let reach: Vec<usize> = (0..r)
        .map(|i| (win.kernel[i] - 1) * win.dilations[i])
        .collect();
    if win.strides.iter().any(|&s| s != 1)
        || (0..r).any(|i| win.pads_begin[i] > reach[i] || win.pads_end[i] > reach[i])
    {
        return None;
    }
    let (m, cg) = (ws[0], ws[1]);
    let mg = m / group;
    let mut grouped = vec![group, mg, cg];
    grouped.extend(&ws[2..]);
    let wg = ctx.reshape(w, &grouped);
    let mut perm = vec![0i64, 2, 1];
    perm.extend((3..3 + r as i64).collect::<Vec<_>>());
    let wt = ctx.op("Transpose", &[&wg], vec![("perm", Attr::Ints(perm))]);
    let mut swapped = vec![group * cg, mg];
    swapped.extend(&ws[2..]);
    let wt = ctx.reshape(&wt, &swapped);
    // Reversed along every kernel axis by a Gather of the indices k − 1, …, 0 (tract 0.23 mis-infers the shape
    // of a Slice with negative steps).
    let mut flipped = wt;
    for (i, &k) in ws[2..].iter().enumerate() {
        let reversed: Vec<i64> = (0..k as i64).rev().collect();
        let idx = ctx.const_i64(&reversed);
        flipped = ctx.op(
            "Gather",
            &[&flipped, &idx],
            vec![("axis", Attr::Int(2 + i as i64))],
        );
    }
    let mut pads: Vec<i64> = (0..r)
        .map(|i| (reach[i] - win.pads_begin[i]) as i64)
        .collect();
    pads.extend((0..r).map(|i| (reach[i] - win.pads_end[i]) as i64));
    Some(ctx.op(
        "Conv",
        &[dy, &flipped],
        vec![
            ("group", Attr::Int(group as i64)),
            ("kernel_shape", Attr::Ints(ints(&ws[2..]))),
            ("dilations", Attr::Ints(ints(&win.dilations))),
            ("pads", Attr::Ints(pads)),
        ],
    ))
}

/// Most entries of the im2col index tensor (kernel taps × output positions, int64) before dW takes the
/// batch/channel-swapped convolution instead: 4 Mi entries, a 32 MiB initializer.
const MAX_GATHERED: usize = 1 << 22;

/// dW of an ungrouped Conv as one `Gemm(P[C·k, cols], dY[M, cols], transB)` transposed to [M, C·k], with P the
/// patches of X, so that every copy building P moves whole rows. The product's operands are in this order
/// because ONNX Runtime's GEMM is 1.2–1.6× faster with the long side first (resnet32 shapes). `None` when the
/// index tensor would be too large.
fn weight_grad_im2col(
    ctx: &mut GradCtx,
    x: &str,
    dy: &str,
    xs: &[usize],
    ws: &[usize],
    win: &Window,
) -> Option<String> {
    let r = xs.len() - 2;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    let taps: usize = win.kernel.iter().product();
    let positions: usize = win.out.iter().product();
    let tiles = (0..r).all(|i| {
        win.strides[i] == win.kernel[i]
            && win.dilations[i] == 1
            && win.pads_begin[i] == 0
            && win.pads_end[i] == 0
    });
    if !tiles && taps * positions > MAX_GATHERED {
        return None;
    }
    let spatial: Vec<i64> = (2..2 + r as i64).collect();
    // The columns of P and dY, (n, o…) or (o…, n), whichever P's construction gives.
    let mut dy_perm: Vec<i64> = vec![1];
    let patches = if tiles {
        // X [N, C, O1·k1, …] (cropped to whole windows) → [N, C, O1, k1, …] → [C, k…, N, O…].
        let mut xc = x.to_owned();
        if (0..r).any(|i| win.out[i] * win.kernel[i] != xs[2 + i]) {
            let starts = ctx.const_i64(&vec![0; r]);
            let ends: Vec<i64> = (0..r)
                .map(|i| (win.out[i] * win.kernel[i]) as i64)
                .collect();
            let ends = ctx.const_i64(&ends);
            let axes = ctx.const_i64(&spatial);
            xc = ctx.op("Slice", &[&xc, &starts, &ends, &axes], vec![]);
        }
        let mut split = vec![n, c];
        for i in 0..r {
            split.extend([win.out[i], win.kernel[i]]);
        }
        let xr = ctx.reshape(&xc, &split);
        let mut perm = vec![1i64];
        perm.extend((0..r as i64).map(|i| 3 + 2 * i));
        perm.push(0);
        perm.extend((0..r as i64).map(|i| 2 + 2 * i));
        dy_perm.push(0);
        dy_perm.extend(&spatial);
        ctx.op("Transpose", &[&xr], vec![("perm", Attr::Ints(perm))])
    } else {
        // X → [C, S…, N], padded only as far as the last window reaches, flattened to [C, S, N]; one Gather of
        // whole batch rows with indices [k, O] (the flat padded position each tap reads for each output
        // position) gives [C, k, O, N]. Strides, dilations and pads live in the indices.
        let mut to_last: Vec<i64> = (1..2 + r as i64).collect();
        to_last.push(0);
        let xt = ctx.op(
            "Transpose",
            &[x],
            vec![("perm", Attr::Ints(to_last.clone()))],
        );
        let mut padded = Vec::with_capacity(r);
        let mut pads_end = Vec::with_capacity(r);
        for i in 0..r {
            let reach =
                (win.out[i] - 1) * win.strides[i] + (win.kernel[i] - 1) * win.dilations[i] + 1;
            let end = reach.saturating_sub(xs[2 + i] + win.pads_begin[i]);
            pads_end.push(end);
            padded.push(xs[2 + i] + win.pads_begin[i] + end);
        }
        let mut xp = xt;
        if win.pads_begin.iter().chain(&pads_end).any(|&p| p != 0) {
            let mut pads = vec![0i64];
            pads.extend(ints(&win.pads_begin));
            pads.extend([0, 0]);
            pads.extend(ints(&pads_end));
            pads.push(0);
            let pads = ctx.const_i64(&pads);
            xp = ctx.op("Pad", &[&xp, &pads], vec![]);
        }
        let xf = ctx.reshape(&xp, &[c, padded.iter().product(), n]);
        // Row-major strides of the padded spatial grid.
        let mut grid = vec![1usize; r];
        for i in (0..r.saturating_sub(1)).rev() {
            grid[i] = grid[i + 1] * padded[i + 1];
        }
        // Flat position = where output position o's window starts + where tap t sits in it; taps in row-major
        // order over the kernel dimensions, the order of dW's own layout.
        let offsets = |count: usize, dims: &[usize], step: &[usize]| -> Vec<usize> {
            (0..count)
                .map(|k| {
                    let at = unravel(k, dims);
                    (0..r).map(|i| at[i] * step[i] * grid[i]).sum()
                })
                .collect()
        };
        let starts = offsets(positions, &win.out, &win.strides);
        let mut index = Vec::with_capacity(taps * positions);
        for tap in offsets(taps, &win.kernel, &win.dilations) {
            index.extend(starts.iter().map(|&s| (s + tap) as i64));
        }
        let index = ctx.const_i64_shaped(&[taps, positions], &index);
        dy_perm.extend(&spatial);
        dy_perm.push(0);
        ctx.op("Gather", &[&xf, &index], vec![("axis", Attr::Int(1))])
    };
    let cols = n * positions;
    let p = ctx.reshape(&patches, &[c * taps, cols]);
    let dyt = ctx.op("Transpose", &[dy], vec![("perm", Attr::Ints(dy_perm))]);
    let dym = ctx.reshape(&dyt, &[m, cols]);
    let g = ctx.op("Gemm", &[&p, &dym], vec![("transB", Attr::Int(1))]);
    // [C·k, M] → [C, k, M] → [M, C, k]: not a plain 2-D transpose of the product, which ONNX Runtime would fold
    // back into the GEMM by swapping its operands again.
    let g3 = ctx.reshape(&g, &[c, taps, m]);
    let gt = ctx.op(
        "Transpose",
        &[&g3],
        vec![("perm", Attr::Ints(vec![2, 0, 1]))],
    );
    let dw = ctx.reshape(&gt, ws);
    let note = WeightGradNote {
        x: x.to_owned(),
        dy: dy.to_owned(),
        kernel: win.kernel.clone(),
        strides: win.strides.clone(),
        dilations: win.dilations.clone(),
        pads_begin: win.pads_begin.clone(),
    };
    let note = serde_json::to_string(&note).expect("plain data serializes");
    ctx.annotate(&dw, WEIGHT_GRAD_NOTE, note);
    Some(dw)
}

/// The multi-index of `flat` in a row-major grid of `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut index = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        index[i] = flat % dims[i];
        flat /= dims[i];
    }
    index
}

pub fn conv(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let (win, group) = conv_window(a)?;
    let (xs, ws) = (a.in_shape(0)?.to_vec(), a.in_shape(1)?.to_vec());
    let r = xs.len() - 2;
    let (n, c) = (xs[0], xs[1]);
    let cg = c / group;
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None; a.node.input.len()];
    // tract 0.23 folds a broadcast (Expand, e.g. the gradient of a global pooling) into a following EinSum with
    // the wrong shape; its Conv and Gemm become EinSums, so such a dY takes the ConvTranspose and batch/channel
    // swapped paths.
    let fast = !matches!(ctx.emitted_op(&dy), Some("Expand" | "Tile"));
    if a.needs(0) && fast {
        out[0] = input_grad_flipped(ctx, &dy, a.input(1), &ws, group, &win);
    }
    if a.needs(0) && out[0].is_none() {
        out[0] = Some(transposed_window(
            ctx,
            &dy,
            a.input(1),
            group,
            &win,
            &xs[2..],
        ));
    }
    if a.needs(1) && group == 1 && fast {
        out[1] = weight_grad_im2col(ctx, a.input(0), &dy, &xs, &ws, &win);
    }
    if a.needs(1) && out[1].is_none() {
        // X [N, C, S…] → [N, g, Cg, S…] → [Cg, g, N, S…] → [Cg, g·N, S…]: batch Cg, g groups of N channels.
        let mut split = vec![n, group, cg];
        split.extend(&xs[2..]);
        let xr = ctx.reshape(a.input(0), &split);
        let mut perm: Vec<i64> = vec![2, 1, 0];
        perm.extend((3..3 + r as i64).collect::<Vec<_>>());
        let xt = ctx.op("Transpose", &[&xr], vec![("perm", Attr::Ints(perm))]);
        let mut merged = vec![cg, group * n];
        merged.extend(&xs[2..]);
        let xm = ctx.reshape(&xt, &merged);
        // dY [N, M, O…] → [M, N, O…]: M filters of N channels, grouped like the forward channels.
        let mut swap: Vec<i64> = vec![1, 0];
        swap.extend((2..2 + r as i64).collect::<Vec<_>>());
        let dyt = ctx.op(
            "Transpose",
            &[&dy],
            vec![("perm", Attr::Ints(swap.clone()))],
        );
        // Z[c', m, j] = Σ_{n,o} X[n, g(m)·Cg + c', j·d + o·s − pb] · dY[n, m, o]: strides d, dilations s.
        // The end pad is trimmed to what the last tap reaches; a kernel-size Slice covers the rest.
        let mut pads_end = Vec::with_capacity(r);
        let mut got = Vec::with_capacity(r);
        for i in 0..r {
            let dk = (win.kernel[i] - 1) * win.dilations[i] + 1;
            let padded = xs[2 + i] + win.pads_begin[i] + win.pads_end[i];
            let rem = padded - dk - win.strides[i] * (win.out[i] - 1);
            let pe = win.pads_end[i].saturating_sub(rem);
            let span = xs[2 + i] + win.pads_begin[i] + pe - (win.out[i] - 1) * win.strides[i];
            pads_end.push(pe);
            got.push((span - 1) / win.dilations[i] + 1);
        }
        let mut pads = ints(&win.pads_begin);
        pads.extend(ints(&pads_end));
        let z = ctx.op(
            "Conv",
            &[&xm, &dyt],
            vec![
                ("group", Attr::Int(group as i64)),
                ("kernel_shape", Attr::Ints(ints(&win.out))),
                ("strides", Attr::Ints(ints(&win.dilations))),
                ("dilations", Attr::Ints(ints(&win.strides))),
                ("pads", Attr::Ints(pads)),
            ],
        );
        let mut g = ctx.op("Transpose", &[&z], vec![("perm", Attr::Ints(swap))]);
        if got != ws[2..] {
            let axes: Vec<i64> = (2..2 + r as i64).collect();
            let starts = ctx.const_i64(&vec![0; r]);
            let ends = ctx.const_i64(&ints(&ws[2..]));
            let axes = ctx.const_i64(&axes);
            g = ctx.op("Slice", &[&g, &starts, &ends, &axes], vec![]);
        }
        out[1] = Some(g);
    }
    if a.node.input.len() > 2 && !a.input(2).is_empty() && a.needs(2) {
        let mut axes = vec![0];
        axes.extend(2..2 + r);
        out[2] = Some(ctx.reduce_sum(&dy, &axes, false));
    }
    Ok(out)
}
