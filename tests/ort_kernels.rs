//! This crate's ONNX Runtime kernels (`engine::ort::ops`) on inputs they must refuse: the error names the op and
//! what is wrong, and the session reports it instead of crashing.

mod common;

use ort::session::SessionInputValue;
use ort::value::TensorRef;
use rl_passes::onnx::{tensor_proto::DataType, AttributeProto, ModelProto};
use rl_passes::testing::{attr, node, sym, Dim, ModelBuilder, NodeExt, SCALAR};
use rl_rewrite::engine::ort::ops::{CONV_WEIGHT_GRAD, DOMAIN, RELU_GRAD};
use rl_rewrite::engine::ort::OrtSessionBuilder;
use rl_rewrite::engine::Device;

/// A model of one node of this crate's domain reading float inputs `a` and `b` (of the given ranks).
fn one_node(op: &str, ranks: [usize; 2], attribute: Vec<AttributeProto>) -> ModelProto {
    // Every dimension symbolic: a0, a1, … and b0, b1, …
    let dims = |name: &str, rank: usize| -> Vec<Dim> {
        (0..rank).map(|k| sym(&format!("{name}{k}"))).collect()
    };
    ModelBuilder::new("kernel")
        .opset(DOMAIN, 1)
        .node(
            node(op, &["a", "b"], &["y"])
                .domain(DOMAIN)
                .named("the_node")
                .attrs(attribute),
        )
        .input("a", DataType::Float, dims("a", ranks[0]))
        .input("b", DataType::Float, dims("b", ranks[1]))
        .output("y", DataType::Float, SCALAR)
        .build()
}

/// Runs `model` on `a` and `b` and returns ONNX Runtime's error.
fn error(model: &ModelProto, a: (&[usize], &[f32]), b: (&[usize], &[f32])) -> String {
    let mut session = OrtSessionBuilder::new(Device::Cpu)
        .own_kernels(true)
        .build(model)
        .unwrap()
        .session;
    let inputs: Vec<(&str, SessionInputValue<'_>)> = vec![
        ("a", TensorRef::from_array_view(a).unwrap().into()),
        ("b", TensorRef::from_array_view(b).unwrap().into()),
    ];
    let result = session.run(inputs).map(|_| ());
    match result {
        Ok(()) => panic!("the kernel accepted inputs {:?} and {:?}", a.0, b.0),
        Err(e) => e.to_string(),
    }
}

#[test]
fn relu_grad_refuses_operands_of_different_shapes() {
    if !common::ort_available() {
        return;
    }
    let m = one_node(RELU_GRAD, [2, 2], vec![]);
    let e = error(&m, (&[2, 3], &[0.0; 6]), (&[3, 2], &[0.0; 6]));
    assert!(
        e.contains("ReluGrad") && e.contains("[2, 3]") && e.contains("same shape"),
        "{e}"
    );
}

#[test]
fn conv_weight_grad_refuses_unblocked_or_mismatched_activations() {
    if !common::ort_available() {
        return;
    }
    let attrs = || {
        vec![
            rl_passes::autodiff::Attr::Int(8).into_proto("block"),
            attr::ints("kernel_shape", &[3, 3]),
            attr::ints("pads_begin", &[1, 1]),
        ]
    };
    // Channels not a multiple of the block.
    let m = one_node(CONV_WEIGHT_GRAD, [4, 4], attrs());
    let x = vec![0.0f32; 2 * 12 * 4 * 4];
    let dy = vec![0.0f32; 2 * 8 * 4 * 4];
    let e = error(&m, (&[2, 12, 4, 4], &x), (&[2, 8, 4, 4], &dy));
    assert!(
        e.contains("ConvWeightGrad") && e.contains("multiple of 8") && e.contains("[2, 12, 4, 4]"),
        "{e}"
    );
    // Batches that differ.
    let dy1 = vec![0.0f32; 8 * 4 * 4];
    let x16 = vec![0.0f32; 2 * 16 * 4 * 4];
    let e = error(&m, (&[2, 16, 4, 4], &x16), (&[1, 8, 4, 4], &dy1));
    assert!(e.contains("ConvWeightGrad") && e.contains("batch"), "{e}");
    // A kernel without its geometry is refused when the session is created.
    let m = one_node(
        CONV_WEIGHT_GRAD,
        [4, 4],
        vec![attr::ints("kernel_shape", &[3, 3])],
    );
    let created = OrtSessionBuilder::new(Device::Cpu)
        .own_kernels(true)
        .build(&m);
    let e = match created {
        Ok(_) => panic!("a ConvWeightGrad without `block` was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("block"), "{e}");
}
