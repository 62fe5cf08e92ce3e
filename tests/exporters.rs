//! Models as PyTorch's exporters emit them (TorchScript-based and dynamo; eval with BatchNorm folded, training
//! mode with BatchNormalization training_mode=1 and Dropout; external data) are rewritten correctly.

mod common;

use std::path::Path;

use rl_passes::contract::{parse_integration_node, IntegrationNode};
use rl_passes::io::{load_model, save_model, SaveOptions};
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_rewrite::commands::tract_max_diff;
use rl_rewrite::reference::with_integrated_weights;

/// Rewrites a fixture with `--every 2`, checks the plan, saves it beside a temp dir and returns the plan's
/// frozen unit names.
fn rewrite_fixture(rel: &str, dir: &Path) -> (Vec<String>, std::path::PathBuf) {
    let loaded = load_model(&common::fixture(rel)).unwrap();
    let opts = RewriteOptions {
        init_a: 1.0,
        init_b: 0.0,
        ..Default::default()
    };
    let rewritten = rewrite(loaded.model.clone(), &opts).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let out = dir.join(rel.replace('/', "_"));
    save_model(
        &rewritten.model,
        &out,
        &SaveOptions::like_input(&loaded.external, &rewritten.model),
    )
    .unwrap();
    for f in &rewritten.plan.frozen {
        assert!(
            !f.params.is_empty(),
            "{rel}: frozen unit {} replaces nothing",
            f.unit
        );
    }
    (
        rewritten
            .plan
            .frozen
            .iter()
            .map(|f| f.unit.clone())
            .collect(),
        out,
    )
}

/// Rewritten with a=1, b=0 equals the original with prev weights copied in (tract, batch 2).
fn assert_equivalent(rel: &str) {
    let loaded = load_model(&common::fixture(rel)).unwrap();
    for (a, b) in [(1.0, 0.0), (0.5, 0.5)] {
        let opts = RewriteOptions {
            init_a: a,
            init_b: b,
            ..Default::default()
        };
        let rewritten = rewrite(loaded.model.clone(), &opts).unwrap();
        let reference =
            with_integrated_weights(&loaded.model, &rewritten.plan, a as f32, b as f32).unwrap();
        let diff = tract_max_diff(&rewritten.model, &reference, 2, 5).unwrap();
        assert!(
            diff <= 1e-5,
            "{rel} ({a}/{b}): rewritten vs reference differ by {diff}"
        );
        let changed = tract_max_diff(&rewritten.model, &loaded.model, 2, 5).unwrap();
        assert!(
            changed > 1e-6,
            "{rel} ({a}/{b}): the rewrite changed nothing"
        );
    }
}

#[test]
fn torchscript_eval_resnet() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture("exporters/resnet_torchscript_eval.onnx", dir.path());
    // Stage 1 has three equal blocks; stages 2 and 3 open with a downsampling block, leaving two equal ones.
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_equivalent("exporters/resnet_torchscript_eval.onnx");
    common::onnx_check(&[&out]);
}

#[test]
fn dynamo_eval_resnet() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture("exporters/resnet_dynamo_eval.onnx", dir.path());
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_equivalent("exporters/resnet_dynamo_eval.onnx");
    common::onnx_check(&[&out]);
}

#[test]
fn torchscript_eval_vit() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture("exporters/vit_torchscript_eval.onnx", dir.path());
    // Four equal transformer blocks: block 2 is frozen.
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_equivalent("exporters/vit_torchscript_eval.onnx");
    common::onnx_check(&[&out]);
}

#[test]
fn dynamo_eval_vit() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture("exporters/vit_dynamo_eval.onnx", dir.path());
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_equivalent("exporters/vit_dynamo_eval.onnx");
    common::onnx_check(&[&out]);
}

#[test]
fn torchscript_training_mode_resnet() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture("exporters/resnet_torchscript_train.onnx", dir.path());
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    let rewritten = load_model(&out).unwrap().model;
    let g = rewritten.graph.as_ref().unwrap();
    // Running statistics stay the frozen unit's own: no integration node writes a running_mean/var input.
    let bn_stats: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "BatchNormalization")
        .flat_map(|n| n.input[3..5].iter().map(String::as_str))
        .collect();
    let integrated: Vec<&str> = g
        .node
        .iter()
        .filter(|n| {
            matches!(
                parse_integration_node(n.name()),
                Some((_, IntegrationNode::Add))
            )
        })
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    assert!(!integrated.is_empty());
    assert!(
        integrated.iter().all(|v| !bn_stats.contains(v)),
        "a running statistic was replaced"
    );
    common::onnx_check(&[&out]);
}

#[test]
fn external_data_stays_external() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, out) = rewrite_fixture(
        "exporters/resnet_torchscript_external/model.onnx",
        dir.path(),
    );
    assert_eq!(frozen.len(), 1);
    let data = out.with_file_name(format!(
        "{}.data",
        out.file_name().unwrap().to_string_lossy()
    ));
    assert!(data.exists(), "{} missing", data.display());
    let reloaded = load_model(&out).unwrap();
    assert!(!reloaded.external.is_empty());
    common::onnx_check(&[&out]);
}

/// `--fsync` reaches the writer: the rewritten model and its external data file are flushed (files and folder)
/// before the command reports them written.
#[test]
fn fsync_flushes_the_model_and_its_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.rl.onnx");
    let input = common::fixture("exporters/resnet_torchscript_external/model.onnx");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args([input.to_str().unwrap(), "--every", "2", "--fsync", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("wrote {} (flushed to disk)", out.display())),
        "{stdout}"
    );
    assert!(dir.path().join("model.rl.onnx.data").is_file());
    assert!(!load_model(&out).unwrap().external.is_empty());

    // The writer itself: both files, data first, each flushed.
    let loaded = load_model(&input).unwrap();
    let again = dir.path().join("again.onnx");
    let saved = save_model(
        &loaded.model,
        &again,
        &SaveOptions {
            durable: true,
            ..SaveOptions::like_input(&loaded.external, &loaded.model)
        },
    )
    .unwrap();
    assert!(saved.durable);
    assert_eq!(
        saved.files,
        vec![dir.path().join("again.onnx.data"), again.clone()]
    );
}
