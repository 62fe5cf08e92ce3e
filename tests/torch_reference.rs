//! The PyTorch reference suite: torchvision models exported in training mode, trained one step and two
//! 30-step trajectories by this tool (in process, on ONNX Runtime's CPU provider with its CPU lowering and
//! kernels, as `train` runs them), and recomputed by torch autograd in float64 (`scripts/torch_reference.py`).
//!
//! Per model, `scripts/torch_reference.py prepare` exports the model and writes the batches; this test rewrites
//! (`--every 2`, when something is freezable), compiles and runs the steps, writing the tool's results as
//! `.npy`; `scripts/torch_reference.py compare` checks them and writes `report.json`, on which the test asserts.
//! The work folder is `<cargo target tmp>/torch_reference/<model>/`; `python scripts/torch_reference.py summary
//! DIR` prints the table of every report there.
//!
//! - one step, BP and every 2: the loss, every parameter's gradient (a and b included) and the BatchNorm
//!   running statistics, each within `10·(torch float32 error) + 1e-5·max|value|` of torch float64; where a
//!   gradient is beyond that, plus what flipping the activations that lie within 10·(torch float32 error) of a
//!   ReLU/ReLU6/Hardswish/Hardsigmoid kink can change it (per element, by torch autograd in float64). The
//!   gradients are read straight from the step model: each parameter's `x.next` output is rewired to its
//!   gradient (plain SGD compiles `x.next = x − lr·g`; the `Sub` becomes an `Identity` of `g`).
//! - trajectories (BP and every 2): 30 steps of SGD (momentum 0.9, weight decay 5e-4) and 30 of AdamW on the
//!   same batches as `torch.optim.SGD` / `torch.optim.AdamW` (weight decay where the manifest applies it):
//!   losses within 1e-3 relative at every step (once torch's own float32 runs have left the float64 one by
//!   more, as training BatchNorm networks at batch 4 is chaotic, within 10 times the largest difference they
//!   have shown so far), final parameters within the allowed error above.
//!
//! Torch's float32 error, in both, is the largest of three float32 runs that differ only in how the start is
//! rounded (as stored, and every trained value moved one float32 step up or down at random, two seeds).
//!
//! At 32 px and batch 4 the mobile networks' last stages are 1×1, so BatchNorm normalizes four values a channel:
//! torch's own float32 forward is then far from float64 (up to 2e-4 relative on the loss), activations land
//! within that noise of ReLU/ReLU6 kinks, and training is chaotic. The allowances above are what makes the
//! comparison meaningful there: torch's float32 error measured over three roundings of the start, and the
//! kinks' share bounded per element.
//!
//! The suite needs a Python with torch, torchvision, onnx and onnxscript (`scripts/requirements-torch.txt`) in
//! `RL_PYTHON` and libonnxruntime; under CI (`CI` set) a missing one is a failure, never a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use rl_passes::io::{load_model, save_model, SaveOptions};
use rl_passes::onnx::{ModelProto, NodeProto};
use rl_passes::pipeline::{rewrite, RewriteError, RewriteOptions};
use rl_passes::plan::PlanError;
use rl_passes::tensor::f32_values;
use rl_passes::training::{compile_train, Optimizer, TrainOptions, TrainingModels};
use rl_rewrite::engine::{Device, EngineChoice, HostTensor, TensorData};
use rl_rewrite::npy::{read_npy, to_npy};
use rl_rewrite::train::runner::{open, Models, Runner};
use serde_json::{json, Value};

/// One model at a time: each step already uses both cores, and the reports stay readable.
static SERIAL: Mutex<()> = Mutex::new(());

const SCRIPT: &str = "scripts/torch_reference.py";

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("torch_reference")
}

