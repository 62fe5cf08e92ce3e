//! Whole-model checks of the training-step compiler: BatchNormalization in the step model (running statistics
//! as state, momentum update, eval model in inference mode), and gradients of small zoo models — BP and
//! rewritten by Replacement Learning, with and without `detach_neighbours` — against central finite differences
//! of the loss in float64 (tract). The gradient is read off one SGD step with lr = 1, momentum 0 and no weight
//! decay: g = x − x.next.

use std::collections::HashMap;

use prost::Message;
use rl_models::{build_custom_resnet_cifar, ZooOptions};
use rl_passes::onnx::{
    tensor_proto::DataType, tensor_shape_proto, type_proto, ModelProto, NodeProto, TensorProto,
    ValueInfoProto,
};
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_passes::testing::{
    f64_tensor, node, tract_f64_equivalents, ModelBuilder, NodeExt, XorShift,
};
use rl_passes::training::{compile_train, Optimizer, TrainOptions, TrainingModels};
use tract_onnx::prelude::*;

fn values(t: &TensorProto) -> Vec<f64> {
    if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        return match t.data_type() {
            x if x == DataType::Double as i32 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
        };
    }
    if !t.double_data.is_empty() {
        return t.double_data.clone();
    }
    t.float_data.iter().map(|&v| v as f64).collect()
}

/// The model in float64: float32 initializers, Constant tensors, Cast targets and value types become float64.
fn to_f64(mut m: ModelProto) -> ModelProto {
    let f = DataType::Float as i32;
    let d = DataType::Double as i32;
    let g = m.graph.as_mut().unwrap();
    for t in &mut g.initializer {
        if t.data_type() == f {
            *t = f64_tensor(t.name(), &t.dims, &values(t));
        }
    }
    for n in &mut g.node {
        let cast = n.op_type() == "Cast";
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_mut().filter(|t| t.data_type() == f) {
                *t = f64_tensor(t.name(), &t.dims, &values(t));
            }
            if cast && a.name() == "to" && a.i == Some(f as i64) {
                a.i = Some(d as i64);
            }
        }
    }
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        if let Some(type_proto::Value::TensorType(tt)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if tt.elem_type == Some(f) {
                tt.elem_type = Some(d);
            }
        }
    }
    m
}

fn dims(v: &ValueInfoProto) -> (DatumType, Vec<usize>) {
    let Some(type_proto::Value::TensorType(tt)) = &v.r#type.as_ref().unwrap().value else {
        panic!("tensor type")
    };
    let dt = match DataType::try_from(tt.elem_type()).unwrap() {
        DataType::Float => DatumType::F32,
        DataType::Double => DatumType::F64,
        DataType::Int64 => DatumType::I64,
        other => panic!("{other:?}"),
    };
    let shape = tt
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) => v as usize,
            _ => panic!("static shapes"),
        })
        .collect();
    (dt, shape)
}

struct Runner {
    plan: std::sync::Arc<TypedRunnableModel>,
    inputs: Vec<(String, DatumType, Vec<usize>)>,
    outputs: Vec<String>,
}

impl Runner {
    fn new(m: &ModelProto) -> Runner {
        let g = m.graph.as_ref().unwrap();
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !inits.contains(&i.name()))
            .map(|i| {
                let (dt, s) = dims(i);
                (i.name().to_owned(), dt, s)
            })
            .collect();
        // tract 0.23 names a node it adds while translating a Conv with a non-constant bias `{conv}.bias`,
        // which clashes with an input of that name (the ViT's `conv_proj.bias`): node names carry no meaning,
        // so the tract run gets prefixed ones.
        let mut renamed = m.clone();
        for (k, n) in renamed.graph.as_mut().unwrap().node.iter_mut().enumerate() {
            n.name = Some(format!("n{k}/{}", n.name()));
        }
        let bytes = renamed.encode_to_vec();
        let mut tm = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
        for (k, (_, dt, s)) in inputs.iter().enumerate() {
            tm = tm
                .with_input_fact(k, TypedFact::dt_shape(*dt, s.as_slice()).into())
                .unwrap();
        }
        let plan = tm.into_optimized().unwrap().into_runnable().unwrap();
        let outputs = g.output.iter().map(|o| o.name().to_owned()).collect();
        Runner {
            plan,
            inputs,
            outputs,
        }
    }

    fn run(&self, feeds: &HashMap<String, Vec<f64>>) -> HashMap<String, Vec<f64>> {
        let mut ins: TVec<TValue> = tvec![];
        for (name, dt, s) in &self.inputs {
            let v = feeds
                .get(name)
                .unwrap_or_else(|| panic!("no feed for {name}"));
            let t = match dt {
                DatumType::F32 => {
                    Tensor::from_shape(s, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())
                }
                DatumType::F64 => Tensor::from_shape(s, v),
                _ => Tensor::from_shape(s, &v.iter().map(|&x| x as i64).collect::<Vec<_>>()),
            }
            .unwrap();
            ins.push(t.into_tvalue());
        }
        let outs = self.plan.run(ins).unwrap();
        self.outputs
            .iter()
            .zip(outs.iter())
            .map(|(n, t)| {
                let t = t.cast_to::<f64>().unwrap();
                let v = t
                    .to_plain_array_view::<f64>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect();
                (n.clone(), v)
            })
            .collect()
    }
}

