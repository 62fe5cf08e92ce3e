//! `rl-rewrite compile-train` on a Replacement Learning rewrite: the step and eval models are written, the
//! frozen unit's a and b are trainable, and both models pass onnx.checker and run in ONNX Runtime.

mod common;

use std::process::Command;

use prost::Message;
use rl_passes::onnx::{tensor_proto::DataType, ModelProto};
use rl_passes::testing::{f32_tensor, node, sym, ModelBuilder, NodeExt};

/// x [N, 8] → 4 residual blocks h = h + Relu(h·W_k) → logits = h·W_out.
fn residual_mlp() -> ModelProto {
    // Nodes are named after their output.
    let named = |op: &str, inputs: &[&str], output: &str| node(op, inputs, &[output]).named(output);
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut h = "x".to_owned();
    for k in 0..4 {
        let w = format!("blocks.{k}.weight");
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 7 + k * 13) % 17) as f32 / 40.0 - 0.2)
            .collect();
        inits.push(f32_tensor(&w, &[8, 8], &values));
        nodes.push(named("MatMul", &[&h, &w], &format!("blocks.{k}.mm")));
        nodes.push(named(
            "Relu",
            &[&format!("blocks.{k}.mm")],
            &format!("blocks.{k}.relu"),
        ));
        nodes.push(named(
            "Add",
            &[&h, &format!("blocks.{k}.relu")],
            &format!("blocks.{k}.out"),
        ));
        h = format!("blocks.{k}.out");
    }
    inits.push(f32_tensor(
        "head.weight",
        &[8, 3],
        &(0..24)
            .map(|i| (i % 5) as f32 / 10.0 - 0.2)
            .collect::<Vec<_>>(),
    ));
    nodes.push(named("MatMul", &[&h, "head.weight"], "logits"));
    ModelBuilder::new("residual_mlp")
        .nodes(nodes)
        .initializers(inits)
        .input("x", DataType::Float, [sym("N"), 8.into()])
        .output("logits", DataType::Float, [sym("N"), 3.into()])
        .build()
}

/// Zoo resnet20 written by the CLI into `dir`.
fn zoo_resnet20(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("r20.onnx");
    assert!(Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(["zoo", "resnet20", "-o", model.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    model
}

#[test]
fn compile_train_writes_step_eval_and_manifest_for_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("mlp.onnx"), residual_mlp().encode_to_vec()).unwrap();
    let bin = env!("CARGO_BIN_EXE_rl-rewrite");
    let rewrite = Command::new(bin)
        .args([&p("mlp.onnx"), "--every", "2", "-o", &p("mlp.rl.onnx")])
        .output()
        .unwrap();
    assert!(
        rewrite.status.success(),
        "{}",
        String::from_utf8_lossy(&rewrite.stderr)
    );
    for optimizer in ["sgd", "adamw"] {
        let out = Command::new(bin)
            .args([
                "compile-train",
                &p("mlp.rl.onnx"),
                "-o",
                &p("step.onnx"),
                "--eval-out",
                &p("eval.onnx"),
            ])
            .args([
                "--manifest",
                &p("manifest.json"),
                "--batch",
                "4",
                "--optimizer",
                optimizer,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{optimizer}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("training step:") && stdout.contains("wrote"),
            "{stdout}"
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p("manifest.json")).unwrap()).unwrap();
        let params: Vec<&str> = manifest["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(
            params.contains(&"blocks.1.rl_a") && params.contains(&"blocks.1.rl_b"),
            "{params:?}"
        );
        assert!(
            !params.contains(&"blocks.1.weight"),
            "the replaced tensor is computed, not trained: {params:?}"
        );
        assert!(
            params.contains(&"blocks.0.weight") && params.contains(&"blocks.2.weight"),
            "{params:?}"
        );
        let step = rl_passes::io::load_model(&dir.path().join("step.onnx"))
            .unwrap()
            .model;
        let stored = rl_passes::contract::require_manifest(&step).unwrap();
        assert_eq!(
            serde_json::to_value(&stored).unwrap(),
            manifest,
            "the step model carries the manifest --manifest wrote"
        );
        let outputs: Vec<&str> = step
            .graph
            .as_ref()
            .unwrap()
            .output
            .iter()
            .map(|o| o.name())
            .collect();
        assert_eq!(&outputs[..2], ["loss", "correct"]);
        assert!(outputs.contains(&"blocks.1.rl_a.next"), "{outputs:?}");
        common::onnx_check(&[&dir.path().join("step.onnx"), &dir.path().join("eval.onnx")]);
    }
}

#[test]
fn compile_train_refuses_what_it_cannot_train_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = zoo_resnet20(dir.path());
    let bin = env!("CARGO_BIN_EXE_rl-rewrite");
    let out = Command::new(bin)
        .args([
            "compile-train",
            model.to_str().unwrap(),
            "--label-smoothing",
            "1",
            "-o",
            dir.path().join("s.onnx").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("r20.onnx") && err.contains("label smoothing"),
        "{err}"
    );
    assert!(!dir.path().join("s.onnx").exists());
}

#[test]
fn compile_train_takes_batchnorm_running_statistics_as_state() {
    let dir = tempfile::tempdir().unwrap();
    let model = zoo_resnet20(dir.path());
    let bin = env!("CARGO_BIN_EXE_rl-rewrite");
    let step = dir.path().join("s.onnx");
    let eval = dir.path().join("e.onnx");
    let out = Command::new(bin)
        .args([
            "compile-train",
            model.to_str().unwrap(),
            "-o",
            step.to_str().unwrap(),
            "--eval-out",
            eval.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let m = rl_passes::io::load_model(&step).unwrap().model;
    let g = m.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type() != "BatchNormalization"));
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name()).collect();
    let stats = outputs
        .iter()
        .filter(|o| o.ends_with("running_mean.next") || o.ends_with("running_var.next"))
        .count();
    let bn = rl_passes::io::load_model(&model)
        .unwrap()
        .model
        .graph
        .unwrap()
        .node;
    let bn = bn
        .iter()
        .filter(|n| n.op_type() == "BatchNormalization")
        .count();
    assert_eq!(bn, 21);
    assert_eq!(
        stats,
        2 * bn,
        "two running statistics per BatchNormalization"
    );
    common::onnx_check(&[&step, &eval]);
}