/// The Python of `RL_PYTHON` when it has torch; `None` (a skip, with a note) outside CI.
fn torch_python() -> Option<PathBuf> {
    let py = common::python()?;
    let ok = Command::new(&py)
        .args(["-c", "import torch, torchvision, onnx, onnxscript"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match ok {
        true => Some(py),
        false if std::env::var_os("CI").is_some() => panic!(
            "{} cannot import torch, torchvision, onnx and onnxscript: CI must run the PyTorch reference suite \
             (scripts/test.sh installs scripts/requirements-torch.txt)",
            py.display()
        ),
        false => {
            eprintln!(
                "note: {} has no torch/torchvision/onnxscript; skipping the PyTorch reference suite \
                 (scripts/test.sh installs scripts/requirements-torch.txt)",
                py.display()
            );
            None
        }
    }
}

fn python(py: &Path, args: &[&str]) {
    let out = Command::new(py)
        .arg(common::repo().join(SCRIPT))
        .args(args)
        .output()
        .expect("the Python interpreter in RL_PYTHON runs");
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{SCRIPT} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The batches written by `prepare`: images `[T, N, C, H, W]` and labels `[T, N]`.
struct Batches {
    images: Vec<f32>,
    labels: Vec<i64>,
    input_shape: Vec<usize>,
    steps: usize,
}

impl Batches {
    fn read(dir: &Path) -> Batches {
        let images = read_npy(&dir.join("images.npy")).unwrap();
        let labels = read_npy(&dir.join("labels.npy")).unwrap();
        let (TensorData::F32(x), TensorData::I64(y)) = (images.data, labels.data) else {
            panic!("images.npy must be float32 and labels.npy int64");
        };
        Batches {
            images: x,
            labels: y,
            input_shape: images.shape[1..].to_vec(),
            steps: images.shape[0],
        }
    }

    fn batch(&self, t: usize) -> (&[f32], &[i64]) {
        let il: usize = self.input_shape.iter().product();
        let n = self.input_shape[0];
        (
            &self.images[t * il..(t + 1) * il],
            &self.labels[t * n..(t + 1) * n],
        )
    }
}

fn start_values(compiled: &TrainingModels) -> Vec<HostTensor> {
    compiled
        .initial
        .iter()
        .map(|t| {
            HostTensor::f32(
                t.dims.iter().map(|&d| d as usize).collect(),
                f32_values(t).expect("float32 parameters"),
            )
        })
        .collect()
}

fn runner(compiled: &TrainingModels, step: &ModelProto, b: &Batches) -> Box<dyn Runner> {
    open(
        Models {
            step,
            eval: &compiled.eval,
            manifest: &compiled.manifest,
            input_shape: b.input_shape.clone(),
            start: start_values(compiled),
        },
        EngineChoice::Ort,
        Device::Cpu,
    )
    .unwrap()
}

/// The step model with each parameter's `x.next` output carrying its gradient instead: under plain SGD the
/// compiler writes `x.next = Sub(x, Mul(lr, g))`; the `Sub` becomes `Identity(g)` and the `Mul` goes.
fn gradient_outputs(step: &ModelProto, compiled: &TrainingModels) -> ModelProto {
    let mut m = step.clone();
    let g = m.graph.as_mut().unwrap();
    let lr = compiled.manifest.lr.as_str();
    let mut dead = Vec::new();
    for p in &compiled.manifest.params {
        let k = g
            .node
            .iter()
            .position(|n| n.output.first() == Some(&p.next))
            .unwrap_or_else(|| panic!("no node computes '{}'", p.next));
        let sub = &g.node[k];
        assert_eq!(sub.op_type(), "Sub", "'{}' is not x − lr·g", p.next);
        let scaled = sub.input[1].clone();
        let mul = g
            .node
            .iter()
            .position(|n| n.output.first() == Some(&scaled) && n.op_type() == "Mul")
            .unwrap_or_else(|| panic!("'{}': lr·g is not a Mul", p.next));
        let grad = g.node[mul]
            .input
            .iter()
            .find(|i| i.as_str() != lr)
            .unwrap_or_else(|| panic!("'{}': the Mul does not read lr", p.next))
            .clone();
        let readers = g.node.iter().filter(|n| n.input.contains(&scaled)).count();
        if readers == 1 {
            dead.push(g.node[mul].name().to_owned());
        }
        g.node[k] = NodeProto {
            op_type: Some("Identity".into()),
            name: Some(format!("{}/gradient", p.next)),
            input: vec![grad],
            output: vec![p.next.clone()],
            ..Default::default()
        };
    }
    g.node.retain(|n| !dead.contains(&n.name().to_owned()));
    m
}

fn write_npy(path: &Path, t: &HostTensor) {
    std::fs::write(path, to_npy(t)).unwrap();
}

/// One plain-SGD step with the gradients as outputs: `step.json` with the loss, then the gradients and the
/// state (BatchNorm running statistics) as `.npy`.
fn one_step(forward: &ModelProto, b: &Batches, out: &Path) {
    let compiled = compile_train(
        forward,
        &TrainOptions {
            batch_size: b.input_shape[0],
            optimizer: Optimizer::sgd(0.0, false, 0.0),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let step = gradient_outputs(&compiled.step, &compiled);
    let mut r = runner(&compiled, &step, b);
    let (x, y) = b.batch(0);
    let (loss, _) = r.step(x, y, 1.0).unwrap();
    let values = r.values().unwrap();
    let m = &compiled.manifest;
    let mut params = Vec::new();
    for (k, (p, v)) in m.params.iter().zip(&values).enumerate() {
        let file = format!("grad{k}.npy");
        write_npy(&out.join(&file), v);
        params.push(json!({"name": p.name, "file": file}));
    }
    let mut state = Vec::new();
    for (k, (s, v)) in m.state.iter().zip(&values[m.params.len()..]).enumerate() {
        let file = format!("state{k}.npy");
        write_npy(&out.join(&file), v);
        state.push(json!({"name": s.name, "file": file}));
    }
    let report = json!({"loss": loss, "params": params, "state": state, "engine": r.describe()});
    std::fs::write(out.join("step.json"), report.to_string()).unwrap();
}

/// `steps` steps of `optimizer` at `lr`: `traj_<name>.json` with the losses, the final parameters as `.npy`.
fn trajectory(
    forward: &ModelProto,
    b: &Batches,
    (name, optimizer, lr): (&str, Optimizer, f32),
    out: &Path,
) {
    let compiled = compile_train(
        forward,
        &TrainOptions {
            batch_size: b.input_shape[0],
            optimizer,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let mut r = runner(&compiled, &compiled.step, b);
    let mut losses = Vec::new();
    for t in 0..b.steps {
        let (x, y) = b.batch(t);
        losses.push(r.step(x, y, lr).unwrap().0);
    }
    let values = r.values().unwrap();
    let mut params = Vec::new();
    for (k, (p, v)) in compiled.manifest.params.iter().zip(&values).enumerate() {
        let file = format!("{name}_param{k}.npy");
        write_npy(&out.join(&file), v);
        params
            .push(json!({"name": p.name, "file": file, "decay": p.weight_decay.unwrap_or(false)}));
    }
    let report = json!({"losses": losses, "params": params, "lr": lr, "optimizer": compiled.manifest.optimizer});
    std::fs::write(out.join(format!("traj_{name}.json")), report.to_string()).unwrap();
}

/// The optimizer settings of `meta.json` (what torch uses too).
fn optimizers(meta: &Value) -> Vec<(&'static str, Optimizer, f32)> {
    let o = &meta["optimizers"];
    let f = |v: &Value| v.as_f64().unwrap();
    let sgd = &o["sgd"];
    let adamw = &o["adamw"];
    vec![
        (
            "sgd",
            Optimizer::sgd(
                f(&sgd["momentum"]),
                sgd["nesterov"].as_bool().unwrap(),
                f(&sgd["weight_decay"]),
            ),
            f(&sgd["lr"]) as f32,
        ),
        (
            "adamw",
            Optimizer::AdamW {
                beta1: f(&adamw["betas"][0]),
                beta2: f(&adamw["betas"][1]),
                eps: f(&adamw["eps"]),
                weight_decay: f(&adamw["weight_decay"]),
            },
            f(&adamw["lr"]) as f32,
        ),
    ]
}

/// The tool's side for one model: BP and, when something is freezable, every 2.
fn tool_runs(dir: &Path) {
    let model = load_model(&dir.join("model.onnx")).unwrap().model;
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let b = Batches::read(dir);
    for mode in ["bp", "every2"] {
        let out = dir.join("tool").join(mode);
        std::fs::create_dir_all(&out).unwrap();
        let forward = if mode == "bp" {
            model.clone()
        } else {
            match rewrite(
                model.clone(),
                &RewriteOptions {
                    every: 2,
                    ..RewriteOptions::default()
                },
            ) {
                Ok(r) => {
                    let path = dir.join("rewritten.onnx");
                    save_model(
                        &r.model,
                        &path,
                        &SaveOptions::like_input(&Default::default(), &r.model),
                    )
                    .unwrap();
                    r.model
                }
                Err(RewriteError::Plan(e @ PlanError::NothingFreezable { .. })) => {
                    let why = json!({"reason": e.to_string()});
                    std::fs::write(out.join("skipped.json"), why.to_string()).unwrap();
                    continue;
                }
                Err(e) => panic!("rewrite --every 2: {e}"),
            }
        };
        one_step(&forward, &b, &out);
        for opt in optimizers(&meta) {
            trajectory(&forward, &b, opt, &out);
        }
    }
}

/// Runs the whole comparison for `model` and fails with the report's findings.
fn reference(model: &str) {
    let Some(py) = torch_python() else { return };
    if !common::ort_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let work = work_dir();
    let dir = work.join(model);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let work_s = work.to_str().unwrap();
    python(&py, &["prepare", work_s, model]);
    let t_tool = std::time::Instant::now();
    tool_runs(&dir);
    let tool_s = t_tool.elapsed().as_secs_f64();
    python(&py, &["compare", work_s, model]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    eprintln!(
        "{model}: {:.0} s in all, {tool_s:.0} s in the tool; report {}",
        started.elapsed().as_secs_f64(),
        dir.join("report.json").display()
    );
    assert!(
        report["ok"].as_bool() == Some(true),
        "{model} differs from PyTorch:\n{}",
        findings(&report)
    );
}

/// What failed, per mode, in a few lines.
fn findings(report: &Value) -> String {
    let mut lines = Vec::new();
    for (mode, e) in report["modes"].as_object().unwrap() {
        if e["ok"].as_bool() == Some(true) {
            continue;
        }
        let s = &e["step"];
        let list = |v: &Value| {
            let all: Vec<&str> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let shown = all.iter().take(6).copied().collect::<Vec<_>>().join(", ");
            match all.len() {
                0 => "none".to_owned(),
                n if n > 6 => format!("{n}: {shown}, …"),
                n => format!("{n}: {shown}"),
            }
        };
        if !s.is_null() {
            lines.push(format!(
                "  {mode} step: loss {} (allowed {}); failing gradients {}; failing running statistics {}; \
                 worst gradient {}; worst statistic {}{}",
                s["loss"]["err"],
                s["loss"]["allowed"],
                list(&s["failing_grads"]),
                list(&s["failing_stats"]),
                worst(&s["worst_grad"]),
                worst(&s["worst_stat"]),
                stat_note(&s["worst_stat"])
            ));
            for key in ["missing_in_torch", "not_trained_by_tool"] {
                if !s[key].as_array().is_none_or(Vec::is_empty) {
                    lines.push(format!("  {mode} step: {key}: {}", list(&s[key])));
                }
            }
        }
        for key in ["traj_sgd", "traj_adamw"] {
            let t = &e[key];
            if t.is_null() || t["ok"].as_bool() == Some(true) {
                continue;
            }
            lines.push(format!(
                "  {mode} {key}: max relative loss difference {} over {} steps (limit {} or 10× torch \
                 float32's {}); failing steps {}; failing final parameters {}; worst {}",
                t["max_rel_loss_diff"],
                t["steps"],
                report["loss_rel_tol"],
                t["torch32_max_rel_loss_diff"],
                t["failing_steps"],
                list(&t["failing_final_params"]),
                worst(&t["worst_final_param"])
            ));
        }
    }
    lines.join("\n")
}

/// What the worst running statistic tells about its cause.
fn stat_note(w: &Value) -> String {
    let mut note = String::new();
    if let Some(r) = w["update_ratio"]
        .as_f64()
        .filter(|r| (r - 1.0).abs() > 0.01)
    {
        note += &format!(" (the tool moved it {r:.2}× as far as PyTorch's update)");
    }
    if w["matches_biased_variance"] == json!(true) {
        note += " (the tool's running_var matches a biased batch variance; PyTorch uses the unbiased one)";
    }
    note
}

fn worst(w: &Value) -> String {
    match w["tensor"].as_str() {
        None => "–".to_owned(),
        Some(t) => format!(
            "{t}: {:.3e} / allowed {:.3e} (torch float32 {:.3e}, max |value| {:.3e})",
            w["err"].as_f64().unwrap_or(f64::NAN),
            w["allowed"].as_f64().unwrap_or(f64::NAN),
            w["torch32_err"].as_f64().unwrap_or(f64::NAN),
            w["max_abs"].as_f64().unwrap_or(f64::NAN)
        ),
    }
}

#[test]
fn resnet18() {
    reference("resnet18");
}

#[test]
fn resnet50() {
    reference("resnet50");
}

#[test]
fn mobilenet_v2() {
    reference("mobilenet_v2");
}

#[test]
fn mobilenet_v3_small() {
    reference("mobilenet_v3_small");
}

#[test]
fn efficientnet_b0() {
    reference("efficientnet_b0");
}

#[test]
fn convnext_tiny() {
    reference("convnext_tiny");
}

#[test]
fn regnet_y_400mf() {
    reference("regnet_y_400mf");
}

#[test]
fn shufflenet_v2_x0_5() {
    reference("shufflenet_v2_x0_5");
}

#[test]
fn densenet121() {
    reference("densenet121");
}

#[test]
fn vit_small() {
    reference("vit_small");
}
