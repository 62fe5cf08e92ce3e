//! Same input, same options → same bytes: the rewritten model and its plan JSON do not depend on the process
//! (hash seeds, thread timing, file names), and `zoo` builds the same model for the same seed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Runs rl-rewrite in `cwd` and asserts success.
fn rl(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the rl-rewrite binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rl-rewrite {args:?} failed ({:?}):\n{stderr}",
        out.status.code()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (read(a), read(b));
    assert!(!x.is_empty(), "{} is empty", a.display());
    if x != y {
        let first = x.iter().zip(&y).position(|(p, q)| p != q);
        panic!(
            "{} ({} bytes) and {} ({} bytes) differ (first difference at byte {first:?})",
            a.display(),
            x.len(),
            b.display(),
            y.len()
        );
    }
}

/// Rewrites `model` in `runs` separate processes, each into its own folder, and asserts that all outputs and
/// plan JSON files are byte-identical. Returns the first output and plan.
fn rewrite_repeatedly(
    work: &Path,
    model: &Path,
    options: &[&str],
    runs: usize,
) -> (PathBuf, PathBuf) {
    let mut results: Vec<(PathBuf, PathBuf)> = Vec::new();
    for run in 0..runs {
        let dir = work.join(format!("run{run}"));
        std::fs::create_dir(&dir).unwrap();
        let out = dir.join("out.rl.onnx");
        let plan = dir.join("plan.json");
        let mut args = vec![s(model)];
        args.extend_from_slice(options);
        args.extend_from_slice(&["-o", s(&out), "--plan-json", s(&plan)]);
        rl(&args, &dir);
        results.push((out, plan));
    }
    let (first_out, first_plan) = results[0].clone();
    for (out, plan) in &results[1..] {
        assert_same_bytes(&first_out, out);
        assert_same_bytes(&first_plan, plan);
    }
    assert_ne!(
        read(&first_out),
        read(model),
        "the rewrite should change the model"
    );
    (first_out, first_plan)
}

/// The plan JSON file is the plan stored in the model's metadata.
fn assert_plan_matches_metadata(out: &Path, plan: &Path) {
    use prost::Message;
    let m = rl_passes::onnx::ModelProto::decode(read(out).as_slice()).expect("output decodes");
    let stored = m
        .metadata_props
        .iter()
        .find(|e| e.key() == rl_passes::contract::PLAN_KEY)
        .expect("the output carries its plan");
    let file = String::from_utf8(read(plan)).expect("plan JSON is UTF-8");
    let a: serde_json::Value = serde_json::from_str(stored.value()).expect("stored plan is JSON");
    let b: serde_json::Value = serde_json::from_str(&file).expect("plan file is JSON");
    assert_eq!(a, b, "plan file and metadata plan differ");
    assert!(
        !b["frozen"]
            .as_array()
            .expect("plan lists frozen units")
            .is_empty(),
        "the plan freezes something"
    );
}

#[test]
fn block_rewrite_is_deterministic_across_processes() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("resnet20.onnx");
    rl(&["zoo", "resnet20", "-o", s(&model)], work.path());
    let (out, plan) = rewrite_repeatedly(work.path(), &model, &["--every", "2"], 3);
    assert_plan_matches_metadata(&out, &plan);
}

#[test]
fn block_rewrite_with_options_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("resnet32.onnx");
    rl(&["zoo", "resnet32", "-o", s(&model)], work.path());
    rewrite_repeatedly(
        work.path(),
        &model,
        &[
            "--every", "2", "--offset", "1", "--init-a", "0.25", "--init-b", "-0.75",
        ],
        2,
    );
}

#[test]
fn layer_rewrite_of_resnet18_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("resnet18.onnx");
    rl(
        &[
            "zoo",
            "resnet18",
            "--image-size",
            "64",
            "--classes",
            "10",
            "-o",
            s(&model),
        ],
        work.path(),
    );
    let (out, plan) =
        rewrite_repeatedly(work.path(), &model, &["--unit", "layer", "--every", "2"], 2);
    assert_plan_matches_metadata(&out, &plan);
}

#[test]
fn zoo_is_deterministic_for_a_seed() {
    let work = tempfile::tempdir().unwrap();
    let build = |name: &str, extra: &[&str]| {
        let path = work.path().join(name);
        let mut args = vec!["zoo"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", s(&path)]);
        rl(&args, work.path());
        path
    };
    let r20 = ["resnet20", "--seed", "7"];
    assert_same_bytes(&build("a.onnx", &r20), &build("b.onnx", &r20));
    let r18 = [
        "resnet18",
        "--image-size",
        "64",
        "--classes",
        "10",
        "--seed",
        "3",
    ];
    assert_same_bytes(&build("c.onnx", &r18), &build("d.onnx", &r18));
    // The seed matters: a different seed gives different weights.
    let other = build("e.onnx", &["resnet20", "--seed", "8"]);
    assert_ne!(read(&work.path().join("a.onnx")), read(&other));
}
