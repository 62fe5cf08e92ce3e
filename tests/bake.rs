//! `rl-rewrite bake` turns a rewritten model back into a plain model of the original structure that computes
//! exactly what the rewritten one computes.

use std::process::Command;

use rl_passes::contract::{parse_integration_node, parse_scalar_name};
use rl_passes::graph_diff::diff_models;
use rl_passes::io::load_model;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn baked_model_equals_the_rewritten_one_and_has_the_original_structure() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    assert!(cli(&["zoo", "resnet32", "-o", &p("m.onnx")])
        .status
        .success());
    let rewrite = cli(&[
        &p("m.onnx"),
        "--every",
        "2",
        "--init-a",
        "0.3",
        "--init-b",
        "0.6",
        "-o",
        &p("m.rl.onnx"),
    ]);
    assert!(
        rewrite.status.success(),
        "{}",
        String::from_utf8_lossy(&rewrite.stderr)
    );
    let bake = cli(&["bake", &p("m.rl.onnx"), "-o", &p("m.baked.onnx")]);
    assert!(
        bake.status.success(),
        "{}",
        String::from_utf8_lossy(&bake.stderr)
    );
    assert!(String::from_utf8_lossy(&bake.stdout).contains("baked 72 integration nodes"));

    // Same outputs as the rewritten model (≤ 1e-5), different from the original's.
    let same = cli(&[
        "check",
        &p("m.baked.onnx"),
        &p("m.rl.onnx"),
        "--engine",
        "tract",
        "--tol",
        "1e-5",
    ]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let differ = cli(&[
        "check",
        &p("m.baked.onnx"),
        &p("m.onnx"),
        "--engine",
        "tract",
    ]);
    assert_eq!(differ.status.code(), Some(1));

    // No integration node is left; against the original only stored tensor contents differ.
    let original = load_model(dir.path().join("m.onnx").as_path())
        .unwrap()
        .model;
    let baked = load_model(dir.path().join("m.baked.onnx").as_path())
        .unwrap()
        .model;
    let g = baked.graph.as_ref().unwrap();
    assert!(g
        .node
        .iter()
        .all(|n| parse_integration_node(n.name()).is_none()));
    assert!(g
        .initializer
        .iter()
        .all(|t| parse_scalar_name(t.name()).is_none()));
    let diff = diff_models(&original, &baked);
    assert!(
        diff.nodes.added.is_empty()
            && diff.nodes.removed.is_empty()
            && diff.nodes.changed.is_empty(),
        "{diff}"
    );
    assert!(
        diff.initializers.added.is_empty() && diff.initializers.removed.is_empty(),
        "{diff}"
    );
    assert_eq!(diff.initializers.changed.len(), 24, "{diff}");
    assert!(diff.histogram.is_empty(), "{diff}");
}

#[test]
fn bake_refuses_a_model_without_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    assert!(cli(&["zoo", "resnet20", "-o", model.to_str().unwrap()])
        .status
        .success());
    let out = cli(&[
        "bake",
        model.to_str().unwrap(),
        "-o",
        dir.path().join("b.onnx").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no Replacement Learning plan"), "{err}");
    assert!(!dir.path().join("b.onnx").exists());
}
