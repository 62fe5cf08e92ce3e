//! Every model the tool writes runs on its own embedded engine through every command: training-step models
//! from `compile-train` (zoo and exporter models, as they are and rewritten) through `run` and `check` with
//! `--engine tract`, with their int64 labels input and `correct` output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "rl-rewrite {}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Compiles the step model of `model` (rewritten with `--every 2` first when asked) at batch 2.
fn step_model(dir: &Path, model: &Path, every: bool) -> PathBuf {
    let source = if every {
        let rewritten = dir.join("rewritten.onnx");
        ok(&[s(model), "--every", "2", "-o", s(&rewritten)]);
        rewritten
    } else {
        model.to_path_buf()
    };
    let step = dir.join(if every { "step.rl.onnx" } else { "step.onnx" });
    ok(&["compile-train", s(&source), "-o", s(&step), "--batch", "2"]);
    step
}

/// `run` and `check` on the step model with tract: the loss is finite, `correct` an int64 count of at most the
/// batch, and a model checked against itself is equal.
fn runs_on_tract(step: &Path, out: &Path) {
    let text = ok(&[
        "run",
        s(step),
        "--engine",
        "tract",
        "--batch",
        "2",
        "-o",
        s(out),
    ]);
    assert!(
        text.contains("input  labels: int64 [2] random"),
        "labels are fed as int64:\n{text}"
    );
    let loss = rl_rewrite::npy::read_npy(&out.join("loss.npy")).unwrap();
    let loss = loss.as_f32().expect("the loss is float32")[0];
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    let correct = rl_rewrite::npy::read_npy(&out.join("correct.npy")).unwrap();
    let correct = correct.as_i64().expect("correct is an int64 count")[0];
    assert!((0..=2).contains(&correct), "correct {correct}");
    let text = ok(&[
        "check",
        s(step),
        s(step),
        "--engine",
        "tract",
        "--batch",
        "2",
    ]);
    assert!(text.contains("equal within tolerance"), "{text}");
}

#[test]
fn zoo_step_models_run_and_check_on_tract() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("resnet20.onnx");
    ok(&["zoo", "resnet20", "-o", s(&model)]);
    for every in [false, true] {
        let step = step_model(dir.path(), &model, every);
        runs_on_tract(&step, &dir.path().join(format!("out-{every}")));
    }
}

#[test]
fn exporter_step_models_run_and_check_on_tract() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["resnet_torchscript_train.onnx", "vit_dynamo_eval.onnx"] {
        let model = common::fixture(&format!("exporters/{fixture}"));
        let step = step_model(dir.path(), &model, true);
        runs_on_tract(&step, &dir.path().join(fixture));
    }
}
