//! Finite-difference checks of every gradient rule, in double precision, with tract as the engine.
//!
//! Each case builds a small float64 graph around one op, reduces its output to a scalar loss with a fixed
//! random weighting (`loss = ReduceSum(Mul(y, R))`), differentiates it with respect to every float64 graph
//! input, runs forward and backward in tract, and compares each analytic gradient element with a central
//! difference (eps 1e-6): |a − n| ≤ 1e-6 · max(1, |a|, |n|).

mod check;
mod conv;
mod conventions;
mod elementwise;
mod linear;
mod norm;
mod pool;
mod reduce;
mod shape;

use std::collections::HashMap;

use check::{forward_model, fwd};
use rl_passes::analysis::shapes::Inference;
use rl_passes::autodiff::differentiate;
use rl_passes::ir::Graph;
use rl_passes::testing::attr;

#[test]
fn missing_rule_names_the_node() {
    let forward = forward_model(
        vec![fwd("Hardmax", &["x"], &["y"], vec![])],
        vec![],
        &[2, 3],
        "y",
    );
    let mut g = Graph::lift(forward).unwrap();
    g.add_nodes([fwd(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![attr::int("keepdims", 0)],
    )])
    .unwrap();
    let mut types = HashMap::new();
    let t = |s: Vec<usize>| rl_passes::analysis::shapes::TensorType::new(11, s);
    types.insert("x".to_owned(), t(vec![2, 3]));
    types.insert("y".to_owned(), t(vec![2, 3]));
    types.insert("loss".to_owned(), t(vec![]));
    let inference = Inference {
        types,
        ..Default::default()
    };
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/Hardmax/y' (Hardmax): no gradient rule for op Hardmax"
    );
}
