//! The ONNX Runtime engine: agrees with tract on every zoo family (original and rewritten), reports the execution
//! provider it measured, and fails with the reason when CUDA cannot be used.
//!
//! The library comes from `scripts/setup-ort.sh` (`.ort/`, which `scripts/test.sh` fills). Without it these tests
//! fail under CI and print a skip note locally.

mod common;

use rl_passes::analysis::units::UnitKind;
use rl_passes::onnx::ModelProto;
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_rewrite::engine::ort::{self as ortengine, OrtEngine, OrtSessionBuilder};
use rl_rewrite::engine::tract::TractEngine;
use rl_rewrite::engine::{Device, Engine};
use rl_rewrite::inputs::{input_facts, random_inputs};

/// Whether ONNX Runtime can be used here. Under CI a missing library is a failure, never a skip; a library that is
/// found but does not load is always a failure.
fn ort_ready() -> bool {
    match ortengine::find_library() {
        Ok(_) => {
            if let Err(e) = ortengine::loaded_library() {
                panic!("{e}");
            }
            true
        }
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the ONNX Runtime engine tests: {e}")
        }
        Err(e) => {
            eprintln!("note: skipping the ONNX Runtime engine test: {e}");
            false
        }
    }
}

fn cpu(model: &ModelProto) -> OrtEngine {
    OrtEngine::new(model, Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

/// Max abs difference between ORT (CPU) and tract on seeded inputs, checking names and shapes on the way.
fn ort_vs_tract(label: &str, model: &ModelProto, batch: usize) -> f64 {
    let facts = input_facts(model, batch).unwrap();
    let inputs = random_inputs(&facts, 7);
    let tract = TractEngine::new(model, &facts).unwrap_or_else(|e| panic!("{label}: {e}"));
    let ort = cpu(model);
    assert!(
        ort.provider().starts_with("CPUExecutionProvider ("),
        "{label}: {}",
        ort.provider()
    );
    let expected = tract.run(&inputs).unwrap();
    let actual = ort.run(&inputs).unwrap_or_else(|e| panic!("{label}: {e}"));
    // ORT names outputs by the graph's output values (tract's engine by their producing nodes).
    let graph_outputs: Vec<&str> = model
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name())
        .collect();
    let names: Vec<&str> = actual.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, graph_outputs, "{label}: output names");
    assert_eq!(expected.len(), actual.len(), "{label}: output count");
    let mut diff = 0f64;
    for ((en, e), (_, a)) in expected.iter().zip(&actual) {
        let d = e
            .max_abs_diff(a)
            .unwrap_or_else(|| panic!("{label}: '{en}' shapes {:?} vs {:?}", e.shape, a.shape));
        assert!(d.is_finite(), "{label}: '{en}' differs by {d}");
        diff = diff.max(d);
    }
    // A second run gives the same result (profiling ended after the warm-up; the session is reused).
    let again = ort.run(&inputs).unwrap();
    assert_eq!(again, actual, "{label}: a second run differs");
    println!(
        "{label}: ORT {} vs tract: max |diff| = {diff:.2e}",
        ort.provider()
    );
    diff
}

