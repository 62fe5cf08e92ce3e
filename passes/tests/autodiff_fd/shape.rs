//! Shape ops: Reshape, Flatten, Squeeze/Unsqueeze, Transpose, Concat, Slice, Gather, Expand, Split.

use crate::check::{check, fwd, Case};
use rl_passes::testing::attr;

#[test]
fn reshape_flatten_squeeze_unsqueeze() {
    let c = Case::new("reshape", "y")
        .input("x", &[2, 3, 4])
        .ints("s", &[0, -1, 2])
        .node(fwd("Reshape", &["x", "s"], &["y"], vec![]));
    check(c, 30);
    for axis in [0, 1, 2, -1] {
        let c = Case::new(format!("flatten {axis}"), "y")
            .input("x", &[2, 3, 4])
            .node(fwd(
                "Flatten",
                &["x"],
                &["y"],
                vec![attr::int("axis", axis)],
            ));
        check(c, 31);
    }
    let c = Case::new("squeeze", "y")
        .input("x", &[2, 1, 3, 1])
        .ints("ax", &[1, -1])
        .node(fwd("Squeeze", &["x", "ax"], &["y"], vec![]));
    check(c, 32);
    let c = Case::new("unsqueeze", "y")
        .input("x", &[2, 3])
        .ints("ax", &[0, 3])
        .node(fwd("Unsqueeze", &["x", "ax"], &["y"], vec![]));
    check(c, 33);
}

#[test]
fn transpose_permutations() {
    for perm in [vec![1, 0, 2], vec![2, 0, 1], vec![1, 2, 0]] {
        let c = Case::new(format!("transpose {perm:?}"), "y")
            .input("x", &[2, 3, 4])
            .node(fwd(
                "Transpose",
                &["x"],
                &["y"],
                vec![attr::ints("perm", &perm)],
            ));
        check(c, 40);
    }
    let c = Case::new("transpose default", "y")
        .input("x", &[2, 3, 4])
        .node(fwd("Transpose", &["x"], &["y"], vec![]));
    check(c, 41);
}

#[test]
fn concat_axes() {
    for axis in [0, 1, -1] {
        let c = Case::new(format!("concat {axis}"), "y")
            .input("a", &[2, 3, 2])
            .input("b", &[2, 3, 2])
            .node(fwd(
                "Concat",
                &["a", "b", "a"],
                &["y"],
                vec![attr::int("axis", axis)],
            ));
        check(c, 50);
    }
    let c = Case::new("concat uneven", "y")
        .input("a", &[2, 1])
        .input("b", &[2, 3])
        .node(fwd(
            "Concat",
            &["a", "b"],
            &["y"],
            vec![attr::int("axis", 1)],
        ));
    check(c, 51);
}

#[test]
fn slices_with_unit_steps() {
    type SliceCase = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);
    let cases: Vec<SliceCase> = vec![
        (vec![1], vec![3], Some(vec![1])),
        (vec![0, 1], vec![1, -1], Some(vec![0, 2])),
        (vec![-3], vec![i64::MAX], Some(vec![-1])),
        (vec![1, 0, 1], vec![2, 2, 4], None),
    ];
    for (i, (s, e, ax)) in cases.into_iter().enumerate() {
        let mut c = Case::new(format!("slice {s:?} {e:?} {ax:?}"), "y")
            .input("x", &[2, 3, 5])
            .ints("s", &s)
            .ints("e", &e);
        let mut ins = vec!["x", "s", "e"];
        if let Some(ax) = ax {
            c = c.ints("ax", &ax);
            ins.push("ax");
        }
        let c = c.node(fwd("Slice", &ins, &["y"], vec![]));
        check(c, 60 + i as u64);
    }
}

#[test]
fn gather_constant_and_data_indices() {
    let c = Case::new("gather class token", "y")
        .input("x", &[2, 5, 3])
        .node(fwd(
            "Constant",
            &[],
            &["i"],
            vec![attr::int("value_int", 0)],
        ))
        .node(fwd(
            "Gather",
            &["x", "i"],
            &["y"],
            vec![attr::int("axis", 1)],
        ));
    check(c, 70);
    let mut c = Case::new("gather embedding", "y")
        .input("table", &[6, 4])
        .node(fwd("Gather", &["table", "idx"], &["y"], vec![]));
    c.int_inputs
        .push(("idx", vec![2, 3], vec![0, 5, 2, 2, -1, 3]));
    check(c, 71);
    let c = Case::new("gather last axis", "y")
        .input("x", &[2, 3, 4])
        .ints("i", &[3, 0, 3])
        .node(fwd(
            "Gather",
            &["x", "i"],
            &["y"],
            vec![attr::int("axis", -1)],
        ));
    check(c, 72);
}

#[test]
fn expand_broadcasts_both_ways() {
    for (x, shape) in [
        (&[3usize, 1][..], &[2i64, 3, 4][..]),
        (&[2, 3, 4], &[3, 1]),
        (&[1, 4], &[3, 1]),
        (&[], &[2, 2]),
    ] {
        let c = Case::new(format!("Expand {x:?} to {shape:?}"), "y")
            .input("x", x)
            .ints("s", shape)
            .node(fwd("Expand", &["x", "s"], &["y"], vec![]));
        check(c, 600);
    }
}

#[test]
fn split_with_sizes_and_unused_outputs() {
    let c = Case::new("split sizes input, all used", "y")
        .input("x", &[2, 7, 3])
        .ints("sizes", &[2, 4, 1])
        .node(fwd(
            "Split",
            &["x", "sizes"],
            &["a", "b", "c"],
            vec![attr::int("axis", 1)],
        ))
        .node(fwd(
            "ReduceSum",
            &["b"],
            &["bs"],
            vec![attr::int("keepdims", 1)],
        ))
        .node(fwd("Mul", &["a", "bs"], &["ab"], vec![]))
        .node(fwd(
            "Concat",
            &["ab", "c"],
            &["y"],
            vec![attr::int("axis", 1)],
        ));
    check(c, 610);
    let c = Case::new("split equal, one output unused", "y")
        .input("x", &[6, 2])
        .node(fwd("Split", &["x"], &["a", "b", "c"], vec![]))
        .node(fwd("Mul", &["a", "c"], &["y"], vec![]));
    check(c, 611);
    let c = Case::new("split last axis equal", "y")
        .input("x", &[2, 4])
        .node(fwd(
            "Split",
            &["x"],
            &["a", "b"],
            vec![attr::int("axis", -1)],
        ))
        .node(fwd("Neg", &["b"], &["y"], vec![]));
    check(c, 612);
}
