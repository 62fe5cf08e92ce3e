//! Pooling: global, average (count_include_pad, ceil_mode) and max.

use crate::check::{check, fwd, Case};
use rl_passes::onnx::AttributeProto;
use rl_passes::testing::attr;

#[test]
fn global_average_pool() {
    for x in [&[2usize, 3, 4, 5][..], &[2, 3, 7]] {
        let c = Case::new(format!("GlobalAveragePool {x:?}"), "y")
            .input("x", x)
            .node(fwd("GlobalAveragePool", &["x"], &["y"], vec![]));
        check(c, 300);
    }
}

pub fn pool_attrs(
    k: &[i64],
    s: &[i64],
    pads: &[i64],
    extra: Vec<AttributeProto>,
) -> Vec<AttributeProto> {
    let mut v = vec![
        attr::ints("kernel_shape", k),
        attr::ints("strides", s),
        attr::ints("pads", pads),
    ];
    v.extend(extra);
    v
}

#[test]
fn average_pool_count_include_pad_strides_pads() {
    type P = (
        &'static [usize],
        &'static [i64],
        &'static [i64],
        &'static [i64],
        i64,
    );
    let cases: &[P] = &[
        (&[2, 3, 6, 6], &[2, 2], &[2, 2], &[0, 0, 0, 0], 0),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1], 0),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1], 1),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1], 0),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1], 1),
        (&[2, 2, 9], &[3], &[2], &[1, 1], 0),
    ];
    for (i, (x, k, s, p, inc)) in cases.iter().enumerate() {
        let c = Case::new(
            format!("AveragePool x{x:?} k{k:?} s{s:?} p{p:?} inc{inc}"),
            "y",
        )
        .input("x", x)
        .node(fwd(
            "AveragePool",
            &["x"],
            &["y"],
            pool_attrs(k, s, p, vec![attr::int("count_include_pad", *inc)]),
        ));
        check(c, 310 + i as u64);
    }
}

#[test]
fn average_pool_ceil_mode() {
    for inc in [0, 1] {
        let c = Case::new(format!("AveragePool ceil inc{inc}"), "y")
            .input("x", &[1, 2, 6, 7])
            .node(fwd(
                "AveragePool",
                &["x"],
                &["y"],
                pool_attrs(
                    &[3, 3],
                    &[2, 2],
                    &[1, 0, 0, 1],
                    vec![
                        attr::int("count_include_pad", inc),
                        attr::int("ceil_mode", 1),
                    ],
                ),
            ));
        check(c, 330 + inc as u64);
    }
}

#[test]
fn max_pool_routes_to_the_argmax() {
    // Random inputs have no ties; the analytic gradient goes to the element MaxPool's Indices names.
    type P = (
        &'static [usize],
        &'static [i64],
        &'static [i64],
        &'static [i64],
    );
    let cases: &[P] = &[
        (&[2, 3, 6, 6], &[2, 2], &[2, 2], &[0, 0, 0, 0]),
        (&[2, 2, 7, 7], &[3, 3], &[2, 2], &[1, 1, 1, 1]),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1]),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1]),
        (&[2, 3, 9], &[3], &[2], &[1, 0]),
    ];
    for (i, (x, k, s, p)) in cases.iter().enumerate() {
        let c = Case::new(format!("MaxPool x{x:?} k{k:?} s{s:?} p{p:?}"), "y")
            .input("x", x)
            .node(fwd("MaxPool", &["x"], &["y"], pool_attrs(k, s, p, vec![])));
        check(c, 340 + i as u64);
    }
    // With the Indices output present in the forward graph, and dilations.
    let c = Case::new("MaxPool with Indices, dilation 2", "y")
        .input("x", &[1, 2, 7, 7])
        .node(fwd(
            "MaxPool",
            &["x"],
            &["y", "idx"],
            pool_attrs(
                &[2, 2],
                &[1, 2],
                &[0, 1, 1, 0],
                vec![attr::ints("dilations", &[2, 2])],
            ),
        ));
    check(c, 350);
}