/// Feeds: initial parameter/state values, a random batch, labels, lr.
fn feeds(m: &TrainingModels, batch: &[usize], lr: f64, seed: u64) -> HashMap<String, Vec<f64>> {
    let mut rng = XorShift(seed);
    let mut f: HashMap<String, Vec<f64>> = m
        .initial
        .iter()
        .map(|t| (t.name().to_owned(), values(t)))
        .collect();
    let n: usize = batch.iter().product();
    f.insert(m.manifest.input.clone(), rng.vec(n, -1.0, 1.0));
    f.insert(
        "labels".into(),
        (0..batch[0]).map(|i| ((i * 7 + 1) % 3) as f64).collect(),
    );
    f.insert("lr".into(), vec![lr]);
    f
}

fn sgd_plain(batch: usize, detach: bool) -> TrainOptions {
    TrainOptions {
        batch_size: batch,
        optimizer: Optimizer::sgd(0.0, false, 0.0),
        detach_neighbours: detach,
        ..Default::default()
    }
}

/// The step model with the float64 workarounds for tract, given the forward model's value shapes.
fn patched(step: &ModelProto, model: &ModelProto, batch: &[usize]) -> ModelProto {
    let g = rl_passes::ir::Graph::lift(model.clone()).unwrap();
    let input = g.data_inputs()[0].clone();
    let types = rl_passes::analysis::shapes::infer_shapes(&g, &[(input, batch.to_vec())]).unwrap();
    let shapes = types.into_iter().map(|(k, t)| (k, t.shape)).collect();
    let mut m = step.clone();
    // The ops of these step models that tract cannot run in float64.
    tract_f64_equivalents(&mut m, &shapes, |n| {
        matches!(n.op_type(), "Erf" | "LayerNormalization")
    });
    m
}

/// The loss of a rewritten model as a function with the neighbours' path through the integration cut: each
/// integration `Mul`'s neighbour input (slot 1) reads a copy `P.detached` of the neighbour tensor, so
/// perturbing the neighbour reaches the loss only through its own layer (what `detach_neighbours` computes).
fn detached_reference(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().unwrap();
    let mut copies = Vec::new();
    for n in &mut g.node {
        if n.name().ends_with("/rl_mul_a") || n.name().ends_with("/rl_mul_b") {
            let src = n.input[1].clone();
            n.input[1] = format!("{src}.detached");
            copies.push(src);
        }
    }
    assert!(!copies.is_empty(), "the model has integration nodes");
    for src in copies {
        let t = g
            .initializer
            .iter()
            .find(|t| t.name() == src)
            .unwrap()
            .clone();
        let name = format!("{src}.detached");
        if g.initializer.iter().all(|t| t.name() != name) {
            g.initializer.push(TensorProto {
                name: Some(name),
                ..t
            });
        }
    }
    m
}

