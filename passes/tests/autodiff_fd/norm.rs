//! Normalizations and Dropout: BatchNormalization (inference and training), LayerNormalization, Dropout, and
//! the cases they refuse.

use crate::check::{check, f64_init, forward_model, fwd, Case};
use crate::pool::pool_attrs;
use rl_passes::analysis::shapes::infer;
use rl_passes::autodiff::differentiate;
use rl_passes::ir::Graph;
use rl_passes::onnx::TensorProto;
use rl_passes::testing::{attr, bool_tensor};

fn bn_case(name: &str, x: &[usize], training: bool, eps: f32) -> Case {
    let c = x[1];
    Case::new(
        format!("BatchNormalization {name} x{x:?} training={training}"),
        "y",
    )
    .input("x", x)
    .input_in("scale", &[c], 0.5, 1.5)
    .input("bias", &[c])
    .input("mean", &[c])
    .input_in("var", &[c], 0.5, 1.5)
    .node(fwd(
        "BatchNormalization",
        &["x", "scale", "bias", "mean", "var"],
        // training mode has the running mean and variance outputs (ONNX requires all three)
        if training {
            &["y", "running_mean", "running_var"]
        } else {
            &["y"]
        },
        vec![
            attr::float("epsilon", eps),
            attr::int("training_mode", training as i64),
        ],
    ))
}

#[test]
fn batch_normalization_inference_mode() {
    check(bn_case("4-D", &[2, 3, 4, 5], false, 1e-5), 400);
    check(bn_case("2-D", &[4, 3], false, 1e-3), 401);
    check(bn_case("3-D", &[2, 3, 5], false, 0.1), 402);
}

#[test]
fn batch_normalization_training_mode() {
    // input mean/var only feed the running statistics (not differentiated): their gradient is zero
    check(bn_case("4-D", &[2, 3, 4, 5], true, 1e-5), 410);
    check(bn_case("2-D", &[5, 3], true, 1e-3), 411);
    check(bn_case("3-D", &[3, 2, 4], true, 0.1), 412);
    let mut c = bn_case("momentum 0.9", &[2, 2, 3, 3], true, 1e-5);
    c.nodes[0].attribute.push(attr::float("momentum", 0.9));
    check(c, 413);
}

#[test]
fn layer_normalization_axes_and_bias() {
    for (x, axis, bias, eps) in [
        (&[2usize, 3, 4][..], -1i64, true, 1e-5f32),
        (&[2, 3, 4], 1, true, 1e-3),
        (&[2, 3, 4], 0, false, 1e-5),
        (&[4, 5], -1, false, 0.1),
    ] {
        let a = if axis < 0 { x.len() - 1 } else { axis as usize };
        let mut c = Case::new(
            format!("LayerNormalization x{x:?} axis {axis} bias {bias}"),
            "y",
        )
        .input("x", x)
        .input_in("scale", &x[a..], 0.5, 1.5);
        let mut ins = vec!["x", "scale"];
        if bias {
            c = c.input("bias", &x[a..]);
            ins.push("bias");
        }
        let c = c.node(fwd(
            "LayerNormalization",
            &ins,
            &["y"],
            vec![attr::int("axis", axis), attr::float("epsilon", eps)],
        ));
        check(c, 420);
    }
}

#[test]
fn dropout_training_and_inference() {
    let mut c = Case::new("dropout training", "y").input("x", &[3, 4, 5]);
    c.inits.push(f64_init("ratio", &[], &[0.3]));
    c.inits.push(bool_tensor("train", &[], &[true]));
    let c = c.node(fwd(
        "Dropout",
        &["x", "ratio", "train"],
        &["y", "mask"],
        vec![],
    ));
    check(c, 440);
    let mut c = Case::new("dropout inference", "y").input("x", &[3, 4]);
    c.inits.push(f64_init("ratio", &[], &[0.3]));
    let c = c.node(fwd("Dropout", &["x", "ratio"], &["y"], vec![]));
    check(c, 441);
    let c = Case::new("dropout plain", "y")
        .input("x", &[3, 4])
        .node(fwd("Dropout", &["x"], &["y"], vec![]));
    check(c, 442);
}