#[test]
fn the_running_variance_choice_and_the_optimizer_are_recorded_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let model = zoo_resnet20(dir.path());
    let bin = env!("CARGO_BIN_EXE_rl-rewrite");
    let compile = |extra: &[&str]| {
        let manifest = dir.path().join("m.json");
        let out = Command::new(bin)
            .arg("compile-train")
            .arg(&model)
            .args(["--batch", "2", "-o"])
            .arg(dir.path().join("s.onnx"))
            .arg("--manifest")
            .arg(&manifest)
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json = out.status.success().then(|| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&manifest).unwrap())
                .unwrap()
        });
        (text, json)
    };
    let (text, m) = compile(&[]);
    let m = m.unwrap_or_else(|| panic!("{text}"));
    assert_eq!(m["bn_running_var"], "unbiased", "{m}");
    assert!(
        text.contains("BatchNorm running variance unbiased"),
        "{text}"
    );
    assert_eq!(m["optimizer"]["kind"], "sgd");
    assert_eq!(m["optimizer"]["momentum"], 0.9);
    assert_eq!(m["optimizer"]["weight_decay"], 5e-4);

    let (text, m) = compile(&[
        "--bn-running-var",
        "biased",
        "--optimizer",
        "adamw",
        "--betas",
        "0.8,0.95",
    ]);
    let m = m.unwrap_or_else(|| panic!("{text}"));
    assert_eq!(m["bn_running_var"], "biased", "{m}");
    assert!(text.contains("BatchNorm running variance biased"), "{text}");
    assert_eq!(m["optimizer"]["kind"], "adamw");
    assert_eq!(m["optimizer"]["beta1"], 0.8);
    assert_eq!(m["optimizer"]["beta2"], 0.95);
    assert_eq!(m["optimizer"]["eps"], 1e-8);
    assert_eq!(m["optimizer"]["weight_decay"], 0.01);

    let (text, m) = compile(&["--optimizer", "adamw", "--nesterov"]);
    assert!(m.is_none(), "{text}");
    assert!(
        text.contains("--nesterov applies to --optimizer sgd only, and the optimizer is adamw"),
        "{text}"
    );
    let (text, m) = compile(&["--bn-running-var", "sample"]);
    assert!(
        m.is_none() && text.contains("unbiased") && text.contains("biased"),
        "{text}"
    );
}
