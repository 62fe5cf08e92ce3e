//! Training-step models of small zoo networks (a resnet with BatchNormalization, BP and rewritten with
//! `every 2`, with and without `detach_neighbours`; a ViT with LayerNormalization and Erf-GELU) pass onnx.checker
//! (full check) and run on ONNX Runtime CPU and tract with equal results (≤ 1e-5) for `loss`, `correct` and
//! every `x.next`. ONNX Runtime is driven through the `ort` crate directly, because the step model takes int64
//! labels (the engine trait carries float32 tensors only).

mod common;

use std::collections::HashMap;

use prost::Message;
use rl_models::{build_custom_resnet_cifar, build_custom_vit, ZooOptions};
use rl_passes::onnx::{tensor_proto::DataType, ModelProto, TensorProto};
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_passes::training::{compile_train, TrainOptions, TrainingModels};
use tract_onnx::prelude::*;

const OPTS: ZooOptions = ZooOptions {
    classes: 3,
    image_size: 8,
    channels: 3,
    seed: 1,
};

fn f32_values(t: &TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type(), DataType::Float as i32, "{}", t.name());
    if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        t.float_data.clone()
    }
}

/// Float inputs by name: (name, shape, values).
type Floats = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Float feeds of the step model (initial values, a batch, lr) and its labels.
fn feeds(m: &TrainingModels) -> (Floats, Vec<i64>) {
    let g = m.step.graph.as_ref().unwrap();
    let n = m.manifest.batch_size;
    let initial: HashMap<&str, &TensorProto> = m.initial.iter().map(|t| (t.name(), t)).collect();
    let mut out = Vec::new();
    let mut state = 0x9e3779b97f4a7c15u64;
    for i in &g.input {
        let name = i.name();
        if name == m.manifest.labels {
            continue;
        }
        let shape: Vec<usize> = match &i.r#type.as_ref().unwrap().value {
            Some(rl_passes::onnx::type_proto::Value::TensorType(tt)) => tt
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(rl_passes::onnx::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                        v as usize
                    }
                    _ => panic!("static"),
                })
                .collect(),
            _ => panic!("tensor"),
        };
        let values = if name == m.manifest.lr {
            vec![0.1]
        } else if name == m.manifest.input {
            (0..shape.iter().product::<usize>())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        } else {
            f32_values(initial[name])
        };
        out.push((name.to_owned(), shape, values));
    }
    let labels = (0..n).map(|i| ((i * 7 + 1) % 3) as i64).collect();
    (out, labels)
}

fn run_tract(
    step: &ModelProto,
    floats: &[(String, Vec<usize>, Vec<f32>)],
    labels: &[i64],
    label_name: &str,
) -> HashMap<String, Vec<f64>> {
    use rl_rewrite::engine::tract::TractModel;
    use rl_rewrite::engine::{ElementType, InputFact};
    let g = step.graph.as_ref().unwrap();
    let mut facts = Vec::new();
    let mut values: HashMap<&str, TValue> = HashMap::new();
    for i in &g.input {
        let (t, element_type) = if i.name() == label_name {
            (
                Tensor::from_shape(&[labels.len()], labels).unwrap(),
                ElementType::I64,
            )
        } else {
            let (_, s, v) = floats.iter().find(|(n, ..)| n == i.name()).unwrap();
            (Tensor::from_shape(s, v).unwrap(), ElementType::F32)
        };
        facts.push(InputFact {
            name: i.name().to_owned(),
            element_type,
            shape: t.shape().to_vec(),
        });
        values.insert(i.name(), t.into_tvalue());
    }
    // The engine's one preparation (the ViT's trained `conv_proj.bias` needs its node renaming).
    let model = TractModel::prepare(step, &facts).unwrap();
    let ins: TVec<TValue> = model
        .inputs()
        .iter()
        .map(|n| values[n.as_str()].clone())
        .collect();
    let outs = model.run(ins).unwrap();
    g.output
        .iter()
        .zip(outs.iter())
        .map(|(o, t)| {
            let t = t.cast_to::<f64>().unwrap();
            let v = t
                .to_plain_array_view::<f64>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            (o.name().to_owned(), v)
        })
        .collect()
}

