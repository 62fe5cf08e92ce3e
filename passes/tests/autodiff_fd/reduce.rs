//! Reductions and (log-)softmax.

use crate::check::{check, fwd, Case};
use rl_passes::testing::attr;

#[test]
fn reduce_sum_and_mean() {
    for op in ["ReduceSum", "ReduceMean"] {
        for (axes, keep) in [(vec![1], 1), (vec![0, 2], 0), (vec![-1], 0), (vec![], 1)] {
            let mut c = Case::new(format!("{op} {axes:?} keep={keep}"), "y").input("x", &[2, 3, 4]);
            let mut ins = vec!["x"];
            if !axes.is_empty() && op == "ReduceSum" {
                c = c.ints("ax", &axes);
                ins.push("ax");
            }
            let mut attrs = vec![attr::int("keepdims", keep)];
            if op == "ReduceMean" && !axes.is_empty() {
                attrs.push(attr::ints("axes", &axes));
            }
            let c = c.node(fwd(op, &ins, &["y"], attrs));
            check(c, 80);
        }
    }
}

#[test]
fn softmax_and_log_softmax() {
    for op in ["Softmax", "LogSoftmax"] {
        for axis in [-1, 0, 1] {
            let c = Case::new(format!("{op} {axis}"), "y")
                .input_in("x", &[2, 3, 4], -2.0, 2.0)
                .node(fwd(op, &["x"], &["y"], vec![attr::int("axis", axis)]));
            check(c, 90);
        }
    }
}
