//! Graph-diff and plan goldens for zoo models: any change to what a rewrite produces shows up here and must be
//! reviewed (`UPDATE_GOLDEN=1 cargo test --test golden` rewrites the files).

mod common;

use rl_passes::analysis::units::UnitKind;
use rl_passes::graph_diff::diff_models;
use rl_passes::pipeline::{rewrite, RewriteOptions};

fn golden(name: &str, image_size: Option<usize>, unit: UnitKind, every: usize) {
    let model = common::zoo(name, image_size, Some(10));
    let opts = RewriteOptions {
        unit,
        every,
        ..Default::default()
    };
    let rewritten = rewrite(model.clone(), &opts).unwrap();
    let stem = format!("{name}.{unit}.every{every}");
    let dir = common::repo().join("tests/golden");
    common::assert_golden(
        &dir.join(format!("{stem}.diff.txt")),
        &diff_models(&model, &rewritten.model).to_string(),
    );
    common::assert_golden(
        &dir.join(format!("{stem}.plan.json")),
        &format!("{}\n", rewritten.plan.to_json()),
    );
    // The rewritten model passes onnx.checker (full check) and runs in ONNX Runtime.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{stem}.onnx"));
    rl_passes::io::save_model(&rewritten.model, &out, &Default::default()).unwrap();
    common::onnx_check(&[&out]);
}

#[test]
fn resnet20_every_2() {
    golden("resnet20", None, UnitKind::Block, 2);
}

#[test]
fn resnet44_every_3() {
    golden("resnet44", None, UnitKind::Block, 3);
}

#[test]
fn resnet32_every_2() {
    golden("resnet32", None, UnitKind::Block, 2);
}

#[test]
fn resnet56_every_3() {
    golden("resnet56", None, UnitKind::Block, 3);
}

#[test]
fn vit_ti_every_2() {
    golden("vit-ti", Some(32), UnitKind::Block, 2);
}

#[test]
fn vit_ti_every_3() {
    golden("vit-ti", Some(32), UnitKind::Block, 3);
}

#[test]
fn resnet18_layers_every_2() {
    golden("resnet18", Some(64), UnitKind::Layer, 2);
}
