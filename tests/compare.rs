//! `rl-rewrite compare` end to end on the residual MLP of tests/common/train_run.rs: both sides trained with
//! the same seed and set side by side, and a K that freezes nothing refused before any training.

mod common;

use std::process::Command;

use common::train_run::*;

#[test]
fn compare_trains_both_sides_with_the_same_seed_and_sets_them_side_by_side() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("cmp");
    let flags = [
        "--data", DATA, "--batch", "32", "--lr", "0.05", "--epochs", "2",
    ];
    let compare = || {
        Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
            .arg("compare")
            .arg(&model)
            .args(["--every", "2"])
            .args(flags)
            .args(["--engine", engine, "--device", "cpu", "--seed", "5"])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = compare();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for row in [
        "learnable parameters",
        "optimizer-state bytes",
        "peak host memory",
        "time per epoch",
        "best test accuracy",
        "final test accuracy",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with(row)),
            "no '{row}' row:\n{t}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    // BP learns all 4 blocks and the head; every 2 freezes blocks.1 (weight and bias) and learns its a and b.
    let block = WIDTH * WIDTH + WIDTH;
    let bp_values = 4 * block + WIDTH * CLASSES + CLASSES;
    let rl_values = bp_values - block + 2;
    assert_eq!(report["bp"]["learnable_values"], bp_values, "{report}");
    assert_eq!(
        report["replacement_learning"]["learnable_values"],
        rl_values
    );
    assert_eq!(report["replacement_learning"]["tensors_replaced"], 2);
    // SGD with momentum: one float32 buffer per learnable value.
    assert_eq!(report["bp"]["optimizer_state_bytes"], 4 * bp_values);
    assert_eq!(
        report["replacement_learning"]["optimizer_state_bytes"],
        4 * rl_values
    );
    for side in ["bp", "replacement_learning"] {
        let epochs = report[side]["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 2, "{side}");
        assert!(epochs[1]["test_acc"].as_f64().unwrap() > 0.5, "{side}: {t}");
        assert!(epochs[1]["peak_host_mib"].as_f64().unwrap() > 0.0);
    }
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.contains("BP") && svg.contains("RepL every 2"));

    // The BP side is exactly what `train --bp` computes with the same flags: same seed, same data order.
    let alone = dir.path().join("alone");
    let o = train(&model, &alone, engine, &["--bp", "--epochs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(alone.join("state.onnx")).unwrap(),
        std::fs::read(out.join("bp/state.onnx")).unwrap(),
        "compare's BP run differs from train --bp with the same flags"
    );

    // The same command again continues from the finished runs instead of training anew.
    let o = compare();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("continuing"), "{t}");
    assert!(
        !t.contains("epoch 1/2:"),
        "a finished run was trained again:\n{t}"
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(again["bp"]["epochs"], report["bp"]["epochs"]);
}

#[test]
fn compare_refuses_a_k_that_freezes_nothing_before_training_anything() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("cmp");
    let o = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .arg("compare")
        .arg(&model)
        .args([
            "--every", "1", "--data", DATA, "--epochs", "1", "--engine", "tract",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("mlp.onnx") && t.contains("--every must be at least 2"),
        "{t}"
    );
    assert!(
        !out.join("bp").exists(),
        "the BP side was trained before the error:\n{t}"
    );
}
