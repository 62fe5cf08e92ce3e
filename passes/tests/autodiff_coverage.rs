//! Every op of the zoo models and of the PyTorch exporter fixtures has a gradient rule: the loss
//! `ReduceSum(logits)` differentiates with respect to every float initializer without error, and each
//! gradient has its parameter's type. (Numerical correctness of each rule is `tests/autodiff_fd`'s job.)

use std::path::PathBuf;

use rl_models::{build_without_weights, ZooOptions};
use rl_passes::analysis::shapes::{infer, infer_shapes};
use rl_passes::autodiff::differentiate;
use rl_passes::io::load_model;
use rl_passes::ir::Graph;
use rl_passes::testing::{node, NodeExt};

fn differentiate_all(name: &str, mut g: Graph, input: &str, shape: Vec<usize>, logits: &str) {
    g.add_nodes([node("ReduceSum", &[logits], &["coverage/loss"])
        .named("coverage/loss")
        .int("keepdims", 0)])
        .unwrap();
    let inputs = [(input.to_owned(), shape)];
    let inference = infer(&g, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut wrt: Vec<String> = g
        .initializers()
        .iter()
        .filter(|(_, t)| rl_passes::tensor::is_float(t.data_type()))
        .map(|(n, _)| n.clone())
        .collect();
    wrt.sort();
    assert!(!wrt.is_empty(), "{name}: no float parameters");
    let grads = differentiate(&mut g, "coverage/loss", &wrt, &inference)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = infer_shapes(&g, &inputs).unwrap_or_else(|e| panic!("{name}: backward: {e}"));
    for w in &wrt {
        assert_eq!(
            after[&grads[w]], inference.types[w],
            "{name}: gradient of {w}"
        );
    }
}

#[test]
fn zoo_models_differentiate() {
    for name in ["resnet20", "resnet18", "vit-ti"] {
        let opts = ZooOptions {
            classes: 10,
            image_size: 32,
            channels: 3,
            seed: 0,
        };
        let g = Graph::lift(build_without_weights(name, &opts).unwrap()).unwrap();
        differentiate_all(name, g, "input", vec![2, 3, 32, 32], "logits");
    }
}

#[test]
fn exporter_fixtures_differentiate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/exporters");
    for file in [
        "resnet_torchscript_eval.onnx",
        "resnet_dynamo_eval.onnx",
        "resnet_torchscript_train.onnx",
        "vit_torchscript_eval.onnx",
        "vit_dynamo_eval.onnx",
    ] {
        let m = load_model(&dir.join(file)).unwrap().model;
        let g = Graph::lift(m).unwrap();
        differentiate_all(file, g, "x", vec![2, 3, 16, 16], "logits");
    }
}
