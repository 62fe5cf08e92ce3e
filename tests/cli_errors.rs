//! The CLI on bad input: every error exits with status 2, prints `error: …` naming the file, node or value at
//! fault and what to do about it, never panics, and leaves no output file (and no temporary file) behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use rl_passes::onnx::{
    tensor_proto::DataLocation, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
};
use rl_passes::testing::{f32_tensor, node, untyped_value, ModelBuilder, NodeExt};

// ---------------------------------------------------------------------------------------------------------
// helpers

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn rl(args: &[&str], cwd: &Path) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_rl-rewrite"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the rl-rewrite binary runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Asserts a clean failure: exit status 2, an `error:` line, no panic, and every `needles` substring in stderr.
fn assert_error(run: &Run, needles: &[&str]) {
    assert_ne!(
        run.code,
        Some(0),
        "expected a failure; stdout:\n{}",
        run.stdout
    );
    assert_eq!(
        run.code,
        Some(2),
        "errors exit with status 2; stderr:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "the binary panicked:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.starts_with("error: "),
        "stderr should start with 'error: ':\n{}",
        run.stderr
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr should mention {needle:?}:\n{}",
            run.stderr
        );
    }
}

/// The names of the entries of `dir`.
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read the test folder")
        .map(|e| {
            e.expect("folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Asserts that `dir` holds exactly `expected` (so no output, no `.tmp*` file was left behind).
fn assert_only(dir: &Path, expected: &[&str]) {
    let found = entries(dir);
    let expected: BTreeSet<String> = expected.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        found,
        expected,
        "{} should hold only the inputs (no output, no temporary file)",
        dir.display()
    );
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary folder")
}

/// Builds `zoo resnet20` into `dir/name`.
fn zoo_resnet20(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let run = rl(&["zoo", "resnet20", "-o", s(&path)], dir);
    assert_eq!(run.code, Some(0), "zoo resnet20 failed:\n{}", run.stderr);
    path
}

/// A model reading graph input `x` and producing graph output `y` (both untyped).
fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ModelProto {
    ModelBuilder::new("g")
        .producer("cli_errors test")
        .nodes(nodes)
        .initializers(initializers)
        .input_value(untyped_value("x"))
        .output_value(untyped_value("y"))
        .build()
}

fn write_model(path: &Path, m: &ModelProto) {
    std::fs::write(path, m.encode_to_vec()).expect("write the test model");
}

/// Runs `rl-rewrite MODEL --every 2 -o OUT --plan-json PLAN` in the model's folder and checks the failure:
/// status 2, the model's path and every needle in stderr, and nothing written beside the inputs.
fn assert_rewrite_fails(dir: &Path, model_name: &str, inputs: &[&str], needles: &[&str]) {
    let model = dir.join(model_name);
    let out = dir.join("out.onnx");
    let plan = dir.join("plan.json");
    let run = rl(
        &[
            s(&model),
            "--every",
            "2",
            "-o",
            s(&out),
            "--plan-json",
            s(&plan),
        ],
        dir,
    );
    let mut all = vec![s(&model)];
    all.extend_from_slice(needles);
    assert_error(&run, &all);
    assert_only(dir, inputs);
}

/// An initializer stored externally at `location`.
fn external_tensor(name: &str, location: &str) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![1],
        data_type: Some(1),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            StringStringEntryProto::new("location", location),
            StringStringEntryProto::new("offset", "0"),
            StringStringEntryProto::new("length", "4"),
        ],
        ..Default::default()
    }
}

fn external_model(location: &str) -> ModelProto {
    model(
        vec![node("Mul", &["x", "w"], &["y"]).named("scale")],
        vec![external_tensor("w", location)],
    )
}

// ---------------------------------------------------------------------------------------------------------
// 1–3: files that are not ONNX models

#[test]
fn not_onnx_text_file() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("notes.onnx"),
        "this is a text file, not an ONNX model\n",
    )
    .unwrap();
    assert_rewrite_fails(
        dir.path(),
        "notes.onnx",
        &["notes.onnx"],
        &["not", "ONNX model"],
    );
}

