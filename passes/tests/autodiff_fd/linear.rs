//! MatMul, Gemm and an attention block built from them.

use crate::check::{check, f64_init, fwd, Case};
use rl_passes::testing::attr;

#[test]
fn matmul_batched_and_broadcasting() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[2, 2, 3, 4], &[4, 5]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[1, 3, 4, 2]),
        (&[4], &[4, 5]),
        (&[3, 4], &[4]),
        (&[2, 3, 4], &[4]),
        (&[4], &[2, 4, 3]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let c = Case::new(format!("matmul {sa:?} {sb:?}"), "y")
            .input("a", sa)
            .input("b", sb)
            .node(fwd("MatMul", &["a", "b"], &["y"], vec![]));
        check(c, 10 + i as u64);
    }
}

#[test]
fn gemm_transposes_alpha_beta_and_bias_broadcasting() {
    let (m, k, n) = (3, 4, 5);
    for ta in [0, 1] {
        for tb in [0, 1] {
            for c_shape in [vec![m, n], vec![n], vec![1, n], vec![m, 1], vec![]] {
                let sa = if ta == 1 { [k, m] } else { [m, k] };
                let sb = if tb == 1 { [n, k] } else { [k, n] };
                let c = Case::new(format!("gemm tA={ta} tB={tb} C{c_shape:?}"), "y")
                    .input("a", &sa)
                    .input("b", &sb)
                    .input("c", &c_shape)
                    .node(fwd(
                        "Gemm",
                        &["a", "b", "c"],
                        &["y"],
                        vec![
                            attr::int("transA", ta),
                            attr::int("transB", tb),
                            attr::float("alpha", 0.75),
                            attr::float("beta", -1.5),
                        ],
                    ));
                check(c, 20);
            }
        }
    }
    let c = Case::new("gemm without C", "y")
        .input("a", &[2, 3])
        .input("b", &[3, 4])
        .node(fwd("Gemm", &["a", "b"], &["y"], vec![]));
    check(c, 21);
}

#[test]
fn attention_block() {
    // softmax(Q Kᵀ / √d) V with Q, K, V from one input: exercises accumulation across MatMul/Transpose.
    let mut c = Case::new("attention", "y")
        .input("x", &[2, 3, 4])
        .input("wq", &[4, 4])
        .input("wk", &[4, 4])
        .input("wv", &[4, 4]);
    c.inits.push(f64_init("scale", &[], &[0.5]));
    let c = c
        .node(fwd("MatMul", &["x", "wq"], &["q"], vec![]))
        .node(fwd("MatMul", &["x", "wk"], &["k"], vec![]))
        .node(fwd("MatMul", &["x", "wv"], &["v"], vec![]))
        .node(fwd(
            "Transpose",
            &["k"],
            &["kt"],
            vec![attr::ints("perm", &[0, 2, 1])],
        ))
        .node(fwd("MatMul", &["q", "kt"], &["s"], vec![]))
        .node(fwd("Mul", &["s", "scale"], &["ss"], vec![]))
        .node(fwd("Softmax", &["ss"], &["p"], vec![attr::int("axis", -1)]))
        .node(fwd("MatMul", &["p", "v"], &["y"], vec![]));
    check(c, 95);
}