/// Checks every parameter's gradient (read off one SGD step) against central finite differences of the loss at
/// a few entries per tensor (with `detach`, of the loss with the integration's neighbour path cut). Returns the
/// number of entries checked and the worst relative error.
fn check_gradients(model: &ModelProto, detach: bool, batch: &[usize]) -> (usize, f64) {
    let m = compile_train(model, &sgd_plain(batch[0], detach)).unwrap();
    let r = Runner::new(&patched(&m.step, model, batch));
    let base = feeds(&m, batch, 1.0, 11);
    let out = r.run(&base);
    // The loss function: the step model itself, or that of the cut model (fed the same values, the copies
    // keeping their initial ones).
    let (r, base) = if detach {
        let cut = compile_train(&detached_reference(model), &sgd_plain(batch[0], false)).unwrap();
        let mut f = feeds(&cut, batch, 1.0, 11);
        f.extend(base.clone());
        (Runner::new(&patched(&cut.step, model, batch)), f)
    } else {
        (r, base)
    };
    let h = 1e-6;
    let (mut checked, mut worst) = (0, 0.0f64);
    for p in &m.manifest.params {
        let x = &base[&p.name];
        let next = &out[&p.next];
        let len = x.len();
        let picks: Vec<usize> = if len <= 3 {
            (0..len).collect()
        } else {
            vec![0, len / 2, len - 1]
        };
        for k in picks {
            let g = x[k] - next[k];
            let mut f = base.clone();
            f.get_mut(&p.name).unwrap()[k] = x[k] + h;
            let lp = r.run(&f)["loss"][0];
            f.get_mut(&p.name).unwrap()[k] = x[k] - h;
            let lm = r.run(&f)["loss"][0];
            let fd = (lp - lm) / (2.0 * h);
            let scale = g.abs().max(fd.abs()).max(1e-3);
            let rel = (g - fd).abs() / scale;
            assert!(
                rel <= 1e-6,
                "{}[{k}]: gradient {g:e} vs finite differences {fd:e} (relative error {rel:e})",
                p.name
            );
            worst = worst.max(rel);
            checked += 1;
        }
    }
    (checked, worst)
}

fn small_resnet() -> ModelProto {
    build_custom_resnet_cifar(
        3,
        4,
        &ZooOptions {
            classes: 3,
            image_size: 8,
            channels: 3,
            seed: 1,
        },
    )
    .unwrap()
}

