//! Decode → encode of models serialized by the reference protobuf implementation is byte-identical, and
//! loading + saving keeps external data external with the same payloads.

use std::path::{Path, PathBuf};

use prost::Message;
use rl_passes::io::{load_model, save_model, SaveOptions};
use rl_passes::ir::Graph;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

const REFERENCE_SERIALIZED: &[&str] = &[
    "fidelity/metadata_everywhere.onnx",
    "fidelity/dtypes.onnx",
    "fidelity/external/model.onnx",
    "exporters/resnet_torchscript_eval.onnx",
    "exporters/resnet_dynamo_eval.onnx",
    "exporters/vit_torchscript_eval.onnx",
    "exporters/vit_dynamo_eval.onnx",
    "exporters/resnet_torchscript_train.onnx",
    "exporters/resnet_torchscript_external/model.onnx",
];

#[test]
fn decode_encode_is_byte_identical() {
    for rel in REFERENCE_SERIALIZED {
        let bytes = std::fs::read(fixture(rel)).unwrap();
        let model = rl_passes::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
        assert!(
            model.encode_to_vec() == bytes,
            "{rel} changed on decode → encode"
        );
    }
}

#[test]
fn lift_lower_is_byte_identical() {
    for rel in REFERENCE_SERIALIZED {
        let bytes = std::fs::read(fixture(rel)).unwrap();
        let model = rl_passes::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
        let lowered = Graph::lift(model).unwrap().lower().unwrap();
        assert!(
            lowered.encode_to_vec() == bytes,
            "{rel} changed on lift → lower"
        );
    }
}

#[test]
fn metadata_props_survive_at_every_level() {
    let bytes = std::fs::read(fixture("fidelity/metadata_everywhere.onnx")).unwrap();
    let m = rl_passes::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert!(!m.metadata_props.is_empty(), "model metadata");
    assert!(!g.metadata_props.is_empty(), "graph metadata");
    assert!(
        g.node.iter().any(|n| !n.metadata_props.is_empty()),
        "node metadata"
    );
    assert!(
        g.input
            .iter()
            .chain(&g.value_info)
            .any(|v| !v.metadata_props.is_empty()),
        "value_info metadata"
    );
    assert!(
        g.initializer.iter().any(|t| !t.metadata_props.is_empty()),
        "tensor metadata"
    );
    assert!(!m.functions.is_empty(), "functions");
    assert!(
        !m.functions[0].metadata_props.is_empty(),
        "function metadata"
    );
}

#[test]
fn external_data_is_resolved_and_kept_external_on_save() {
    let src = fixture("fidelity/external/model.onnx");
    let loaded = load_model(&src).unwrap();
    assert!(!loaded.external.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.onnx");
    save_model(
        &loaded.model,
        &out,
        &SaveOptions::like_input(&loaded.external, &loaded.model),
    )
    .unwrap();
    assert!(dir.path().join("copy.onnx.data").exists());
    let again = load_model(&out).unwrap();
    assert_eq!(
        again.external.keys().collect::<Vec<_>>(),
        loaded.external.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        again.model, loaded.model,
        "payloads and every other field equal after save + load"
    );
    // No temporary files are left beside the outputs.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn save_without_external_is_byte_identical_for_inline_models() {
    let src = fixture("fidelity/dtypes.onnx");
    let loaded = load_model(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.onnx");
    save_model(&loaded.model, &out, &SaveOptions::default()).unwrap();
    assert!(
        std::fs::read(out).unwrap() == std::fs::read(src).unwrap(),
        "saved bytes differ"
    );
}
