//! Shape inference over every zoo model and every exporter fixture: the inferred logits shape must be the
//! known one, for a fixed batch.

use std::path::PathBuf;

use rl_models::{build_without_weights, ZooOptions, MODEL_NAMES};
use rl_passes::analysis::shapes::{infer_shapes, TensorType};
use rl_passes::io::load_model;
use rl_passes::ir::Graph;

#[test]
fn every_zoo_model_infers_its_logits_shape() {
    for &name in MODEL_NAMES {
        for (batch, opts) in [
            (2, ZooOptions::for_model(name).unwrap()),
            (
                3,
                ZooOptions {
                    classes: 7,
                    image_size: 32,
                    channels: 3,
                    seed: 0,
                },
            ),
        ] {
            let g = Graph::lift(build_without_weights(name, &opts).unwrap()).unwrap();
            let s = opts.image_size;
            let types = infer_shapes(&g, &[("input".into(), vec![batch, opts.channels, s, s])])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                types["logits"],
                TensorType::new(1, vec![batch, opts.classes]),
                "{name} {opts:?}"
            );
            // Every value of the graph has a type.
            for n in g.nodes().map(|(_, n)| n) {
                for o in n.output.iter().filter(|o| !o.is_empty()) {
                    assert!(types.contains_key(o), "{name}: {o}");
                }
            }
        }
    }
}

#[test]
fn every_exporter_fixture_infers_its_logits_shape() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/exporters");
    for file in [
        "resnet_torchscript_eval.onnx",
        "resnet_dynamo_eval.onnx",
        "resnet_torchscript_train.onnx",
        "resnet_torchscript_external/model.onnx",
        "vit_torchscript_eval.onnx",
        "vit_dynamo_eval.onnx",
    ] {
        let m = load_model(&dir.join(file)).unwrap().model;
        let g = Graph::lift(m).unwrap();
        for batch in [1, 4] {
            let types = infer_shapes(&g, &[("x".into(), vec![batch, 3, 16, 16])])
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                types["logits"],
                TensorType::new(1, vec![batch, 10]),
                "{file}"
            );
        }
    }
}
