//! Convolutions: strides, pads, dilations, groups, auto_pad, 1-D and 3-D, the weight gradient's constructions.

use crate::check::{check, fwd, Case};
use rl_passes::onnx::AttributeProto;
use rl_passes::testing::attr;

/// A Conv case: X [N, C, S…], W [M, C/group, k…], optional bias.
fn conv_case(name: &str, x: &[usize], w: &[usize], bias: bool, attrs: Vec<AttributeProto>) -> Case {
    let mut c = Case::new(format!("conv {name} x{x:?} w{w:?}"), "y")
        .input("x", x)
        .input("w", w);
    let mut ins = vec!["x", "w"];
    if bias {
        c = c.input("b", &[w[0]]);
        ins.push("b");
    }
    c.node(fwd("Conv", &ins, &["y"], attrs))
}

#[test]
fn conv_2d_strides_pads_dilations_groups() {
    let cases: Vec<Case> = vec![
        conv_case("plain", &[2, 3, 5, 5], &[4, 3, 3, 3], true, vec![]),
        conv_case(
            "stride 2, pads 1",
            &[2, 3, 6, 6],
            &[4, 3, 3, 3],
            true,
            vec![
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        conv_case(
            // (7 + 1 + 2 − 3) = 7 not divisible by 2 along H; (6 + 0 + 1 − 3) = 4 along W with stride 3
            "stride 2x3, asymmetric pads, remainder",
            &[1, 2, 7, 6],
            &[3, 2, 3, 3],
            false,
            vec![
                attr::ints("strides", &[2, 3]),
                attr::ints("pads", &[1, 0, 2, 1]),
            ],
        ),
        conv_case(
            // no end pad to trim: the weight-gradient convolution overshoots and is sliced
            "stride 2, unpadded remainder",
            &[1, 2, 8, 7],
            &[2, 2, 3, 2],
            true,
            vec![attr::ints("strides", &[2, 2])],
        ),
        conv_case(
            "dilations 2",
            &[2, 2, 7, 8],
            &[3, 2, 3, 2],
            true,
            vec![
                attr::ints("dilations", &[2, 2]),
                attr::ints("pads", &[2, 1, 1, 0]),
            ],
        ),
        conv_case(
            "dilations 2, stride 2, remainder",
            &[1, 2, 9, 8],
            &[2, 2, 3, 3],
            true,
            vec![
                attr::ints("dilations", &[2, 2]),
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[0, 1, 1, 2]),
            ],
        ),
        conv_case(
            "groups 2",
            &[2, 4, 5, 5],
            &[6, 2, 3, 3],
            true,
            vec![attr::int("group", 2), attr::ints("pads", &[1, 1, 1, 1])],
        ),
        conv_case(
            "depthwise, stride 2",
            &[2, 3, 6, 7],
            &[3, 1, 3, 3],
            true,
            vec![
                attr::int("group", 3),
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        conv_case(
            "depthwise multiplier 2, dilation 2",
            &[1, 2, 7, 7],
            &[4, 1, 2, 3],
            false,
            vec![attr::int("group", 2), attr::ints("dilations", &[2, 2])],
        ),
        conv_case(
            "1x1 stride 2",
            &[2, 4, 5, 5],
            &[3, 4, 1, 1],
            false,
            vec![attr::ints("strides", &[2, 2])],
        ),
        conv_case(
            "SAME_UPPER stride 2",
            &[1, 2, 5, 6],
            &[2, 2, 3, 3],
            true,
            vec![
                attr::ints("strides", &[2, 2]),
                attr::string("auto_pad", "SAME_UPPER"),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 200 + i as u64);
    }
}

#[test]
fn conv_1d() {
    let cases = vec![
        conv_case("1-D plain", &[2, 3, 7], &[4, 3, 3], true, vec![]),
        conv_case(
            "1-D stride 2, pads, dilation 2, groups 3",
            &[2, 3, 10],
            &[6, 1, 3],
            true,
            vec![
                attr::ints("strides", &[2]),
                attr::ints("pads", &[2, 1]),
                attr::ints("dilations", &[2]),
                attr::int("group", 3),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 230 + i as u64);
    }
}

/// The weight gradient's constructions besides the gathered im2col of the cases above: the tiling reshape
/// (windows equal to strides, as in patch embeddings); the gathered im2col with many taps and a 3-D kernel.
/// (The batch/channel-swapped convolution is taken by the grouped cases above.)
#[test]
fn conv_weight_gradient_paths() {
    let cases = vec![
        conv_case(
            "patches 2x2, exact tiling",
            &[2, 3, 6, 4],
            &[4, 3, 2, 2],
            true,
            vec![attr::ints("strides", &[2, 2])],
        ),
        conv_case(
            "patches 3x2, rows and columns left over",
            &[1, 2, 8, 5],
            &[3, 2, 3, 2],
            false,
            vec![attr::ints("strides", &[3, 2])],
        ),
        conv_case(
            "9x9 kernel (81 taps), stride 1",
            &[1, 2, 10, 10],
            &[2, 2, 9, 9],
            true,
            vec![attr::ints("pads", &[1, 0, 0, 1])],
        ),
        conv_case(
            "3-D ungrouped, stride (1,2,1), pads",
            &[2, 2, 4, 5, 3],
            &[3, 2, 2, 3, 2],
            true,
            vec![
                attr::ints("strides", &[1, 2, 1]),
                attr::ints("pads", &[0, 1, 1, 1, 0, 0]),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 240 + i as u64);
    }
}

#[test]
fn conv_and_pools_auto_pad_and_3d() {
    let cases = vec![
        conv_case(
            // (ORT runs no dilation with SAME_*, so none here)
            "SAME_LOWER stride 2",
            &[1, 2, 7, 6],
            &[3, 2, 3, 2],
            true,
            vec![
                attr::ints("strides", &[2, 2]),
                attr::string("auto_pad", "SAME_LOWER"),
            ],
        ),
        conv_case(
            "VALID stride 3",
            &[2, 2, 8, 7],
            &[2, 2, 2, 3],
            false,
            vec![
                attr::ints("strides", &[3, 3]),
                attr::string("auto_pad", "VALID"),
            ],
        ),
        conv_case(
            "3-D stride (2,1,2), pads, groups 2",
            &[1, 4, 5, 4, 5],
            &[2, 2, 2, 3, 2],
            true,
            vec![
                attr::ints("strides", &[2, 1, 2]),
                attr::ints("pads", &[1, 0, 1, 0, 1, 0]),
                attr::int("group", 2),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 700 + i as u64);
    }
    for op in ["MaxPool", "AveragePool"] {
        let c = Case::new(format!("{op} SAME_UPPER 3x3 s2"), "y")
            .input("x", &[2, 2, 6, 7])
            .node(fwd(
                op,
                &["x"],
                &["y"],
                vec![
                    attr::ints("kernel_shape", &[3, 3]),
                    attr::ints("strides", &[2, 2]),
                    attr::string("auto_pad", "SAME_UPPER"),
                ],
            ));
        check(c, 710);
    }
}
