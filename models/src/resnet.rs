//! ImageNet-style ResNets (He et al. 2015, torchvision layout "v1.5": the stride of a Bottleneck sits on
//! its 3x3 conv) and the residual blocks shared with the CIFAR family.

use crate::builder::{attr_int, attr_ints, Dim, GraphBuilder};
use crate::ZooOptions;

/// Residual block kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// Two 3x3 convs, expansion 1.
    Basic,
    /// 1x1 → 3x3 → 1x1 convs, expansion 4.
    Bottleneck,
}

impl Block {
    pub(crate) fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// Projection shortcut (torchvision's `downsample`: 1x1 conv with stride + BN) when the shape changes,
/// identity otherwise.
fn shortcut(
    b: &mut GraphBuilder,
    prefix: &str,
    x: &str,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
) -> String {
    if stride != 1 || in_ch != out_ch {
        let c = b.conv(
            &format!("{prefix}.downsample.0"),
            x,
            in_ch,
            out_ch,
            1,
            stride,
            0,
        );
        b.batch_norm(&format!("{prefix}.downsample.1"), &c, out_ch)
    } else {
        x.to_owned()
    }
}

/// One residual block named `prefix` (e.g. `layer2.0`); returns (output value, output channels).
pub(crate) fn block(
    b: &mut GraphBuilder,
    kind: Block,
    prefix: &str,
    x: &str,
    in_ch: usize,
    planes: usize,
    stride: usize,
) -> (String, usize) {
    let out_ch = planes * kind.expansion();
    let body = match kind {
        Block::Basic => {
            let h = b.conv(&format!("{prefix}.conv1"), x, in_ch, planes, 3, stride, 1);
            let h = b.batch_norm(&format!("{prefix}.bn1"), &h, planes);
            let h = b.relu(&format!("{prefix}.relu1"), &h);
            let h = b.conv(&format!("{prefix}.conv2"), &h, planes, planes, 3, 1, 1);
            b.batch_norm(&format!("{prefix}.bn2"), &h, planes)
        }
        Block::Bottleneck => {
            let h = b.conv(&format!("{prefix}.conv1"), x, in_ch, planes, 1, 1, 0);
            let h = b.batch_norm(&format!("{prefix}.bn1"), &h, planes);
            let h = b.relu(&format!("{prefix}.relu1"), &h);
            let h = b.conv(&format!("{prefix}.conv2"), &h, planes, planes, 3, stride, 1);
            let h = b.batch_norm(&format!("{prefix}.bn2"), &h, planes);
            let h = b.relu(&format!("{prefix}.relu2"), &h);
            let h = b.conv(&format!("{prefix}.conv3"), &h, planes, out_ch, 1, 1, 0);
            b.batch_norm(&format!("{prefix}.bn3"), &h, out_ch)
        }
    };
    let identity = shortcut(b, prefix, x, in_ch, out_ch, stride);
    let sum = b.node("Add", &format!("{prefix}.add"), &[&body, &identity], vec![]);
    (b.relu(&format!("{prefix}.relu"), &sum), out_ch)
}

/// `stages[i]` blocks of width `widths[i]`; the first block of every stage but the first has stride 2.
pub(crate) fn stages(
    b: &mut GraphBuilder,
    kind: Block,
    x: String,
    mut in_ch: usize,
    stages: &[usize],
    widths: &[usize],
) -> (String, usize) {
    let mut x = x;
    for (si, (&n, &planes)) in stages.iter().zip(widths).enumerate() {
        for bi in 0..n {
            let stride = if si > 0 && bi == 0 { 2 } else { 1 };
            let (y, c) = block(
                b,
                kind,
                &format!("layer{}.{bi}", si + 1),
                &x,
                in_ch,
                planes,
                stride,
            );
            x = y;
            in_ch = c;
        }
    }
    (x, in_ch)
}

/// GlobalAveragePool → Flatten → Gemm `fc` producing `logits`, plus the graph input/output declarations.
pub(crate) fn head(b: &mut GraphBuilder, x: &str, ch: usize, opts: &ZooOptions) {
    let p = b.node("GlobalAveragePool", "avgpool", &[x], vec![]);
    let f = b.node("Flatten", "flatten", &[&p], vec![attr_int("axis", 1)]);
    let logits = b.linear_gemm("fc", "logits", &f, ch, opts.classes, None);
    b.output(&logits, &[Dim::Sym("N"), Dim::Val(opts.classes)]);
}

pub(crate) fn input(b: &mut GraphBuilder, opts: &ZooOptions) -> String {
    b.input(
        "input",
        &[
            Dim::Sym("N"),
            Dim::Val(opts.channels),
            Dim::Val(opts.image_size),
            Dim::Val(opts.image_size),
        ],
    )
}

/// ImageNet ResNet: 7x7/2 stem conv, BN, ReLU, 3x3/2 MaxPool, four stages of widths 64/128/256/512,
/// GlobalAveragePool, Flatten, Gemm.
pub(crate) fn build_imagenet(
    b: &mut GraphBuilder,
    kind: Block,
    layers: [usize; 4],
    opts: &ZooOptions,
) {
    let x = input(b, opts);
    let h = b.conv("conv1", &x, opts.channels, 64, 7, 2, 3);
    let h = b.batch_norm("bn1", &h, 64);
    let h = b.relu("relu", &h);
    let h = b.node(
        "MaxPool",
        "maxpool",
        &[&h],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let (h, ch) = stages(b, kind, h, 64, &layers, &[64, 128, 256, 512]);
    head(b, &h, ch, opts);
}
