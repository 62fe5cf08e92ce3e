//! `rl-rewrite eval` against an independent computation: a linear classifier built here from MNIST class
//! means, whose predictions this test computes itself with ndarray.

mod common;

use std::process::Command;

use prost::Message;
use rl_passes::onnx::{tensor_proto::DataType, ModelProto};
use rl_passes::testing::{node, sym, ModelBuilder, NodeExt};
use rl_rewrite::data::{open, DataSpec, Split};
use tract_onnx::prelude::tract_ndarray::{Array1, Array2, Axis};

/// Flatten → Gemm(W, b) with W: [10, 784] (transB) and b: [10].
fn linear_model(w: &Array2<f32>, b: &Array1<f32>) -> ModelProto {
    // Nodes are named after their output.
    let named = |op: &str, inputs: &[&str], output: &str| node(op, inputs, &[output]).named(output);
    ModelBuilder::new("mnist_linear")
        .node(named("Flatten", &["image"], "flat").int("axis", 1))
        .node(named("Gemm", &["flat", "w", "b"], "logits").int("transB", 1))
        .f32_initializer("w", &[10, 784], w.as_slice().unwrap())
        .f32_initializer("b", &[10], b.as_slice().unwrap())
        .input(
            "image",
            DataType::Float,
            [sym("N"), 1.into(), 28.into(), 28.into()],
        )
        .output("logits", DataType::Float, [sym("N"), 10.into()])
        .build()
}

fn load(split: Split) -> (Array2<f32>, Vec<i64>) {
    let spec: DataSpec = format!(
        "mnist:{}",
        common::repo().join("../shared/data/mnist").display()
    )
    .parse()
    .unwrap();
    let mut data = open(&spec, split).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    while let Some(b) = data.next_batch(1000).unwrap() {
        x.extend(b.images);
        y.extend(b.labels);
    }
    (Array2::from_shape_vec((y.len(), 784), x).unwrap(), y)
}

#[test]
fn eval_accuracy_matches_an_independent_computation() {
    // Nearest class mean as a linear classifier: score_k(x) = m_k·x − |m_k|²/2.
    let (train_x, train_y) = load(Split::Train);
    let mut w = Array2::<f32>::zeros((10, 784));
    let mut counts = [0f32; 10];
    for (row, &label) in train_x.axis_iter(Axis(0)).zip(&train_y) {
        let mut r = w.row_mut(label as usize);
        r += &row;
        counts[label as usize] += 1.0;
    }
    for (k, mut r) in w.axis_iter_mut(Axis(0)).enumerate() {
        r /= counts[k];
    }
    let b: Array1<f32> = w.axis_iter(Axis(0)).map(|m| -0.5 * m.dot(&m)).collect();

    let (test_x, test_y) = load(Split::Test);
    let scores = test_x.dot(&w.t()) + &b;
    let expected = scores
        .axis_iter(Axis(0))
        .zip(&test_y)
        .filter(|(s, &label)| {
            let best = s
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (k, &v)| if v > acc.1 { (k, v) } else { acc },
                );
            best.0 as i64 == label
        })
        .count();
    let accuracy = expected as f64 / test_y.len() as f64;
    assert!(
        accuracy > 0.7,
        "class-mean classifier should beat 70 %, got {accuracy}"
    );

    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("linear.onnx");
    std::fs::write(&model_path, linear_model(&w, &b).encode_to_vec()).unwrap();
    let mnist = format!(
        "mnist:{}",
        common::repo().join("../shared/data/mnist").display()
    );
    let engines: &[&str] = if common::ort_available() {
        &["tract", "ort"]
    } else {
        &["tract"]
    };
    for engine in engines {
        let out = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
            .args([
                "eval",
                model_path.to_str().unwrap(),
                "--data",
                &mnist,
                "--batch",
                "128",
                "--json",
                "--engine",
                engine,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["images"], 2000);
        let correct = (report["top1"].as_f64().unwrap() * 2000.0).round() as i64;
        // Engines and ndarray sum in different orders; a near-tie may flip at most a sample or two.
        assert!(
            (correct - expected as i64).abs() <= 2,
            "{engine}: eval counts {correct} correct, the test computes {expected}"
        );
        assert!(report["top5"].as_f64().unwrap() >= report["top1"].as_f64().unwrap());
        assert!(report["images_per_s"].as_f64().unwrap() > 0.0);
        println!(
            "{engine}: top-1 {correct}/2000 (independent: {expected}), provider {}",
            report["provider"]
        );
    }
}
