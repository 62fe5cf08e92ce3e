//! `rl-rewrite check`, `run` and the `--engine` / `--device` choices, end to end through the binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use rl_passes::io::{load_model, save_model, SaveOptions};
use rl_rewrite::reference::with_integrated_weights;

fn cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"));
    cmd.args(args);
    cmd.output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// resnet20, its `--init-a 1 --init-b 0` rewrite, and the original with the prev weights copied in.
fn three_models(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let original = dir.join("resnet20.onnx");
    let rewritten = dir.join("resnet20.rl.onnx");
    let reference = dir.join("resnet20.prev.onnx");
    assert!(cli(&["zoo", "resnet20", "-o", s(&original)])
        .status
        .success());
    let out = cli(&[
        s(&original),
        "--every",
        "2",
        "--init-a",
        "1",
        "--init-b",
        "0",
        "-o",
        s(&rewritten),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = rl_passes::contract::require_plan(&load_model(&rewritten).unwrap().model).unwrap();
    let prev =
        with_integrated_weights(&load_model(&original).unwrap().model, &plan, 1.0, 0.0).unwrap();
    save_model(&prev, &reference, &SaveOptions::default()).unwrap();
    (original, rewritten, reference)
}

#[test]
fn check_finds_a_rewrite_equal_to_the_original_with_prev_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (original, rewritten, reference) = three_models(dir.path());
    let mut engines = vec!["tract"];
    if common::ort_available() {
        engines.push("ort");
    }
    for engine in engines {
        let same = cli(&[
            "check",
            s(&rewritten),
            s(&reference),
            "--engine",
            engine,
            "--device",
            "cpu",
        ]);
        let text = String::from_utf8_lossy(&same.stdout);
        assert_eq!(
            same.status.code(),
            Some(0),
            "{engine}: {text}{}",
            String::from_utf8_lossy(&same.stderr)
        );
        assert!(text.contains("equal within tolerance"), "{text}");
        assert!(
            text.contains("logits"),
            "outputs are named as in the graph: {text}"
        );
        let differ = cli(&[
            "check",
            s(&rewritten),
            s(&original),
            "--engine",
            engine,
            "--device",
            "cpu",
        ]);
        let text = String::from_utf8_lossy(&differ.stdout);
        assert_eq!(differ.status.code(), Some(1), "{engine}: {text}");
        assert!(
            text.contains("DIFF") && text.contains("outputs differ"),
            "{text}"
        );
    }
}

#[test]
fn run_writes_npy_outputs_and_reads_npy_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    assert!(cli(&["zoo", "resnet20", "-o", s(&model)]).status.success());
    let out_dir = dir.path().join("out");
    let first = cli(&[
        "run",
        s(&model),
        "--engine",
        "tract",
        "--batch",
        "2",
        "--random",
        "3",
        "-o",
        s(&out_dir),
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let logits = rl_rewrite::npy::read_npy(&out_dir.join("logits.npy")).unwrap();
    assert_eq!(logits.shape, vec![2, 10]);
    // Feeding the same input from a file gives the same output.
    let facts = rl_rewrite::inputs::input_facts(&load_model(&model).unwrap().model, 2).unwrap();
    let input = &rl_rewrite::inputs::random_inputs(&facts, 3)[0].1;
    let input_file = dir.path().join("x.npy");
    std::fs::write(&input_file, rl_rewrite::npy::to_npy(input)).unwrap();
    let out2 = dir.path().join("out2");
    let second = cli(&[
        "run",
        s(&model),
        "--engine",
        "tract",
        "--input",
        &format!("input={}", s(&input_file)),
        "-o",
        s(&out2),
    ]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        rl_rewrite::npy::read_npy(&out2.join("logits.npy")).unwrap(),
        logits
    );
    let bad = cli(&[
        "run",
        s(&model),
        "--input",
        &format!("nosuch={}", s(&input_file)),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("has no input 'nosuch'"));
}

/// `--device cuda` runs on CUDA or fails with the reason; `auto` then runs on CUDA too, or on the CPU with
/// exactly one warning line. On a CPU-only library (CI's) CUDA always fails and names the GPU build.
#[test]
fn cuda_is_used_or_refused_clearly_and_auto_falls_back_with_one_warning() {
    if !common::ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    assert!(cli(&["zoo", "resnet20", "-o", s(&model)]).status.success());
    let cuda = cli(&["run", s(&model), "--engine", "ort", "--device", "cuda"]);
    let err = String::from_utf8_lossy(&cuda.stderr);
    let cuda_works = cuda.status.success();
    if cuda_works {
        assert!(
            String::from_utf8_lossy(&cuda.stdout).contains("on CUDAExecutionProvider ("),
            "{}",
            String::from_utf8_lossy(&cuda.stdout)
        );
    } else {
        assert_eq!(cuda.status.code(), Some(2), "{err}");
        assert!(
            err.contains("CUDA was requested") && err.contains("CUDA execution provider"),
            "{err}"
        );
        if err.contains("CPU-only build") {
            assert!(err.contains("setup-ort.sh --gpu"), "{err}");
        }
    }
    let auto = cli(&["run", s(&model), "--engine", "ort", "--device", "auto"]);
    let err = String::from_utf8_lossy(&auto.stderr);
    let out = String::from_utf8_lossy(&auto.stdout);
    assert!(auto.status.success(), "{err}");
    if cuda_works {
        assert!(err.trim().is_empty(), "no warning when CUDA runs: {err}");
        assert!(out.contains("on CUDAExecutionProvider ("), "{out}");
    } else {
        assert_eq!(err.lines().count(), 1, "exactly one warning line: {err}");
        assert!(
            err.starts_with("warning: onnxruntime runs on the CPU:") && err.contains("CUDA"),
            "{err}"
        );
        assert!(out.contains("CPUExecutionProvider"), "{out}");
    }
}

#[test]
fn eval_names_both_shapes_when_data_and_model_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    assert!(cli(&["zoo", "resnet20", "-o", s(&model)]).status.success());
    let mnist = format!(
        "mnist:{}",
        common::repo().join("../shared/data/mnist").display()
    );
    let out = cli(&["eval", s(&model), "--data", &mnist, "--engine", "tract"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1×28×28") && err.contains("3×32×32"), "{err}");
    // And a matching synthetic set evaluates, reporting engine, provider and speed.
    let ok = cli(&[
        "eval",
        s(&model),
        "--data",
        "synthetic:64:3x32x32:10",
        "--batch",
        "16",
        "--engine",
        "tract",
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("64 images") && text.contains("top-1") && text.contains("images/s"),
        "{text}"
    );
    assert!(text.contains("tract (CPU)"), "{text}");
}