fn run_ort(
    step: &ModelProto,
    floats: &[(String, Vec<usize>, Vec<f32>)],
    labels: &[i64],
    label_name: &str,
) -> HashMap<String, Vec<f64>> {
    use ort::session::SessionInputValue;
    use ort::value::TensorRef;
    let mut session =
        rl_rewrite::engine::ort::OrtSessionBuilder::new(rl_rewrite::engine::Device::Cpu)
            .own_kernels(true)
            .build(step)
            .unwrap()
            .session;
    let g = step.graph.as_ref().unwrap();
    let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::new();
    let label_shape = [labels.len()];
    for i in &g.input {
        let v: SessionInputValue<'_> = if i.name() == label_name {
            TensorRef::from_array_view((&label_shape[..], labels))
                .unwrap()
                .into()
        } else {
            let (_, s, v) = floats.iter().find(|(n, ..)| n == i.name()).unwrap();
            TensorRef::from_array_view((s.as_slice(), v.as_slice()))
                .unwrap()
                .into()
        };
        values.push((i.name(), v));
    }
    let outputs = session.run(values).unwrap();
    g.output
        .iter()
        .map(|o| {
            let v = &outputs[o.name()];
            let data: Vec<f64> = match v.try_extract_tensor::<f32>() {
                Ok((_, d)) => d.iter().map(|&x| x as f64).collect(),
                Err(_) => {
                    let (_, d) = v.try_extract_tensor::<i64>().unwrap();
                    d.iter().map(|&x| x as f64).collect()
                }
            };
            (o.name().to_owned(), data)
        })
        .collect()
}

/// The largest relative difference (to max(1, |x|, |y|)) between two runs' outputs, asserted ≤ 1e-5.
fn compare(
    name: &str,
    step: &ModelProto,
    a: &HashMap<String, Vec<f64>>,
    b: &HashMap<String, Vec<f64>>,
) -> f64 {
    let mut worst = 0.0f64;
    let g = step.graph.as_ref().unwrap();
    assert!(g.output.len() > 2);
    for out in &g.output {
        let (a, b) = (&a[out.name()], &b[out.name()]);
        assert_eq!(a.len(), b.len(), "{name}: {}", out.name());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            let d = (x - y).abs() / 1f64.max(x.abs()).max(y.abs());
            assert!(d <= 1e-5, "{name}: {}[{k}]: {x} vs {y}", out.name());
            worst = worst.max(d);
        }
    }
    worst
}

