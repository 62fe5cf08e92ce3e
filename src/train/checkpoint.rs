//! Checkpoints in the run folder:
//! - `model.onnx`: the forward model (the rewrite, with its a and b, for `--every`) with the trained
//!   parameters as initializers — ready for `rl-rewrite run`, `eval`, `check` or `bake`;
//! - `state.onnx`: every parameter and optimizer-state tensor bit for bit, as initializers of an empty graph,
//!   with the progress ([`Progress`]) in its metadata under [`PROGRESS_KEY`]; `--resume` reads only this file;
//! - `checkpoint.json`: the same progress, for people.
//!
//! Each file is written atomically (temporary file renamed into place); `state.onnx` last.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rl_passes::io::{load_model, save_model, write_atomically, SaveOptions};
use rl_passes::onnx::{GraphProto, ModelProto, StringStringEntryProto};
use rl_passes::tensor::{f32_tensor, f32_values};
use serde::{Deserialize, Serialize};

use crate::engine::HostTensor;

/// Metadata key of the progress JSON in `state.onnx`.
pub const PROGRESS_KEY: &str = "rl_rewrite.train.progress";

/// Where a run stands, and the settings it must be resumed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps of the next epoch already taken (non-zero only for a checkpoint written on Ctrl-C).
    pub step_in_epoch: usize,
    /// Steps taken in all.
    pub global_step: u64,
    /// Sums over the steps of the unfinished epoch: (loss sum, correct, images).
    pub partial: (f64, i64, usize),
    /// The settings that must match on resume (engine and device included: bit-for-bit needs the same engine).
    pub settings: serde_json::Value,
}

/// Writes `model.onnx`, `state.onnx` and `checkpoint.json` into `dir`.
pub fn save(
    dir: &Path,
    forward: &ModelProto,
    names: &[String],
    values: &[HostTensor],
    progress: &Progress,
) -> Result<()> {
    let tensors = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let dims: Vec<i64> = v.shape.iter().map(|&d| d as i64).collect();
            let data = v
                .as_f32()
                .ok_or_else(|| anyhow!("the trained tensor '{n}' is not float32"))?;
            Ok(f32_tensor(n, &dims, data))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut model = forward.clone();
    if let Some(g) = model.graph.as_mut() {
        for init in &mut g.initializer {
            if let Some(t) = tensors.iter().find(|t| t.name == init.name) {
                *init = t.clone();
            }
        }
    }
    save_model(&model, &dir.join("model.onnx"), &SaveOptions::default())
        .context("writing the checkpoint model")?;
    let json = serde_json::to_string_pretty(progress)?;
    write_atomically(&dir.join("checkpoint.json"), false, |w| {
        w.write_all(format!("{json}\n").as_bytes())
    })?;
    let state = ModelProto {
        ir_version: Some(8),
        producer_name: Some("rl-rewrite train".into()),
        graph: Some(GraphProto {
            name: Some("training_state".into()),
            initializer: tensors,
            ..Default::default()
        }),
        metadata_props: vec![StringStringEntryProto::new(PROGRESS_KEY, json)],
        ..Default::default()
    };
    save_model(&state, &dir.join("state.onnx"), &SaveOptions::default())
        .context("writing the training state")?;
    Ok(())
}

/// Reads `dir/state.onnx`: the progress and the values of `names` (with their expected shapes).
pub fn load(dir: &Path, names: &[(String, Vec<usize>)]) -> Result<(Progress, Vec<HostTensor>)> {
    let path = dir.join("state.onnx");
    let model = load_model(&path)
        .with_context(|| format!("no checkpoint to resume from in {}", dir.display()))?
        .model;
    let json = model
        .metadata_props
        .iter()
        .find(|p| p.key() == PROGRESS_KEY)
        .map(|p| p.value().to_owned())
        .ok_or_else(|| anyhow!("{}: no training progress in its metadata", path.display()))?;
    let progress: Progress =
        serde_json::from_str(&json).with_context(|| format!("{}", path.display()))?;
    let inits = model.graph.map(|g| g.initializer).unwrap_or_default();
    let mut values = Vec::new();
    for (name, shape) in names {
        let t = inits.iter().find(|t| t.name() == name).ok_or_else(|| {
            anyhow!(
                "{}: no tensor '{name}': the checkpoint is of another model or optimizer",
                path.display()
            )
        })?;
        let got: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        if &got != shape {
            bail!(
                "{}: tensor '{name}' has shape {got:?}, the model needs {shape:?}",
                path.display()
            );
        }
        let data = f32_values(t)
            .ok_or_else(|| anyhow!("{}: tensor '{name}' is not float32", path.display()))?;
        values.push(HostTensor::f32(got, data));
    }
    Ok((progress, values))
}
