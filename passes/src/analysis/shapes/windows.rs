//! Sliding windows: `Conv`, `ConvTranspose` and pooling, with the window geometry (padding, output size)
//! that the autodiff rules of these ops share.

use crate::onnx::NodeProto;

use super::{attr_int, attr_ints, attr_string, same, NodeResult, OpCtx, TensorType, INT64};

/// Spatial geometry of a convolution or pooling window: padding (begin, end) and output size per axis.
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub out: Vec<usize>,
}

/// Resolves a Conv/MaxPool/AveragePool window over `spatial` input dims (auto_pad included).
pub fn window(
    node: &NodeProto,
    spatial: &[usize],
    kernel: &[usize],
    ceil_mode: bool,
) -> Result<Window, String> {
    let r = spatial.len();
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; r]);
    let dilations = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; r]);
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * r]);
    if strides.len() != r || dilations.len() != r || pads.len() != 2 * r || kernel.len() != r {
        return Err(format!(
            "window attributes do not match {r} spatial dimensions"
        ));
    }
    let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut w = Window {
        kernel: kernel.to_vec(),
        strides: strides.iter().map(|&s| s as usize).collect(),
        dilations: dilations.iter().map(|&d| d as usize).collect(),
        pads_begin: vec![0; r],
        pads_end: vec![0; r],
        out: vec![0; r],
    };
    for i in 0..r {
        let (n, s, dk) = (
            spatial[i],
            w.strides[i],
            (kernel[i] - 1) * w.dilations[i] + 1,
        );
        match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let out = n.div_ceil(s);
                let total = ((out - 1) * s + dk).saturating_sub(n);
                let small = total / 2;
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                w.pads_begin[i] = b;
                w.pads_end[i] = e;
                w.out[i] = out;
            }
            "VALID" | "NOTSET" => {
                if auto_pad == "NOTSET" {
                    w.pads_begin[i] = pads[i] as usize;
                    w.pads_end[i] = pads[i + r] as usize;
                }
                let padded = n + w.pads_begin[i] + w.pads_end[i];
                if padded < dk {
                    return Err(format!("window {dk} larger than padded input {padded}"));
                }
                let mut out = if ceil_mode {
                    (padded - dk).div_ceil(s) + 1
                } else {
                    (padded - dk) / s + 1
                };
                // The last window must start inside the input or the begin padding.
                if ceil_mode && (out - 1) * s >= n + w.pads_begin[i] {
                    out -= 1;
                }
                w.out[i] = out;
            }
            other => return Err(format!("unknown auto_pad {other}")),
        }
    }
    Ok(w)
}

pub(super) fn conv(c: &OpCtx) -> NodeResult {
    let (x, w) = (c.shape(0)?, c.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!("input {x:?} and weight {w:?} ranks do not fit"));
    }
    let group = attr_int(c.node, "group").unwrap_or(1) as usize;
    if x[1] != w[1] * group {
        return Err(format!(
            "input channels {} != weight channels {} x group {group}",
            x[1], w[1]
        ));
    }
    let kernel = attr_ints(c.node, "kernel_shape")
        .map(|k| k.iter().map(|&d| d as usize).collect())
        .unwrap_or_else(|| w[2..].to_vec());
    let win = window(c.node, &x[2..], &kernel, false)?;
    let mut out = vec![x[0], w[0]];
    out.extend(win.out);
    same(TensorType::new(c.input(0)?.dtype, out))
}

pub(super) fn conv_transpose(c: &OpCtx) -> NodeResult {
    let node = c.node;
    let (x, w) = (c.shape(0)?, c.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!("input {x:?} and weight {w:?} ranks do not fit"));
    }
    let r = x.len() - 2;
    let group = attr_int(node, "group").unwrap_or(1) as usize;
    let mut out = vec![x[0], w[1] * group];
    if let Some(os) = attr_ints(node, "output_shape") {
        let os = &os[os.len() - r..];
        out.extend(os.iter().map(|&d| d as usize));
    } else {
        let kernel: Vec<usize> = attr_ints(node, "kernel_shape")
            .map(|k| k.iter().map(|&d| d as usize).collect())
            .unwrap_or_else(|| w[2..].to_vec());
        let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; r]);
        let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; r]);
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * r]);
        let opad = attr_ints(node, "output_padding").unwrap_or_else(|| vec![0; r]);
        let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        for i in 0..r {
            let s = strides[i];
            let dk = (kernel[i] as i64 - 1) * dil[i] + 1;
            let o = match auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => x[2 + i] as i64 * s,
                "VALID" => s * (x[2 + i] as i64 - 1) + opad[i] + dk,
                _ => s * (x[2 + i] as i64 - 1) + opad[i] + dk - pads[i] - pads[i + r],
            };
            if o <= 0 {
                return Err("empty output".into());
            }
            out.push(o as usize);
        }
    }
    same(TensorType::new(c.input(0)?.dtype, out))
}

