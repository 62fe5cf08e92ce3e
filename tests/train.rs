//! `rl-rewrite train` end to end on a residual MLP and synthetic data: it learns (BP and Replacement Learning),
//! writes metrics and checkpoints that run, resumes bit for bit, stops cleanly on a NaN loss, warns of a
//! diverging one, and takes each optimizer's own defaults and flags.
//!
//! ONNX Runtime is used when its library is found; under CI (env `CI`) it must be, never skipped.

mod common;

use common::train_run::*;

use std::path::Path;
use std::process::Command;

use prost::Message;
use rl_passes::contract::{scalar_name, Scalar};
use rl_passes::onnx::ModelProto;
use rl_passes::tensor::f32_tensor;
use rl_passes::testing::{node, NodeExt};

fn learns(engine: &str, mode: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("run");
    let o = train(&model, &out, engine, &[mode, &["--epochs", "4"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let rows = metrics(&out);
    assert_eq!(rows.len(), 4, "one row per epoch");
    let last = rows.last().unwrap();
    let acc = last["test_acc"].as_f64().unwrap();
    assert!(
        acc > 0.6,
        "{mode:?} on {engine}: test accuracy {acc} (chance 0.25)\n{}",
        text(&o)
    );
    assert!(last["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(last["peak_host_mib"].as_f64().unwrap() > 0.0);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "epoch,train_loss,train_acc,test_loss,test_acc,lr,epoch_time_s,images_per_s,peak_host_mib,peak_device_mib"
    );
    assert_eq!(lines.count(), 4);
    let curves = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    let title = if mode.contains(&"--bp") {
        "mlp.onnx — BP"
    } else {
        "mlp.onnx — every 2"
    };
    assert!(curves.contains(title), "curves.svg has no title '{title}'");
    // The checkpoint is an inference model that runs.
    let ck = out.join("model.onnx");
    let run = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(["run"])
        .arg(&ck)
        .args(["--engine", "tract", "--batch", "3"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert_ne!(
        initializer(&ck, "blocks.0.weight"),
        initializer(&model, "blocks.0.weight"),
        "trained weights are in the checkpoint"
    );
    if mode.contains(&"--every") {
        // blocks.1 is frozen: its a and b trained away from 0.5, its weight replaced.
        for which in [Scalar::A, Scalar::B] {
            let name = &scalar_name("blocks.1", which);
            let v = initializer(&ck, name);
            assert_eq!(v.len(), 1);
            assert!((v[0] - 0.5).abs() > 1e-4, "{name} = {}", v[0]);
        }
        let init = rl_passes::io::load_model(&ck).unwrap().model;
        assert!(!init
            .graph
            .unwrap()
            .initializer
            .iter()
            .any(|t| t.name() == "blocks.1.weight"));
    }
}

#[test]
fn bp_learns_on_the_chosen_engine() {
    learns(engine(), &["--bp"]);
}

#[test]
fn replacement_learning_learns_and_trains_a_and_b() {
    learns(engine(), &["--every", "2"]);
}

#[test]
fn bp_learns_on_tract() {
    learns("tract", &["--bp", "--optimizer", "adamw", "--lr", "0.01"]);
}

#[test]
fn resume_continues_bit_for_bit() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let flags = ["--every", "2", "--epochs", "2", "--augment", "crop-flip"];
    let whole = dir.path().join("whole");
    let o = train(&model, &whole, engine, &flags);
    assert!(o.status.success(), "{}", text(&o));
    let part = dir.path().join("part");
    let o = train(
        &model,
        &part,
        engine,
        &[&flags[..], &["--stop-after", "1"]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(metrics(&part).len(), 1);
    let o = train(
        &model,
        &part,
        engine,
        &[&flags[..], &["--resume", part.to_str().unwrap()]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    assert_eq!(metrics(&part).len(), 2);
    let a = std::fs::read(whole.join("state.onnx")).unwrap();
    let b = std::fs::read(part.join("state.onnx")).unwrap();
    assert!(
        a == b,
        "the resumed run's parameters and state differ from the uninterrupted run's"
    );
    let ma = metrics(&whole);
    let mb = metrics(&part);
    assert_eq!(ma[1]["test_acc"], mb[1]["test_acc"]);
    assert_eq!(ma[1]["train_loss"], mb[1]["train_loss"]);
    // Other settings are refused: a resumed run would silently differ.
    let o = train(
        &model,
        &part,
        engine,
        &[
            &flags[..],
            &["--lr", "0.1", "--resume", part.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("other settings"), "{}", text(&o));
}

#[test]
fn a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("run");
    let o = train(
        &model,
        &out,
        engine,
        &["--bp", "--epochs", "2", "--lr", "1e30"],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("the loss became") && t.contains("learning rate") && t.contains("epoch 1"),
        "{t}"
    );
    assert!(t.contains("Hint: lower --lr"), "{t}");
    // The epoch-0 checkpoint is intact: the initial weights, finite.
    let ck = out.join("model.onnx");
    assert_eq!(
        initializer(&ck, "blocks.0.weight"),
        initializer(&model, "blocks.0.weight")
    );
    assert!(out.join("state.onnx").is_file());
}

#[test]
fn a_diverging_loss_is_reported_with_a_hint() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("run");
    // AdamW at 1000 times its usual rate: from the second step on the loss is far past its start. Where it stays
    // finite the epoch runs to its end with one warning; where it overflows to NaN the run stops with the same
    // hint.
    let o = train(
        &model,
        &out,
        engine,
        &[
            "--bp",
            "--epochs",
            "1",
            "--optimizer",
            "adamw",
            "--lr",
            "1",
            "--schedule",
            "constant",
        ],
    );
    let t = text(&o);
    assert!(
        t.contains(
            "optimizer AdamW (β 0.9/0.999, ε 1e-8, weight decay 0.01), base learning rate 1 "
        ),
        "the chosen values are printed first\n{t}"
    );
    let hint = "Hint: lower --lr (the base rate is 1e0; AdamW usually trains at 1e-3)";
    let warnings = t.matches("warning: the training loss grew").count();
    assert!(warnings <= 1, "one warning at most\n{t}");
    if o.status.success() {
        assert_eq!(warnings, 1, "{t}");
        assert!(
            t.contains(&format!(
                "at step 2 (epoch 1, learning rate 1.000e0): training is diverging. {hint}"
            )),
            "{t}"
        );
    } else {
        assert!(
            t.contains("the loss became NaN at step")
                && t.contains("learning rate 1.000e0")
                && t.contains(hint),
            "{t}"
        );
    }
    if engine == "ort" {
        assert!(o.status.success() && warnings == 1, "{t}");
    }
    // Whether the run stopped or finished, its checkpoint is whole.
    assert!(out.join("state.onnx").is_file() && out.join("model.onnx").is_file());
    assert!(initializer(&out.join("model.onnx"), "blocks.0.weight")
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn each_optimizer_takes_its_own_defaults_and_refuses_the_other_ones_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
            .arg("train")
            .arg(&model)
            .args(["--data", DATA, "--bp", "--epochs", "1", "--batch", "512"])
            .args(["--engine", "tract", "--out"])
            .arg(dir.path().join("run"))
            .args(extra)
            .output()
            .unwrap()
    };
    for (extra, flag) in [
        (
            &["--optimizer", "adamw", "--momentum", "0.8"][..],
            "--momentum",
        ),
        (&["--optimizer", "adamw", "--nesterov"][..], "--nesterov"),
        (&["--betas", "0.9,0.99"][..], "--betas"),
        (&["--optimizer", "sgd", "--eps", "1e-6"][..], "--eps"),
    ] {
        let o = run(extra);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {t}");
        assert!(
            t.contains(&format!("{flag} applies to --optimizer")) && t.contains("leave"),
            "{extra:?}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
    let o = run(&["--optimizer", "adamw", "--betas", "0.9"]);
    assert!(
        !o.status.success() && text(&o).contains("B1,B2"),
        "{}",
        text(&o)
    );
    let o = run(&["--optimizer", "adamw", "--betas", "0.9,1.5"]);
    assert!(
        !o.status.success() && text(&o).contains("beta2 must be in [0, 1) (got 1.5)"),
        "{}",
        text(&o)
    );
    // The defaults: AdamW's are torch.optim.AdamW's, with its own learning rate.
    let o = run(&["--optimizer", "adamw"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(
            "optimizer AdamW (β 0.9/0.999, ε 1e-8, weight decay 0.01), base learning rate 0.001 (cosine \
             schedule), BatchNorm running variance unbiased"
        ),
        "{t}"
    );
    std::fs::remove_dir_all(dir.path().join("run")).unwrap();
    let o = run(&[
        "--betas",
        "0.8,0.99",
        "--eps",
        "1e-6",
        "--optimizer",
        "adamw",
    ]);
    assert!(
        text(&o)
            .contains("AdamW (β 0.8/0.99, ε 1e-6, weight decay 0.01), base learning rate 0.001"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(dir.path().join("run")).unwrap();
    let o = run(&[]);
    assert!(
        text(&o).contains(
            "optimizer SGD (momentum 0.9, weight decay 0.0005), base learning rate 0.1 (cosine schedule)"
        ),
        "{}",
        text(&o)
    );
    // --help shows them.
    let help = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(["train", "--help"])
        .output()
        .unwrap();
    let h = text(&help);
    for want in [
        "[default: 0.1 for sgd, 1e-3 for adamw]",
        "[default: 5e-4 for sgd, 0.01 for adamw",
        "lr 0.1, momentum 0.9, weight decay 5e-4",
        "lr 1e-3, betas 0.9,0.999, eps 1e-8, decoupled weight decay 0.01",
        "--bn-running-var",
    ] {
        assert!(h.contains(want), "--help lacks '{want}':\n{h}");
    }
}

#[test]
fn ctrl_c_checkpoints_mid_epoch_and_the_resumed_run_matches() {
    use std::io::{BufRead, BufReader};
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    // 1024 steps per epoch; the signal comes right after the first epoch's line, somewhere in the second epoch.
    let flags = ["--every", "2", "--epochs", "3", "--batch", "8"];
    let data = "synthetic:8192:1x4x4:4:3";
    let run = |out: &Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"));
        c.arg("train")
            .arg(&model)
            .args(["--data", data, "--lr", "0.05", "--engine", engine])
            .args(["--device", "cpu"])
            .args(flags)
            .arg("--out")
            .arg(out)
            .args(extra);
        c
    };
    let part = dir.path().join("part");
    let mut child = run(&part, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().starts_with("epoch 1/3") {
            break;
        }
    }
    // SAFETY: signalling our own child by its id.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    if o.status.success() {
        // The run finished before the signal arrived (a very fast machine): nothing to resume.
        eprintln!("note: the run ended before Ctrl-C: {t}");
        return;
    }
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted: checkpoint written"), "{t}");
    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("checkpoint.json")).unwrap())
            .unwrap();
    assert!(
        progress["global_step"].as_u64().unwrap() >= 1024,
        "{progress}"
    );
    let o = run(&part, &["--resume", part.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let whole = dir.path().join("whole");
    let o = run(&whole, &[]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read(whole.join("state.onnx")).unwrap()
            == std::fs::read(part.join("state.onnx")).unwrap(),
        "resumed after Ctrl-C at {progress}: parameters differ from the uninterrupted run"
    );
    // Times, throughput and memory differ between runs; the numbers of learning must not.
    let learning = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut r| {
                for k in ["epoch_time_s", "images_per_s", "peak_host_mib"] {
                    r.as_object_mut().unwrap().remove(k);
                }
                r
            })
            .collect()
    };
    assert_eq!(learning(metrics(&whole)), learning(metrics(&part)));
}

#[test]
fn the_trained_rewrite_bakes_into_an_equal_plain_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("run");
    let o = train(&model, &out, engine(), &["--every", "2", "--epochs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let bin = env!("CARGO_BIN_EXE_rl-rewrite");
    let baked = dir.path().join("baked.onnx");
    let b = Command::new(bin)
        .arg("bake")
        .arg(out.join("model.onnx"))
        .arg("-o")
        .arg(&baked)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", text(&b));
    let c = Command::new(bin)
        .arg("check")
        .arg(out.join("model.onnx"))
        .arg(&baked)
        .args(["--engine", "tract"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
}

/// A model with BatchNormalization: the eval model and the checkpoint must use the trained running statistics.
#[test]
fn a_batchnorm_resnet_evaluates_with_its_trained_running_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("resnet.onnx");
    let opts = rl_models::ZooOptions {
        classes: 4,
        image_size: 8,
        channels: 3,
        seed: 2,
    };
    let resnet = rl_models::build_custom_resnet_cifar(1, 4, &opts).unwrap();
    std::fs::write(&model, resnet.encode_to_vec()).unwrap();
    let data = "synthetic:512:3x8x8:4:1";
    let mut engines = vec!["tract"];
    if engine() == "ort" {
        engines.push("ort");
    }
    for engine in engines {
        let out = dir.path().join(format!("run-{engine}"));
        let run = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
            .arg("train")
            .arg(&model)
            .args([
                "--data", data, "--bp", "--epochs", "3", "--batch", "32", "--lr", "0.05",
            ])
            .args([
                "--engine", engine, "--device", "cpu", "--seed", "1", "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{engine}: {}", text(&run));
        let rows = metrics(&out);
        let last = rows.last().unwrap();
        let (test_loss, test_acc) = (
            last["test_loss"].as_f64().unwrap(),
            last["test_acc"].as_f64().unwrap(),
        );
        assert!(
            test_loss.is_finite() && test_loss < 5.0,
            "{engine}: test loss {test_loss} (running statistics unused?)"
        );
        assert!(
            test_acc > 0.5,
            "{engine}: test accuracy {test_acc} (chance 0.25)"
        );
        // The checkpoint is inference-ready: `eval` on it reproduces the run's test accuracy.
        let eval = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
            .arg("eval")
            .arg(out.join("model.onnx"))
            .args([
                "--data", data, "--batch", "32", "--json", "--engine", engine, "--device", "cpu",
            ])
            .output()
            .unwrap();
        assert!(eval.status.success(), "{engine}: {}", text(&eval));
        let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        let acc = report["top1"].as_f64().unwrap();
        assert!(
            (acc - test_acc).abs() <= 1.0 / 512.0,
            "{engine}: checkpoint eval {acc} vs run {test_acc}"
        );
    }
}

/// A ViT (its patch embedding is a Conv whose bias becomes a step-model input) trains on tract too: tract's
/// Conv translation adds a node named `{conv}.bias`, which clashed with that input before the runner renamed
/// nodes for tract.
#[test]
fn a_vit_with_a_trained_conv_bias_trains_on_tract() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("vit.onnx");
    let opts = rl_models::ZooOptions {
        classes: 4,
        image_size: 8,
        channels: 1,
        seed: 1,
    };
    let vit = rl_models::build_custom_vit(4, 8, 2, 16, 4, &opts).unwrap();
    std::fs::write(&model, vit.encode_to_vec()).unwrap();
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .arg("train")
        .arg(&model)
        .args([
            "--every",
            "2",
            "--data",
            "synthetic:64:1x8x8:4:3",
            "--batch",
            "16",
        ])
        .args(["--epochs", "1", "--optimizer", "adamw", "--lr", "0.001"])
        .args(["--engine", "tract", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rows = metrics(&out);
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["train_loss"].as_f64().unwrap().is_finite());
}

/// The residual MLP as a de-duplicating exporter writes it: the four equal (zero) biases are one stored tensor,
/// read by each block through an Identity of its own.
fn residual_mlp_with_shared_biases() -> ModelProto {
    let mut m = residual_mlp();
    let g = m.graph.as_mut().unwrap();
    g.initializer
        .retain(|t| !(t.name().starts_with("blocks.") && t.name().ends_with(".bias")));
    g.initializer
        .push(f32_tensor("zeros", &[WIDTH as i64], &[0.0; WIDTH]));
    for k in 0..4 {
        g.node.insert(
            0,
            node("Identity", &["zeros"], &[&format!("blocks.{k}.bias")])
                .named(format!("blocks.{k}.bias.identity")),
        );
    }
    m
}

/// The run summary counts the tensors the rewrite replaced (weight and bias of blocks.1), not the stored tensors it
/// removed (only the weight: the biases' shared storage is still read by the other blocks).
#[test]
fn replaced_tensors_are_counted_where_storage_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("shared.onnx");
    std::fs::write(&model, residual_mlp_with_shared_biases().encode_to_vec()).unwrap();
    let plan = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args([model.to_str().unwrap(), "--every", "2", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        text(&plan).contains("froze 1 units") && text(&plan).contains("(2 replaced by"),
        "{}",
        text(&plan)
    );
    let out = dir.path().join("run");
    let o = train(&model, &out, "tract", &["--every", "2", "--epochs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("every 2: 2 tensors replaced by a·prev + b·next"),
        "{}",
        text(&o)
    );
}