fn every2(m: ModelProto) -> ModelProto {
    let r = rewrite(
        m,
        &RewriteOptions {
            every: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!r.plan.frozen.is_empty(), "something is frozen");
    r.model
}

#[test]
fn resnet_bp_gradients_match_finite_differences_f64() {
    let (n, worst) = check_gradients(&to_f64(small_resnet()), false, &[4, 3, 8, 8]);
    eprintln!("resnet BP: {n} entries, worst relative error {worst:e}");
}

#[test]
fn resnet_every2_gradients_match_finite_differences_f64() {
    let m = to_f64(every2(small_resnet()));
    for detach in [false, true] {
        let (n, worst) = check_gradients(&m, detach, &[4, 3, 8, 8]);
        eprintln!("resnet every 2 (detach {detach}): {n} entries, worst relative error {worst:e}");
    }
}

fn small_vit() -> ModelProto {
    rl_models::build_custom_vit(
        4,
        8,
        2,
        16,
        4,
        &ZooOptions {
            classes: 3,
            image_size: 8,
            channels: 3,
            seed: 1,
        },
    )
    .unwrap()
}

#[test]
fn vit_gradients_match_finite_differences_f64() {
    let m = to_f64(small_vit());
    let (n, worst) = check_gradients(&m, false, &[4, 3, 8, 8]);
    eprintln!("ViT BP: {n} entries, worst relative error {worst:e}");
    let r = to_f64(every2(small_vit()));
    for detach in [false, true] {
        let (n, worst) = check_gradients(&r, detach, &[4, 3, 8, 8]);
        eprintln!("ViT every 2 (detach {detach}): {n} entries, worst relative error {worst:e}");
    }
}

/// A node named `OP/OUTPUT`.
fn named(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    node(op, inputs, &[output]).named(format!("{op}/{output}"))
}

/// x [N,3,2,2] → BatchNormalization(momentum 0.8) → GlobalAveragePool → Flatten → Gemm(W [3,3]) → logits.
fn bn_model() -> ModelProto {
    let mut rng = XorShift(5);
    ModelBuilder::new("bn")
        .node(
            named("BatchNormalization", &["x", "s", "bb", "mean", "var"], "y")
                .float("momentum", 0.8),
        )
        .node(named("GlobalAveragePool", &["y"], "p"))
        .node(named("Flatten", &["p"], "f").int("axis", 1))
        .node(named("Gemm", &["f", "W"], "logits"))
        .initializer(f64_tensor("s", &[3], &rng.vec(3, 0.5, 1.5)))
        .initializer(f64_tensor("bb", &[3], &rng.vec(3, -0.5, 0.5)))
        .initializer(f64_tensor("mean", &[3], &rng.vec(3, -0.5, 0.5)))
        .initializer(f64_tensor("var", &[3], &rng.vec(3, 0.5, 1.5)))
        .initializer(f64_tensor("W", &[3, 3], &rng.vec(9, -1.0, 1.0)))
        .input("x", DataType::Double, [4, 3, 2, 2])
        .output("logits", DataType::Double, [4, 3])
        .build()
}

#[test]
fn batchnorm_running_statistics_are_state_updated_with_momentum() {
    let m = compile_train(&bn_model(), &sgd_plain(4, false)).unwrap();
    let names = |v: &[rl_passes::training::ManifestTensor]| {
        v.iter()
            .map(|t| (t.name.clone(), t.weight_decay))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&m.manifest.params),
        [
            ("s".to_owned(), Some(false)),
            ("bb".to_owned(), Some(false)),
            ("W".to_owned(), Some(true))
        ]
    );
    assert_eq!(
        names(&m.manifest.state),
        [("mean".to_owned(), None), ("var".to_owned(), None)]
    );
    let g = m.step.graph.as_ref().unwrap();
    let inputs: Vec<&str> = g.input.iter().map(|i| i.name()).collect();
    assert_eq!(inputs, ["x", "labels", "lr", "s", "bb", "W", "mean", "var"]);
    let outputs: Vec<&str> = g.output.iter().map(|i| i.name()).collect();
    assert_eq!(
        outputs,
        [
            "loss",
            "correct",
            "s.next",
            "bb.next",
            "W.next",
            "mean.next",
            "var.next"
        ]
    );
    assert!(g
        .initializer
        .iter()
        .all(|t| t.name() != "mean" && t.name() != "var"));
    // Weight decay of norm parameters only with decay_all.
    let decay = compile_train(
        &bn_model(),
        &TrainOptions {
            batch_size: 4,
            decay_all: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(decay
        .manifest
        .params
        .iter()
        .all(|p| p.weight_decay == Some(true)));

    // The running statistics: momentum · old + (1 − momentum) · batch (unbiased variance, as PyTorch).
    let f = feeds(&m, &[4, 3, 2, 2], 0.1, 3);
    let out = Runner::new(&m.step).run(&f);
    let x = &f["x"];
    for c in 0..3 {
        let vals: Vec<f64> = (0..4)
            .flat_map(|n| (0..4).map(move |k| x[n * 12 + c * 4 + k]))
            .collect();
        let mu = vals.iter().sum::<f64>() / 16.0;
        let var = vals.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / 15.0;
        // The attribute is a float32.
        let k = 0.8f32 as f64;
        let want_m = k * f["mean"][c] + (1.0 - k) * mu;
        let want_v = k * f["var"][c] + (1.0 - k) * var;
        assert!((out["mean.next"][c] - want_m).abs() < 1e-12, "mean {c}");
        assert!((out["var.next"][c] - want_v).abs() < 1e-12, "var {c}");
    }
    // Gradients (batch statistics) against finite differences.
    let (n, worst) = check_gradients(&bn_model(), false, &[4, 3, 2, 2]);
    eprintln!("BN model: {n} entries, worst relative error {worst:e}");
}

/// Value shapes of a step model, by the crate's static shape analysis.
fn value_shapes(m: &ModelProto) -> HashMap<String, Vec<usize>> {
    let inputs: Vec<_> = m
        .graph
        .as_ref()
        .unwrap()
        .input
        .iter()
        .map(|i| (i.name().to_owned(), dims(i).1))
        .collect();
    let g = rl_passes::ir::Graph::lift(m.clone()).unwrap();
    rl_passes::analysis::shapes::infer_shapes(&g, &inputs)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.shape))
        .collect()
}

