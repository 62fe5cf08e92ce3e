//! The main job of the README (`rl-rewrite demo`) runs to the end and finds the rewrite exact.

use std::process::Command;

#[test]
fn demo_builds_rewrites_diffs_and_checks_equivalence() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(["demo", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "== 1.",
        "== 2.",
        "== 3.",
        "== 4.",
        "== 5.",
        "froze 4 units",
        "\"params_after\"",
        "op histogram: Add +24, Mul +48",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains("OK: equivalent within 1e-5"), "{stdout}");
    for file in ["resnet32.onnx", "resnet32.rl.onnx", "resnet32.plan.json"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
}