#[test]
fn truncated_model() {
    let dir = tempdir();
    let full = zoo_resnet20(dir.path(), "full.onnx");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(dir.path().join("half.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(&full).unwrap();
    assert_rewrite_fails(
        dir.path(),
        "half.onnx",
        &["half.onnx"],
        &["not a valid ONNX model", "truncated"],
    );
}

#[test]
fn empty_file() {
    let dir = tempdir();
    std::fs::write(dir.path().join("empty.onnx"), b"").unwrap();
    assert_rewrite_fails(
        dir.path(),
        "empty.onnx",
        &["empty.onnx"],
        &["is empty", "expected an ONNX model"],
    );
}

#[test]
fn missing_model_file() {
    let dir = tempdir();
    assert_rewrite_fails(dir.path(), "absent.onnx", &[], &["cannot read"]);
}

// ---------------------------------------------------------------------------------------------------------
// 4–6: malformed graphs

#[test]
fn cyclic_graph() {
    let dir = tempdir();
    // `a` reads `u`, which `b` computes from `a`'s output: the two nodes feed each other.
    let m = model(
        vec![
            node("Add", &["x", "u"], &["t"]).named("a"),
            node("Relu", &["t"], &["u"]).named("b"),
            node("Relu", &["t"], &["y"]).named("c"),
        ],
        vec![],
    );
    write_model(&dir.path().join("cycle.onnx"), &m);
    assert_rewrite_fails(
        dir.path(),
        "cycle.onnx",
        &["cycle.onnx"],
        &["cycle", "must be acyclic"],
    );
    let run = rl(
        &[s(&dir.path().join("cycle.onnx")), "--every", "2"],
        dir.path(),
    );
    assert!(
        run.stderr.contains("'a' (Add)") || run.stderr.contains("'b' (Relu)"),
        "the cycle error should name a node of the cycle:\n{}",
        run.stderr
    );
    assert_only(dir.path(), &["cycle.onnx"]);
}

#[test]
fn input_that_nothing_produces() {
    let dir = tempdir();
    let m = model(
        vec![
            node("Relu", &["x"], &["t"]).named("first"),
            node("Add", &["t", "ghost"], &["y"]).named("joiner"),
        ],
        vec![],
    );
    write_model(&dir.path().join("dangling.onnx"), &m);
    assert_rewrite_fails(
        dir.path(),
        "dangling.onnx",
        &["dangling.onnx"],
        &[
            "'joiner' (Add)",
            "'ghost'",
            "no node, initializer or graph input produces",
        ],
    );
}

#[test]
fn duplicate_output_names() {
    let dir = tempdir();
    let m = model(
        vec![
            node("Relu", &["x"], &["t"]).named("left"),
            node("Sigmoid", &["x"], &["t"]).named("right"),
            node("Add", &["t", "t"], &["y"]).named("sum"),
        ],
        vec![],
    );
    write_model(&dir.path().join("dup.onnx"), &m);
    assert_rewrite_fails(
        dir.path(),
        "dup.onnx",
        &["dup.onnx"],
        &[
            "'t' is produced twice",
            "'left' (Relu)",
            "'right' (Sigmoid)",
            "exactly one producer",
        ],
    );
}

// ---------------------------------------------------------------------------------------------------------
// 7–10: bad tensors

#[test]
fn unknown_initializer_data_type() {
    let dir = tempdir();
    let mut w = f32_tensor("weird_weight", &[1], &[2.0]);
    w.data_type = Some(99);
    let m = model(
        vec![node("Mul", &["x", "weird_weight"], &["y"]).named("scale")],
        vec![w],
    );
    write_model(&dir.path().join("dtype.onnx"), &m);
    assert_rewrite_fails(
        dir.path(),
        "dtype.onnx",
        &["dtype.onnx"],
        &["'weird_weight'", "unknown data type 99"],
    );
}

#[test]
fn missing_external_data_file() {
    let dir = tempdir();
    write_model(&dir.path().join("ext.onnx"), &external_model("weights.bin"));
    assert_rewrite_fails(
        dir.path(),
        "ext.onnx",
        &["ext.onnx"],
        &[
            "external data file",
            "weights.bin",
            "tensor 'w'",
            "cannot be read",
        ],
    );
}

#[test]
fn external_location_with_parent_dir() {
    let root = tempdir();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    // The file exists, so only the location check can reject it.
    std::fs::write(root.path().join("x.bin"), [0u8; 4]).unwrap();
    write_model(&dir.join("ext.onnx"), &external_model("../x.bin"));
    assert_rewrite_fails(
        &dir,
        "ext.onnx",
        &["ext.onnx"],
        &[
            "tensor 'w'",
            "'../x.bin'",
            "escapes",
            "relative path inside",
        ],
    );
    assert_eq!(
        entries(root.path()),
        ["model", "x.bin"].iter().map(|e| e.to_string()).collect()
    );
}

#[test]
fn external_location_absolute() {
    let dir = tempdir();
    write_model(&dir.path().join("ext.onnx"), &external_model("/etc/passwd"));
    assert_rewrite_fails(
        dir.path(),
        "ext.onnx",
        &["ext.onnx"],
        &[
            "tensor 'w'",
            "'/etc/passwd'",
            "absolute",
            "relative path inside",
        ],
    );
}

// ---------------------------------------------------------------------------------------------------------
// 11–12: options that cannot work

#[test]
fn every_below_two() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let out = dir.path().join("out.onnx");
    for every in ["0", "1"] {
        for dry in [false, true] {
            let mut args = vec![s(&m), "--every", every, "-o", s(&out)];
            if dry {
                args.push("--dry-run");
            }
            let run = rl(&args, dir.path());
            assert_error(
                &run,
                &[
                    s(&m),
                    "--every must be at least 2",
                    &format!("(got {every})"),
                ],
            );
            assert_only(dir.path(), &["m.onnx"]);
        }
    }
}

#[test]
fn nothing_freezable_resnet_with_large_offset() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let out = dir.path().join("out.onnx");
    let run = rl(
        &[s(&m), "--every", "4", "--offset", "10", "-o", s(&out)],
        dir.path(),
    );
    assert_error(
        &run,
        &[
            s(&m),
            "nothing to freeze",
            "offset 10, every 4",
            "--unit layer",
        ],
    );
    assert_only(dir.path(), &["m.onnx"]);
}