#[test]
fn dropout_training_mode_computed_and_mask_required() {
    // training_mode computed in the graph (not a constant): the rule selects with Where at run time
    let mut c = Case::new("dropout computed training_mode", "y").input("x", &[2, 6]);
    c.inits.push(f64_init("ratio", &[], &[0.25]));
    c.inits.push(f64_init("one", &[], &[1.0]));
    c.inits.push(f64_init("zero", &[], &[0.0]));
    let c = c
        .node(fwd("Greater", &["one", "zero"], &["train"], vec![]))
        .node(fwd(
            "Dropout",
            &["x", "ratio", "train"],
            &["y", "mask"],
            vec![],
        ));
    check(c, 443);
    // training_mode and ratio from Constant nodes, as PyTorch exports them
    let mut c = Case::new("dropout constant nodes", "y")
        .input("x", &[4, 3])
        .node(fwd("Constant", &[], &["ratio"], vec![]))
        .node(fwd("Constant", &[], &["train"], vec![]))
        .node(fwd(
            "Dropout",
            &["x", "ratio", "train"],
            &["y", "mask"],
            vec![],
        ));
    c.nodes[0].attribute = vec![attr::tensor("value", f64_init("", &[], &[0.1]))];
    let unnamed_true = TensorProto {
        name: None,
        ..bool_tensor("", &[], &[true])
    };
    c.nodes[1].attribute = vec![attr::tensor("value", unnamed_true)];
    check(c, 444);
    // without the mask output the random draw cannot be differentiated: a clear error
    let forward = forward_model(
        vec![
            fwd("Dropout", &["x", "ratio", "train"], &["y"], vec![]),
            fwd(
                "ReduceSum",
                &["y"],
                &["loss"],
                vec![attr::int("keepdims", 0)],
            ),
        ],
        vec![
            f64_init("ratio", &[], &[0.5]),
            bool_tensor("train", &[], &[true]),
        ],
        &[2, 3],
        "loss",
    );
    let mut g = Graph::lift(forward).unwrap();
    let inference = infer(&g, &[("x".to_owned(), vec![2, 3])]).unwrap();
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/Dropout/y' (Dropout): Dropout: training-mode Dropout needs its mask output to be differentiated"
    );
}

#[test]
fn training_batch_norm_refuses_gradients_through_its_running_statistics() {
    // The rule differentiates Y only; a loss reading the updated running mean would lose that path.
    let c = [2usize];
    let forward = forward_model(
        vec![
            fwd(
                "BatchNormalization",
                &["x", "scale", "bias", "mean", "var"],
                &["y", "running_mean", "running_var"],
                vec![attr::int("training_mode", 1)],
            ),
            fwd("ReduceSum", &["y"], &["sy"], vec![attr::int("keepdims", 0)]),
            fwd(
                "ReduceSum",
                &["running_mean"],
                &["sm"],
                vec![attr::int("keepdims", 0)],
            ),
            fwd("Add", &["sy", "sm"], &["loss"], vec![]),
        ],
        vec![
            f64_init("scale", &c, &[1.0, 2.0]),
            f64_init("bias", &c, &[0.0, 0.5]),
            f64_init("mean", &c, &[0.0, 0.0]),
            f64_init("var", &c, &[1.0, 1.0]),
        ],
        &[3, 2],
        "loss",
    );
    let mut g = Graph::lift(forward).unwrap();
    let inference = infer(&g, &[("x".to_owned(), vec![3, 2])]).unwrap();
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/BatchNormalization/y' (BatchNormalization): BatchNormalization: gradients through the \
         running-statistics outputs are not supported"
    );
}

#[test]
fn small_cnn_with_training_batch_norm() {
    // Conv → BatchNormalization (training) → Relu → MaxPool 3x3 s2 p1 → depthwise Conv s2 → Conv 1x1 →
    // GlobalAveragePool → Flatten → Gemm: every parameter and the input checked at once.
    let c = Case::new("small cnn", "y")
        .input("x", &[2, 2, 9, 9])
        .input("w1", &[4, 2, 3, 3])
        .input("b1", &[4])
        .input_in("g", &[4], 0.5, 1.5)
        .input("beta", &[4])
        .input("rm", &[4])
        .input_in("rv", &[4], 0.5, 1.5)
        .input("w2", &[4, 1, 3, 3])
        .input("w3", &[3, 4, 1, 1])
        .input("fc", &[5, 3])
        .input("fcb", &[5])
        .node(fwd(
            "Conv",
            &["x", "w1", "b1"],
            &["c1"],
            vec![attr::ints("pads", &[1, 1, 1, 1])],
        ))
        .node(fwd(
            "BatchNormalization",
            &["c1", "g", "beta", "rm", "rv"],
            &["bn", "rm.next", "rv.next"],
            vec![attr::int("training_mode", 1)],
        ))
        .node(fwd("Relu", &["bn"], &["r"], vec![]))
        .node(fwd(
            "MaxPool",
            &["r"],
            &["mp"],
            pool_attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], vec![]),
        ))
        .node(fwd(
            "Conv",
            &["mp", "w2"],
            &["c2"],
            vec![
                attr::int("group", 4),
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        ))
        .node(fwd("Conv", &["c2", "w3"], &["c3"], vec![]))
        .node(fwd("GlobalAveragePool", &["c3"], &["gap"], vec![]))
        .node(fwd("Flatten", &["gap"], &["f"], vec![attr::int("axis", 1)]))
        .node(fwd(
            "Gemm",
            &["f", "fc", "fcb"],
            &["y"],
            vec![attr::int("transB", 1)],
        ));
    check(c, 500);
}
