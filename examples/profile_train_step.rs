//! Where a training step's time goes on ONNX Runtime's CPU provider, as `train` runs it (lowered, with this
//! crate's kernels): ONNX Runtime's profile of a few steps, summed per op type and output shape.
//!
//!     cargo run --release --example profile_train_step -- MODEL.onnx [BATCH] [sgd|adamw] [STEPS]
//!
//! The batch is random normal data with random labels; the parameters start from the model's values.

use std::collections::HashMap;

use anyhow::{bail, Context};
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use rl_passes::io::load_model;
use rl_passes::tensor::f32_values;
use rl_passes::training::{compile_train, Optimizer, TrainOptions};
use rl_rewrite::engine::ort::OrtSessionBuilder;
use rl_rewrite::engine::Device;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: profile_train_step MODEL.onnx [BATCH] [sgd|adamw] [STEPS]");
    };
    let batch: usize = args.get(1).map_or(Ok(32), |b| b.parse()).context("BATCH")?;
    let optimizer = match args.get(2).map(String::as_str).unwrap_or("adamw") {
        "sgd" => Optimizer::sgd(0.9, false, 5e-4),
        "adamw" => Optimizer::adamw(),
        other => bail!("the optimizer is sgd or adamw, not {other}"),
    };
    let steps: usize = args.get(3).map_or(Ok(3), |s| s.parse()).context("STEPS")?;
    let model = load_model(std::path::Path::new(path))?.model;
    let t = compile_train(
        &model,
        &TrainOptions {
            batch_size: batch,
            optimizer,
            ..Default::default()
        },
    )?;
    let mut session = OrtSessionBuilder::new(Device::Cpu)
        .lower_for_cpu(true)
        .profile(true)
        .build(&t.step)?;
    let g = t.step.graph.as_ref().context("a step graph")?;
    let initial: HashMap<&str, Vec<f32>> = t
        .initial
        .iter()
        .filter_map(|i| Some((i.name(), f32_values(i)?)))
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut floats: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut labels = Vec::new();
    for i in &g.input {
        let shape = rl_rewrite::inputs::input_shapes(&t.step, batch)
            .into_iter()
            .find(|(n, _)| n == i.name())
            .map(|(_, s)| s)
            .context("static input shapes")?;
        let n: usize = shape.iter().product();
        if i.name() == t.manifest.labels {
            labels = (0..n).map(|_| (uniform() * 10.0) as i64 % 10).collect();
        } else if i.name() == t.manifest.lr {
            floats.push((i.name().to_owned(), shape, vec![1e-3]));
        } else if let Some(v) = initial.get(i.name()) {
            floats.push((i.name().to_owned(), shape, v.clone()));
        } else {
            let values = (0..n).map(|_| uniform() * 2.0 - 1.0).collect();
            floats.push((i.name().to_owned(), shape, values));
        }
    }
    let label_shape = [labels.len()];
    for step in 0..steps {
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::new();
        for i in &g.input {
            let v: SessionInputValue<'_> = if i.name() == t.manifest.labels {
                TensorRef::from_array_view((&label_shape[..], labels.as_slice()))?.into()
            } else {
                let (_, s, v) = floats
                    .iter()
                    .find(|(n, ..)| n == i.name())
                    .context("a feed for every input")?;
                TensorRef::from_array_view((s.as_slice(), v.as_slice()))?.into()
            };
            values.push((i.name(), v));
        }
        let started = std::time::Instant::now();
        session.session.run(values)?;
        eprintln!(
            "step {step}: {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let profile: Vec<serde_json::Value> = serde_json::from_str(&session.end_profiling()?)?;
    let mut by_op: HashMap<(String, String), (f64, usize)> = HashMap::new();
    for e in &profile {
        let (Some(name), Some(op)) = (e["name"].as_str(), e["args"]["op_name"].as_str()) else {
            continue;
        };
        if e["cat"] != "Node" || !name.ends_with("_kernel_time") {
            continue;
        }
        let shape = e["args"]["output_type_shape"].to_string();
        let entry = by_op.entry((op.to_owned(), shape)).or_default();
        entry.0 += e["dur"].as_f64().unwrap_or(0.0) / 1e3 / steps as f64;
        entry.1 += 1;
    }
    let total: f64 = by_op.values().map(|(ms, _)| ms).sum();
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("kernel time per step: {total:.0} ms");
    for ((op, shape), (ms, n)) in rows.into_iter().take(40) {
        println!(
            "{ms:8.1} ms {:5.1} %  {op:<22} ×{:<4} {shape}",
            100.0 * ms / total,
            n / steps
        );
    }
    Ok(())
}