fn family(name: &str, image_size: Option<usize>, classes: Option<usize>, unit: UnitKind) {
    if !ort_ready() {
        return;
    }
    let model = common::zoo(name, image_size, classes);
    let opts = RewriteOptions {
        unit,
        ..RewriteOptions::default()
    };
    let rewritten = rewrite(model.clone(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!rewritten.plan.frozen.is_empty(), "{name}: nothing frozen");
    for (label, m) in [("original", &model), ("rewritten", &rewritten.model)] {
        let d = ort_vs_tract(&format!("{name} {label}"), m, 2);
        assert!(d <= 1e-4, "{name} {label}: ORT and tract differ by {d}");
    }
}

#[test]
fn resnet20_agrees_with_tract() {
    family("resnet20", None, None, UnitKind::Block);
}

#[test]
fn resnet18_agrees_with_tract() {
    // Two blocks per stage: with block units (the default) nothing can be frozen, so layers are the units.
    family("resnet18", Some(64), Some(10), UnitKind::Layer);
}

#[test]
fn resnet50_agrees_with_tract() {
    family("resnet50", Some(64), Some(10), UnitKind::Block);
}

#[test]
fn vit_ti_agrees_with_tract() {
    family("vit-ti", Some(32), Some(10), UnitKind::Block);
}

fn node_count(model: &ModelProto) -> (usize, usize) {
    let nodes = &model.graph.as_ref().unwrap().node;
    let constants = nodes.iter().filter(|n| n.op_type() == "Constant").count();
    (nodes.len(), constants)
}

/// Without ORT's graph optimizations every node runs as one kernel, so the measured placement adds up to the model's
/// nodes (ORT turns Constant nodes into initializers when it loads a model; they never run). With them, ORT counts
/// the nodes of its optimized graph (BatchNorm folded into Conv, Conv+Relu fused, the rewrite's constant
/// integration subgraphs folded away): fewer, and never more.
#[test]
fn provider_counts_add_up_to_the_models_nodes() {
    if !ort_ready() {
        return;
    }
    let model = common::zoo("resnet20", None, None);
    let rewritten = rewrite(model.clone(), &RewriteOptions::default()).unwrap();
    for (label, m) in [("original", &model), ("rewritten", &rewritten.model)] {
        let (nodes, constants) = node_count(m);
        let plain = OrtEngine::with_builder(
            m,
            OrtSessionBuilder::new(Device::Cpu)
                .optimize(false)
                .intra_threads(Some(1)),
        )
        .unwrap();
        let counted: usize = plain.placement().iter().map(|(_, n)| n).sum();
        assert_eq!(
            plain.placement(),
            &[("CPUExecutionProvider".to_owned(), nodes - constants)],
            "{label}: {nodes} nodes, {constants} Constant"
        );
        assert_eq!(
            plain.provider(),
            format!("CPUExecutionProvider ({counted} nodes)")
        );
        let optimized = cpu(m);
        let fused: usize = optimized.placement().iter().map(|(_, n)| n).sum();
        assert!(
            fused > 0 && fused < counted,
            "{label}: {fused} optimized vs {counted}"
        );
        println!(
            "resnet20 {label}: {nodes} nodes ({constants} Constant); ORT ran {counted} unoptimized, {fused} optimized"
        );
    }
}

#[test]
fn profile_events_are_counted_per_provider() {
    let profile = r#"[
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "conv_fence_before", "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "conv_kernel_time", "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
        {"cat": "Node", "name": "conv_fence_after", "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "shape_kernel_time", "args": {"op_name": "Shape", "provider": "CPUExecutionProvider"}},
        {"cat": "Node", "name": "relu_kernel_time", "args": {"op_name": "Relu", "provider": "CUDAExecutionProvider"}}
    ]"#;
    assert_eq!(
        ortengine::placement_from_profile(profile).unwrap(),
        vec![
            ("CUDAExecutionProvider".to_owned(), 2),
            ("CPUExecutionProvider".to_owned(), 1)
        ]
    );
    assert!(ortengine::placement_from_profile("[]").is_err());
    assert!(ortengine::placement_from_profile("{").is_err());
}

#[test]
fn cuda_is_used_or_fails_with_the_reason() {
    if !ort_ready() {
        return;
    }
    let model = common::zoo("resnet20", None, None);
    let cuda_compiled = ortengine::cuda_compiled().unwrap();
    match OrtEngine::new(&model, Device::Cuda) {
        Ok(engine) => {
            assert!(cuda_compiled);
            assert_eq!(engine.device(), Device::Cuda);
            assert!(
                engine.provider().starts_with("CUDAExecutionProvider"),
                "{}",
                engine.provider()
            );
            println!("CUDA: {}", engine.provider());
        }
        Err(e) => {
            let message = e.to_string();
            println!("{message}");
            assert!(message.contains("CUDA was requested"), "{message}");
            if !cuda_compiled {
                assert!(
                    message.contains("not compiled into")
                        && message.contains("CPU-only build")
                        && message.contains("scripts/setup-ort.sh --gpu"),
                    "{message}"
                );
            } else {
                assert!(message.contains("CUDA execution provider"), "{message}");
            }
        }
    }
}

/// `auto` runs on CUDA where the library has its provider and a GPU answers, and on the CPU otherwise; a CPU-only
/// build always runs on the CPU.
#[test]
fn auto_runs_where_the_build_and_the_machine_allow() {
    if !ort_ready() {
        return;
    }
    let model = common::zoo("resnet20", None, None);
    let engine = OrtEngine::new(&model, Device::Auto).unwrap();
    let provider = engine.provider();
    match engine.device() {
        Device::Cuda => {
            assert!(ortengine::cuda_compiled().unwrap());
            assert!(
                provider.starts_with("CUDAExecutionProvider ("),
                "{provider}"
            );
        }
        Device::Cpu => assert!(provider.starts_with("CPUExecutionProvider ("), "{provider}"),
        Device::Auto => panic!("a built engine names the device it runs on"),
    }
    if !ortengine::cuda_compiled().unwrap() {
        assert_eq!(engine.device(), Device::Cpu);
    }
    let facts = input_facts(&model, 1).unwrap();
    let out = engine.run(&random_inputs(&facts, 1)).unwrap();
    assert_eq!(out[0].1.shape, vec![1, 10]);
}

/// `rl-rewrite run MODEL --engine ort` with the given environment.
fn run_with_env(model: &std::path::Path, envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rl-rewrite"));
    cmd.args([
        "run",
        model.to_str().unwrap(),
        "--engine",
        "ort",
        "--device",
        "cpu",
    ]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn library_errors_name_the_path_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    rl_passes::io::save_model(
        &common::zoo("resnet20", None, None),
        &model,
        &Default::default(),
    )
    .unwrap();
    let missing = dir.path().join("nowhere/libonnxruntime.so");
    let stderr = run_with_env(&model, &[("ORT_DYLIB_PATH", missing.to_str().unwrap())]);
    assert!(
        stderr.contains(&format!(
            "onnxruntime could not prepare the model: ORT_DYLIB_PATH is `{}`, which is not a file",
            missing.display()
        )),
        "{stderr}"
    );

    let bogus = dir.path().join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a library").unwrap();
    let stderr = run_with_env(&model, &[("ORT_DYLIB_PATH", bogus.to_str().unwrap())]);
    assert!(
        stderr.contains(&format!(
            "could not load the ONNX Runtime library `{}`",
            bogus.display()
        )) && stderr.contains("dlopen failed: ")
            && stderr.contains("scripts/setup-ort.sh"),
        "{stderr}"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stderr = run_with_env(
        &model,
        &[
            ("ORT_DYLIB_PATH", ""),
            ("RL_ORT_DIR", empty.to_str().unwrap()),
        ],
    );
    assert!(
        stderr.contains("holds no onnxruntime library") && stderr.contains("scripts/setup-ort.sh"),
        "{stderr}"
    );
}