/// `MaxPool`, `AveragePool`, `LpPool`: Y, then MaxPool's int64 Indices of the same shape.
pub(super) fn pool(c: &OpCtx) -> NodeResult {
    let x = c.shape(0)?;
    if x.len() < 3 {
        return Err(format!("input {x:?} has no spatial dims"));
    }
    let kernel: Vec<usize> = attr_ints(c.node, "kernel_shape")
        .ok_or("missing kernel_shape")?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let ceil = attr_int(c.node, "ceil_mode").unwrap_or(0) != 0;
    let win = window(c.node, &x[2..], &kernel, ceil)?;
    let mut out = vec![x[0], x[1]];
    out.extend(win.out);
    let y = TensorType::new(c.input(0)?.dtype, out.clone());
    Ok((vec![y, TensorType::new(INT64, out)], vec![]))
}

pub(super) fn global_pool(c: &OpCtx) -> NodeResult {
    let x = c.shape(0)?;
    let mut out = x[..2.min(x.len())].to_vec();
    out.extend(std::iter::repeat_n(1, x.len().saturating_sub(2)));
    same(TensorType::new(c.input(0)?.dtype, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::AttributeProto;

    fn win_node(attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            s: Some(v.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn windows_follow_auto_pad_and_ceil_mode() {
        // 7 wide, kernel 3, stride 2: NOTSET pads 1/1 -> 4; VALID -> 3; SAME -> ceil(7/2) = 4.
        let n = win_node(vec![ints("strides", &[2]), ints("pads", &[1, 1])]);
        assert_eq!(window(&n, &[7], &[3], false).unwrap().out, vec![4]);
        let n = win_node(vec![ints("strides", &[2]), string("auto_pad", "VALID")]);
        assert_eq!(window(&n, &[7], &[3], false).unwrap().out, vec![3]);
        // 8 wide, kernel 3, stride 2: SAME total pad 1, UPPER puts it at the end, LOWER at the start.
        let n = win_node(vec![
            ints("strides", &[2]),
            string("auto_pad", "SAME_UPPER"),
        ]);
        let w = window(&n, &[8], &[3], false).unwrap();
        assert_eq!(
            (w.out, w.pads_begin, w.pads_end),
            (vec![4], vec![0], vec![1])
        );
        let n = win_node(vec![
            ints("strides", &[2]),
            string("auto_pad", "SAME_LOWER"),
        ]);
        let w = window(&n, &[8], &[3], false).unwrap();
        assert_eq!((w.pads_begin, w.pads_end), (vec![1], vec![0]));
        // Dilation 2 makes kernel 3 span 5: (9 - 5) / 1 + 1 = 5.
        let n = win_node(vec![ints("dilations", &[2])]);
        assert_eq!(window(&n, &[9], &[3], false).unwrap().out, vec![5]);
        // ceil_mode: 6 wide, kernel 2, stride 2, pad 0/1 -> floor 3, ceil 4 would start in the end pad -> 3;
        // 5 wide, kernel 2, stride 2 -> floor 2, ceil 3.
        let n = win_node(vec![ints("strides", &[2]), ints("pads", &[0, 1])]);
        assert_eq!(window(&n, &[6], &[2], true).unwrap().out, vec![3]);
        let n = win_node(vec![ints("strides", &[2])]);
        assert_eq!(window(&n, &[5], &[2], false).unwrap().out, vec![2]);
        assert_eq!(window(&n, &[5], &[2], true).unwrap().out, vec![3]);
    }
}