#[test]
fn huge_offset_and_every_do_not_overflow() {
    // offset + every past usize::MAX used to panic with "attempt to add with overflow" in plan.rs.
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let out = dir.path().join("out.onnx");
    let max = usize::MAX.to_string();
    for (every, offset) in [
        ("2", max.as_str()),
        (max.as_str(), "1"),
        (max.as_str(), max.as_str()),
    ] {
        for dry in [false, true] {
            let mut args = vec![s(&m), "--every", every, "--offset", offset, "-o", s(&out)];
            if dry {
                args.push("--dry-run");
            }
            let run = rl(&args, dir.path());
            assert_error(
                &run,
                &[
                    s(&m),
                    "nothing to freeze",
                    &format!("offset {offset}, every {every}"),
                ],
            );
            assert_only(dir.path(), &["m.onnx"]);
        }
    }
}

#[test]
fn nothing_freezable_tiny_model() {
    let dir = tempdir();
    let m = model(
        vec![
            node("Relu", &["x"], &["t"]).named("r1"),
            node("Relu", &["t"], &["y"]).named("r2"),
        ],
        vec![],
    );
    write_model(&dir.path().join("tiny.onnx"), &m);
    assert_rewrite_fails(
        dir.path(),
        "tiny.onnx",
        &["tiny.onnx"],
        &[
            "nothing to freeze",
            "the longest stage has 2 equal units",
            "--unit layer",
        ],
    );
    // With `--unit layer` there is nothing either (no Conv/Gemm/MatMul); the message still says why.
    let m = dir.path().join("tiny.onnx");
    let run = rl(&[s(&m), "--every", "2", "--unit", "layer"], dir.path());
    assert_error(&run, &[s(&m), "nothing to freeze", "found 0 layer units"]);
    assert_only(dir.path(), &["tiny.onnx"]);
}

// ---------------------------------------------------------------------------------------------------------
// 13: output that cannot be written

