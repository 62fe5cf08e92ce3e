//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod train_run;

use std::path::{Path, PathBuf};

use rl_passes::onnx::ModelProto;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// A zoo model with its default options, overridden where given.
pub fn zoo(name: &str, image_size: Option<usize>, classes: Option<usize>) -> ModelProto {
    let mut opts = rl_models::ZooOptions::for_model(name).unwrap();
    opts.image_size = image_size.unwrap_or(opts.image_size);
    opts.classes = classes.unwrap_or(opts.classes);
    rl_models::build(name, &opts).unwrap()
}

/// Compares `actual` with the golden file; `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it, then review it",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\nif the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// The Python interpreter with `onnx` and `onnxruntime` (scripts/requirements-test.txt), from `RL_PYTHON`.
/// Under CI a missing interpreter is a failure, never a skip.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("RL_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!("RL_PYTHON is not set: CI must run the ONNX checker and ONNX Runtime checks (see scripts/test.sh)"),
        None => {
            eprintln!("note: RL_PYTHON not set; skipping the onnx.checker / ONNX Runtime check (scripts/test.sh sets it)");
            None
        }
    }
}

/// Runs `scripts/onnx_check.py` (onnx.checker full check + an ONNX Runtime CPU run) on the models.
pub fn onnx_check(models: &[&Path]) {
    let Some(py) = python() else { return };
    let out = std::process::Command::new(py)
        .arg(repo().join("scripts/onnx_check.py"))
        .args(models)
        .output()
        .expect("the Python interpreter in RL_PYTHON runs");
    assert!(
        out.status.success(),
        "onnx_check.py failed on {models:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether libonnxruntime can be found. Under CI a missing library is a failure, never a skip.
pub fn ort_available() -> bool {
    match rl_rewrite::engine::ort::find_library() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => panic!("ONNX Runtime is required in CI: {e}"),
        Err(e) => {
            eprintln!("note: skipping the ONNX Runtime part: {e}");
            false
        }
    }
}
