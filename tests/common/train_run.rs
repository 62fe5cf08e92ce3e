//! A residual MLP on synthetic data and the helpers that train it through the CLI (tests/train.rs,
//! tests/compare.rs).

use std::path::Path;
use std::process::{Command, Output};

use prost::Message;
use rl_passes::onnx::{tensor_proto::DataType, ModelProto};
use rl_passes::tensor::{f32_tensor, f32_values};
use rl_passes::testing::{node, sym, ModelBuilder, NodeExt};

pub const WIDTH: usize = 16;
pub const CLASSES: usize = 4;
/// 1×4×4 images (16 values, the MLP's width), 4 classes, 1024 images per split.
pub const DATA: &str = "synthetic:1024:1x4x4:4:3";

/// Deterministic values in about [-scale, scale].
pub fn weights(seed: usize, n: usize, scale: f32) -> Vec<f32> {
    let mut s = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) + 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// x [N, 16] → Flatten → 4 equal residual blocks h = h + Relu(h·W_k + b_k) → logits = h·W_out + b_out.
pub fn residual_mlp() -> ModelProto {
    // Nodes are named after their output.
    let named = |op: &str, inputs: &[&str], output: &str| node(op, inputs, &[output]).named(output);
    let mut nodes = vec![named("Flatten", &["x"], "flat")];
    let mut inits = Vec::new();
    let mut h = "flat".to_owned();
    for k in 0..4 {
        let w = format!("blocks.{k}.weight");
        let b = format!("blocks.{k}.bias");
        inits.push(f32_tensor(
            &w,
            &[WIDTH as i64, WIDTH as i64],
            &weights(k + 1, WIDTH * WIDTH, 0.25),
        ));
        inits.push(f32_tensor(&b, &[WIDTH as i64], &[0.0; WIDTH]));
        let mm = format!("blocks.{k}.mm");
        let add = format!("blocks.{k}.add");
        let relu = format!("blocks.{k}.relu");
        let out = format!("blocks.{k}.out");
        nodes.push(named("MatMul", &[&h, &w], &mm));
        nodes.push(named("Add", &[&mm, &b], &add));
        nodes.push(named("Relu", &[&add], &relu));
        nodes.push(named("Add", &[&h, &relu], &out));
        h = out;
    }
    inits.push(f32_tensor(
        "head.weight",
        &[WIDTH as i64, CLASSES as i64],
        &weights(99, WIDTH * CLASSES, 0.25),
    ));
    inits.push(f32_tensor("head.bias", &[CLASSES as i64], &[0.0; CLASSES]));
    nodes.push(named("MatMul", &[&h, "head.weight"], "head.mm"));
    nodes.push(named("Add", &["head.mm", "head.bias"], "logits"));
    ModelBuilder::new("residual_mlp")
        .nodes(nodes)
        .initializers(inits)
        .input(
            "x",
            DataType::Float,
            [sym("N"), 1.into(), 4.into(), 4.into()],
        )
        .output(
            "logits",
            DataType::Float,
            [sym("N"), (CLASSES as i64).into()],
        )
        .build()
}

/// The engine the tests train on: ONNX Runtime when its library is found (always under CI), else tract.
pub fn engine() -> &'static str {
    let found = rl_rewrite::engine::ort::find_library();
    match found {
        Ok(_) => "ort",
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI must train on ONNX Runtime: {e}")
        }
        Err(e) => {
            eprintln!("note: {e}; the train tests use tract");
            "tract"
        }
    }
}

pub fn train(model: &Path, out: &Path, engine: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .arg("train")
        .arg(model)
        .args(["--data", DATA, "--batch", "32"])
        .args(if extra.contains(&"--lr") {
            &[][..]
        } else {
            &["--lr", "0.05"][..]
        })
        .args(["--engine", engine, "--device", "cpu", "--seed", "5"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn write_model(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mlp.onnx");
    std::fs::write(&path, residual_mlp().encode_to_vec()).unwrap();
    path
}

pub fn metrics(out: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("metrics.json")).unwrap(),
    )
    .unwrap()
    .as_array()
    .unwrap()
    .clone()
}

pub fn initializer(model: &Path, name: &str) -> Vec<f32> {
    let m = rl_passes::io::load_model(model).unwrap().model;
    let g = m.graph.unwrap();
    let t = g
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("{}: no initializer {name}", model.display()));
    f32_values(t).unwrap()
}