#[test]
fn output_folder_missing() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let out = dir.path().join("no-such-folder").join("out.onnx");
    let run = rl(&[s(&m), "--every", "2", "-o", s(&out)], dir.path());
    assert_error(
        &run,
        &[&format!("cannot write {}", s(&out)), "folder exists"],
    );
    assert_only(dir.path(), &["m.onnx"]);
}

#[test]
fn output_in_nonexistent_root_folder() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let run = rl(
        &[s(&m), "--every", "2", "-o", "/nonexistent-dir/out.onnx"],
        dir.path(),
    );
    assert_error(
        &run,
        &["cannot write /nonexistent-dir/out.onnx", "folder exists"],
    );
    assert!(!Path::new("/nonexistent-dir").exists());
    assert_only(dir.path(), &["m.onnx"]);
}

#[test]
fn output_parent_is_a_file() {
    // Fails even for root, unlike a read-only folder.
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let out = dir.path().join("m.onnx").join("out.onnx");
    let before = std::fs::read(&m).unwrap();
    let run = rl(&[s(&m), "--every", "2", "-o", s(&out)], dir.path());
    assert_error(&run, &[&format!("cannot write {}", s(&out)), "writable"]);
    assert_only(dir.path(), &["m.onnx"]);
    assert_eq!(
        std::fs::read(&m).unwrap(),
        before,
        "MODEL must be unchanged"
    );
}

#[cfg(unix)]
#[test]
fn output_folder_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "m.onnx");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root (CAP_DAC_OVERRIDE) writes into read-only folders anyway, so chmod proves nothing there: probe first
    // and skip this sub-case, loudly, when the folder is writable regardless of its mode.
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!(
            "SKIPPED output_folder_read_only: running with permission to write into a mode-0555 folder \
             (root?), so a read-only folder cannot be simulated; output_parent_is_a_file and \
             output_folder_missing cover unwritable outputs"
        );
        return;
    }
    let out = ro.join("out.onnx");
    let run = rl(&[s(&m), "--every", "2", "-o", s(&out)], dir.path());
    let left = entries(&ro);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_error(&run, &[&format!("cannot write {}", s(&out)), "writable"]);
    assert!(
        left.is_empty(),
        "files left in the read-only folder: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 14–15: where output goes, and when none is written

#[test]
fn default_output_is_beside_model_and_model_is_unchanged() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "net.onnx");
    let before = std::fs::read(&m).unwrap();
    // Run from another folder: the output must go beside MODEL, not into the working directory.
    let cwd = tempdir();
    let run = rl(&[s(&m), "--every", "2"], cwd.path());
    assert_eq!(run.code, Some(0), "rewrite failed:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
    let expected = dir.path().join("net.rl.onnx");
    assert!(
        run.stdout.contains(&format!("wrote {}", s(&expected))),
        "stdout should say where the model went:\n{}",
        run.stdout
    );
    assert_only(dir.path(), &["net.onnx", "net.rl.onnx"]);
    assert_only(cwd.path(), &[]);
    assert_eq!(
        std::fs::read(&m).unwrap(),
        before,
        "MODEL must be unchanged"
    );
    let written = ModelProto::decode(std::fs::read(&expected).unwrap().as_slice())
        .expect("the output is an ONNX model");
    assert!(
        written
            .metadata_props
            .iter()
            .any(|e| e.key() == rl_passes::contract::PLAN_KEY),
        "the output carries its plan"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempdir();
    let m = zoo_resnet20(dir.path(), "net.onnx");
    let before = std::fs::read(&m).unwrap();
    let out = dir.path().join("out.onnx");
    for args in [
        vec![s(&m), "--every", "2", "--dry-run"],
        vec![s(&m), "--every", "2", "--dry-run", "-o", s(&out)],
    ] {
        let run = rl(&args, dir.path());
        assert_eq!(run.code, Some(0), "dry run failed:\n{}", run.stderr);
        assert!(!run.stderr.contains("panicked"));
        assert!(
            run.stdout.contains("dry run: nothing written"),
            "stdout:\n{}",
            run.stdout
        );
        assert_only(dir.path(), &["net.onnx"]);
        assert_eq!(
            std::fs::read(&m).unwrap(),
            before,
            "MODEL must be unchanged"
        );
    }
}