/// The BatchNormalization rule's backward recomputes the batch statistics, d = x − mean and the gain γ·inv from
/// x with the ops that the forward lowering emits; the step model computes them once. Elementwise ops on
/// full-size tensors: the forward's Sub(x, mean), Mul(d, d), Mul(d, γ·inv) and Add(β) (x̂ is never formed);
/// the GlobalAveragePool gradient's Expand; the backward's Mul(dY, d) for dγ and four for dX (differentiating
/// the decomposition op by op took seventeen).
#[test]
fn batchnorm_step_shares_its_statistics_between_forward_and_backward() {
    let mut model = bn_model();
    let g = model.graph.as_mut().unwrap();
    g.node[0].input[0] = "xc".into();
    g.node.insert(0, named("Conv", &["x", "K"], "xc"));
    let mut rng = XorShift(9);
    g.initializer
        .push(f64_tensor("K", &[3, 3, 1, 1], &rng.vec(9, -1.0, 1.0)));
    let m = compile_train(&model, &sgd_plain(4, false)).unwrap();
    let step = m.step.graph.as_ref().unwrap();
    let count = |op: &str| step.node.iter().filter(|n| n.op_type() == op).count();
    assert_eq!(count("Sqrt"), 1);
    let reads_xc: Vec<&str> = step
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == "xc"))
        .map(|n| n.op_type())
        .collect();
    assert_eq!(reads_xc, ["ReduceSum", "Sub"]);
    let shapes = value_shapes(&m.step);
    let full: Vec<&str> = step
        .node
        .iter()
        .filter(|n| {
            matches!(
                n.op_type(),
                "Add" | "Sub" | "Mul" | "Div" | "Neg" | "Expand" | "Where"
            ) && shapes[&n.output[0]] == [4, 3, 2, 2]
        })
        .map(|n| n.op_type())
        .collect();
    assert_eq!(full.len(), 10, "{full:?}");
}

#[test]
fn eval_model_keeps_inference_batchnorm_with_running_statistics_as_inputs() {
    let m = compile_train(&bn_model(), &sgd_plain(4, false)).unwrap();
    let g = m.eval.graph.as_ref().unwrap();
    let bn: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "BatchNormalization")
        .collect();
    assert_eq!(bn.len(), 1);
    assert!(bn[0].attribute.iter().all(|a| a.name() != "training_mode"));
    assert_eq!(bn[0].output.len(), 1);
    let inputs: Vec<&str> = g.input.iter().map(|i| i.name()).collect();
    for name in ["mean", "var", "s", "bb", "W"] {
        assert!(
            inputs.contains(&name),
            "{name} is an eval input: {inputs:?}"
        );
        assert!(
            g.initializer.iter().any(|t| t.name() == name),
            "{name} keeps its default"
        );
    }
}

/// The PyTorch training-mode export (BatchNormalization training_mode=1 with running-statistics outputs, Dropout
/// with ratio and training_mode inputs) compiles: BN becomes the elementary training form with its running
/// statistics as state, Dropout stays in training mode with its mask; the eval model is in inference mode.
#[test]
fn pytorch_training_mode_export_is_accepted() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/exporters/resnet_torchscript_train.onnx");
    let model = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let m = compile_train(&model, &TrainOptions::default()).unwrap();
    let g = m.step.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type() != "BatchNormalization"));
    let state: Vec<&str> = m.manifest.state.iter().map(|s| s.name.as_str()).collect();
    assert!(state.contains(&"stem.1.running_mean") && state.contains(&"layers.8.bn2.running_var"));
    assert_eq!(
        state.iter().filter(|s| s.ends_with("running_mean")).count(),
        21
    );
    let dropout: Vec<_> = g.node.iter().filter(|n| n.op_type() == "Dropout").collect();
    assert_eq!(dropout.len(), 1);
    assert_eq!(dropout[0].input[2], "train/dropout_training");
    assert!(
        g.initializer
            .iter()
            .any(|t| t.name() == "train/dropout_training"
                && t.raw_data.as_deref() == Some(&[1u8][..]))
    );
    let e = m.eval.graph.as_ref().unwrap();
    for n in &e.node {
        if n.op_type() == "BatchNormalization" || n.op_type() == "Dropout" {
            assert_eq!(n.output.len(), 1, "{}", n.name());
            assert!(n.attribute.iter().all(|a| a.name() != "training_mode"));
            assert!(n.input.len() <= 5 && (n.op_type() != "Dropout" || n.input.len() <= 2));
        }
    }
}