/// The training models of `model` for batches of `batch_size`, default optimizer.
fn compiled(model: &ModelProto, batch_size: usize, detach_neighbours: bool) -> TrainingModels {
    compile_train(
        model,
        &TrainOptions {
            batch_size,
            detach_neighbours,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Compiles, checks (onnx.checker full) and runs one step on ORT CPU and tract; returns the worst difference.
fn check(name: &str, model: &ModelProto, detach: bool) -> f64 {
    let m = compiled(model, 4, detach);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.onnx"));
    std::fs::write(&path, m.step.encode_to_vec()).unwrap();
    common::onnx_check(&[&path]);
    let (floats, labels) = feeds(&m);
    let t = run_tract(&m.step, &floats, &labels, &m.manifest.labels);
    if !common::ort_available() {
        return 0.0;
    }
    let o = run_ort(&m.step, &floats, &labels, &m.manifest.labels);
    let worst = compare(name, &m.step, &t, &o);
    eprintln!(
        "{name}: {} outputs, worst tract/ORT difference {worst:e}",
        m.step.graph.as_ref().unwrap().output.len()
    );
    worst
}

fn every2(m: ModelProto) -> ModelProto {
    let r = rewrite(m, &RewriteOptions::default()).unwrap();
    assert!(!r.plan.frozen.is_empty());
    r.model
}

#[test]
fn resnet_step_models_agree_on_ort_and_tract() {
    let m = build_custom_resnet_cifar(3, 4, &OPTS).unwrap();
    check("resnet_bp", &m, false);
    let r = every2(m);
    check("resnet_every2", &r, false);
    check("resnet_every2_detach", &r, true);
}

/// The CPU lowering (as `train` runs on the CPU: convolutions in ONNX Runtime's blocked layout, this crate's
/// weight-gradient and Relu-gradient kernels) gives the step tract computes, BP and every 2; the stages' 16, 32 and 64 channels are multiples of every NCHWc block size (8 or 16).
#[test]
fn cpu_lowered_step_models_agree_with_tract() {
    if !common::ort_available() {
        return;
    }
    let Some(block) = rl_rewrite::engine::ort::nchwc::block_size() else {
        #[cfg(target_arch = "x86_64")]
        assert!(
            !std::is_x86_feature_detected!("avx2"),
            "this CPU has AVX2, so ONNX Runtime should have NCHWc kernels"
        );
        return;
    };
    assert!(block == 8 || block == 16, "block size {block}");
    let m = build_custom_resnet_cifar(3, 16, &OPTS).unwrap();
    for (name, model) in [("bp", m.clone()), ("every2", every2(m))] {
        let t = compiled(&model, 4, false);
        let lowered = rl_rewrite::engine::ort::cpu::lower_for_cpu(&t.step)
            .unwrap()
            .expect("convolutions to lower");
        let g = lowered.graph.as_ref().unwrap();
        let blocked = g
            .node
            .iter()
            .filter(|n| {
                n.op_type() == "Conv" && n.domain() == rl_rewrite::engine::ort::nchwc::NCHWC_DOMAIN
            })
            .count();
        let plain = g
            .node
            .iter()
            .filter(|n| n.op_type() == "Conv" && n.domain().is_empty())
            .count();
        // Only the 3-channel stem (and its input gradient, never needed) stays im2col.
        assert!(
            blocked >= 20 && plain <= 1,
            "{name}: {blocked} blocked, {plain} plain convolutions"
        );
        // Every weight gradient but the stem's by this crate's kernel, where this CPU has its vector tile.
        let count = |op: &str| g.node.iter().filter(|n| n.op_type() == op).count();
        let own = count(rl_rewrite::engine::ort::ops::CONV_WEIGHT_GRAD);
        let im2col = g
            .node
            .iter()
            .filter(|n| {
                n.metadata_props
                    .iter()
                    .any(|p| p.key() == rl_passes::autodiff::rules::WEIGHT_GRAD_NOTE)
            })
            .count();
        // Every Relu's gradient is one fused kernel.
        let (relus, relu_grads) = (
            count("Relu"),
            count(rl_rewrite::engine::ort::ops::RELU_GRAD),
        );
        assert!(
            relus >= 7 && relu_grads == relus,
            "{name}: {relus} Relus, {relu_grads} fused Relu gradients"
        );
        if rl_rewrite::engine::ort::conv_weight_grad::fast_for(block) {
            assert!(
                own >= 18 && im2col <= 1,
                "{name}: {own} own weight-gradient kernels, {im2col} im2col ones left"
            );
        }
        let (floats, labels) = feeds(&t);
        let reference = run_tract(&t.step, &floats, &labels, &t.manifest.labels);
        let o = run_ort(&lowered, &floats, &labels, &t.manifest.labels);
        let worst = compare(name, &t.step, &reference, &o);
        // The kernels split their work over threads but sum in a fixed order: runs agree bit for bit.
        let again = run_ort(&lowered, &floats, &labels, &t.manifest.labels);
        assert!(o == again, "{name}: two runs of the lowered step differ");
        eprintln!(
            "nchwc {name}: {blocked} blocked convolutions, {own} own weight gradients, {relu_grads} fused \
             Relu gradients, worst tract/ORT difference {worst:e}"
        );
    }
}

#[test]
fn vit_step_models_agree_on_ort_and_tract() {
    let m = build_custom_vit(4, 8, 2, 16, 4, &OPTS).unwrap();
    check("vit_bp", &m, false);
    let r = every2(m);
    check("vit_every2", &r, false);
    check("vit_every2_detach", &r, true);
}

/// A transformer step with AdamW on ONNX Runtime's CPU. The fused AdamW update alone (`FusedAdamW`) rounds each
/// operation as the standard ops do: the step's outputs are bit for bit those of the standard model, over two
/// steps (bias corrections of t = 1 and 2, non-zero moments). The whole CPU lowering (every exact Gelu's gradient
/// one `GeluGrad` kernel, every LayerNormalization's gradients one `LayerNormGrad`) agrees with tract.
#[test]
fn fused_kernels_on_a_transformer_step() {
    use rl_passes::pass::Driver;
    use rl_rewrite::engine::ort::ops::{ADAMW_STEP_OP, GELU_GRAD, LAYER_NORM_GRAD};
    if !common::ort_available() {
        return;
    }
    let m = build_custom_vit(4, 8, 2, 16, 4, &OPTS).unwrap();
    for (name, model) in [("bp", m.clone()), ("every2", every2(m))] {
        let t = compile_train(
            &model,
            &TrainOptions {
                batch_size: 4,
                optimizer: rl_passes::training::Optimizer::adamw(),
                ..Default::default()
            },
        )
        .unwrap();
        let count = |m: &ModelProto, op: &str| {
            let g = m.graph.as_ref().unwrap();
            g.node.iter().filter(|n| n.op_type() == op).count()
        };
        // AdamW fused alone.
        let mut graph = rl_passes::ir::Graph::lift(t.step.clone()).unwrap();
        let shapes = rl_rewrite::inputs::input_shapes(&t.step, 1);
        let types = rl_passes::analysis::shapes::infer_shapes(&graph, &shapes).unwrap();
        let mut driver = Driver::new();
        let fused = rl_rewrite::engine::ort::adamw::FusedAdamW::new(types);
        driver.run(&mut graph, &mut { fused }).unwrap();
        driver
            .run(&mut graph, &mut rl_passes::passes::DeadCodeElimination)
            .unwrap();
        let adamw_only = graph.lower().unwrap();
        assert_eq!(
            count(&adamw_only, ADAMW_STEP_OP),
            t.manifest.params.len(),
            "{name}: one fused update per trained parameter"
        );
        let (mut floats, labels) = feeds(&t);
        for step in 1..=2 {
            let standard = run_ort(&t.step, &floats, &labels, &t.manifest.labels);
            let own = run_ort(&adamw_only, &floats, &labels, &t.manifest.labels);
            for (k, v) in &standard {
                assert!(
                    own[k].iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} step {step}: {k} differs between the fused and the standard AdamW update"
                );
            }
            // The next step starts from this one's parameters and moments.
            for (input, _, values) in floats.iter_mut() {
                if let Some(next) = standard.get(&rl_passes::training::next_name(input)) {
                    *values = next.iter().map(|&x| x as f32).collect();
                }
            }
        }
        // The whole lowering against tract, under SGD: AdamW's first update, g/(|g| + ε), turns the rounding
        // of a near-zero gradient into a visible difference.
        let t = compiled(&model, 4, false);
        let lowered = rl_rewrite::engine::ort::cpu::lower_for_cpu(&t.step)
            .unwrap()
            .expect("kernels to use");
        let gelus = count(&model, "Erf");
        assert!(gelus >= 2, "{name}: {gelus} exact Gelus");
        assert_eq!(
            count(&lowered, GELU_GRAD),
            gelus,
            "{name}: one GeluGrad per Gelu"
        );
        let norms = count(&model, "LayerNormalization");
        assert!(norms >= 3, "{name}: {norms} LayerNormalizations");
        assert_eq!(
            count(&lowered, LAYER_NORM_GRAD),
            norms,
            "{name}: one LayerNormGrad per LayerNormalization"
        );
        let (floats, labels) = feeds(&t);
        let reference = run_tract(&t.step, &floats, &labels, &t.manifest.labels);
        let o = run_ort(&lowered, &floats, &labels, &t.manifest.labels);
        let worst = compare(name, &t.step, &reference, &o);
        eprintln!(
            "{name}: AdamW fused bit for bit over two steps; lowered SGD step (GeluGrad, LayerNormGrad) vs tract {worst:e}"
        );
    }
}

/// The PyTorch training-mode export (BatchNormalization training_mode=1, Dropout with ratio and training_mode
/// inputs): its step model passes onnx.checker and runs on ORT CPU (tract refuses training-mode Dropout), and
/// two runs give the same running statistics (batch statistics) but, through Dropout's random mask, may differ
/// only in the loss and the parameters.
#[test]
fn pytorch_training_mode_export_step_runs_on_ort() {
    let model =
        rl_passes::io::load_model(&common::fixture("exporters/resnet_torchscript_train.onnx"))
            .unwrap()
            .model;
    let m = compiled(&model, 2, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch_train_step.onnx");
    std::fs::write(&path, m.step.encode_to_vec()).unwrap();
    common::onnx_check(&[&path]);
    if !common::ort_available() {
        return;
    }
    let (floats, labels) = feeds(&m);
    let a = run_ort(&m.step, &floats, &labels, &m.manifest.labels);
    let b = run_ort(&m.step, &floats, &labels, &m.manifest.labels);
    assert!(a["loss"][0].is_finite());
    for s in &m.manifest.state {
        if s.name.ends_with("running_mean") || s.name.ends_with("running_var") {
            assert_eq!(a[&s.next], b[&s.next], "{}", s.next);
        }
    }
}

/// The allocator statistics behind the CUDA device-memory figure of `train`: read here from the CPU arenas of a
/// training runner (the same ONNX Runtime call as on CUDA, where no GPU is at hand), they grow with the batch.
#[test]
fn onnx_runtime_reports_the_peak_memory_of_its_allocators() {
    use rl_rewrite::engine::HostTensor;
    use rl_rewrite::train::runner::{Models, OrtRunner, Runner};
    if !common::ort_available() {
        return;
    }
    let model = build_custom_resnet_cifar(3, 4, &OPTS).unwrap();
    let peak = |batch: usize| -> u64 {
        let m = compiled(&model, batch, false);
        let start: Vec<HostTensor> = m
            .initial
            .iter()
            .map(|t| HostTensor::f32(t.dims.iter().map(|&d| d as usize).collect(), f32_values(t)))
            .collect();
        let input_shape = vec![batch, 3, 8, 8];
        let mut runner = OrtRunner::new(
            Models {
                step: &m.step,
                eval: &m.eval,
                manifest: &m.manifest,
                input_shape: input_shape.clone(),
                start,
            },
            rl_rewrite::engine::Device::Cpu,
        )
        .unwrap();
        let images = vec![0.5f32; input_shape.iter().product()];
        let labels: Vec<i64> = (0..batch as i64).map(|i| i % 3).collect();
        runner.step(&images, &labels, 0.1).unwrap();
        // On the host the runner reports no device memory; the arena statistics are there all the same.
        assert_eq!(runner.device_peak_bytes(), None);
        let cpu = ort::memory::MemoryInfo::new(
            ort::memory::AllocationDevice::CPU,
            0,
            ort::memory::AllocatorType::Device,
            ort::memory::MemoryType::Default,
        )
        .unwrap();
        runner.allocator_peak_bytes(&cpu).unwrap()
    };
    let (small, large) = (peak(2), peak(32));
    eprintln!("ORT CPU arena peak: batch 2 {small} bytes, batch 32 {large} bytes");
    assert!(small > 0, "no bytes in use reported");
    assert!(
        large > small,
        "batch 32 ({large}) should need more than batch 2 ({small})"
    );
}

/// The manifest tells the optimizer's state from BatchNormalization running statistics (what `compare` counts
/// as optimizer-state bytes).
#[test]
fn the_manifest_splits_optimizer_state_from_running_statistics() {
    let model = build_custom_resnet_cifar(3, 4, &OPTS).unwrap();
    let m = compiled(&model, 2, false);
    let bn_stats: Vec<&str> = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == "BatchNormalization")
        .flat_map(|n| n.input[3..5].iter().map(String::as_str))
        .collect();
    let running: Vec<&str> = m
        .manifest
        .running_statistics()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(running, bn_stats);
    // SGD with momentum: one buffer per parameter.
    assert_eq!(m.manifest.optimizer_state().len(), m.manifest.params.len());
    for (s, p) in m.manifest.optimizer_state().iter().zip(&m.manifest.params) {
        assert_eq!(s.name, format!("{}.momentum", p.name));
    }
}
