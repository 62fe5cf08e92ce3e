//! Conv (1-D, 2-D, N-D; groups incl. depthwise, strides, dilations, explicit or automatic pads).
//!
//! With `Y[n,m,o] = Σ_{c∈group(m), j} X[n,c,o·s + j·d − pb] · W[m,c',j] + B[m]`:
//! - dX is the transposed convolution of dY with W (same strides, dilations, pads and group), with
//!   `output_padding` restoring the input rows the forward windows never reached;
//! - dW is a convolution of X with dY in which the roles of batch and channel are swapped and strides and
//!   dilations trade places, grouped by the forward `group`, then sliced to the kernel size;
//! - dB sums dY over the batch and spatial axes.

use crate::analysis::shapes::{attr_int, window, Window};
use crate::autodiff::{Attr, GradCtx, RuleArgs};

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

pub fn conv(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let (win, group) = conv_window(a)?;
    let (xs, ws) = (a.in_shape(0)?.to_vec(), a.in_shape(1)?.to_vec());
    let r = xs.len() - 2;
    let (n, c) = (xs[0], xs[1]);
    let cg = c / group;
    let dy = a.dy0()?.to_owned();
    let mut out = vec![None; a.node.input.len()];
    if a.needs(0) {
        out[0] = Some(transposed_window(
            ctx,
            &dy,
            a.input(1),
            group,
            &win,
            &xs[2..],
        ));
    }
    if a.needs(1) {
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
