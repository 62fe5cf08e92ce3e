//! `rl-rewrite compile-train`: writes the training-step model (and optionally the eval model and the
//! manifest) of a classifier, ready to be driven from any ONNX Runtime binding.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rl_passes::io::{load_model, save_model, write_atomically, SaveOptions};
use rl_passes::training::{compile_train, TrainOptions};

pub struct CompileTrainRequest {
    pub model: PathBuf,
    pub output: PathBuf,
    pub eval_output: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub options: TrainOptions,
}

pub fn compile_train_command(req: &CompileTrainRequest) -> Result<()> {
    let loaded = load_model(&req.model)?;
    let compiled = compile_train(&loaded.model, &req.options)
        .with_context(|| req.model.display().to_string())?;
    let mut step = compiled.step;
    // The first values travel with the step model as defaults of its parameter and state inputs, so the file
    // is self-contained; a driver overrides them with each step's `x.next`.
    if let Some(g) = step.graph.as_mut() {
        g.initializer.extend(compiled.initial.iter().cloned());
    }
    let manifest = compiled.manifest.to_json();
    if let Some(path) = &req.manifest {
        write_atomically(path, false, |w| {
            w.write_all(format!("{manifest}\n").as_bytes())
        })?;
    }
    if let Some(path) = &req.eval_output {
        save_model(
            &compiled.eval,
            path,
            &SaveOptions::like_input(&Default::default(), &compiled.eval),
        )?;
    }
    save_model(
        &step,
        &req.output,
        &SaveOptions::like_input(&Default::default(), &step),
    )?;
    let m = &compiled.manifest;
    let params: usize = m
        .params
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    println!(
        "training step: {} trainable tensors ({params} values), {} state tensors (optimizer state, BatchNormalization running statistics), batch {}, {}, BatchNorm running variance {}",
        m.params.len(),
        m.state.len(),
        m.batch_size,
        m.optimizer,
        m.bn_running_var
    );
    println!(
        "inputs: {} [batch], {} [labels], {} [learning rate], then each parameter and state x; outputs: {}, {}, x.next",
        m.input, m.labels, m.lr, m.loss, m.correct
    );
    let count =
        |model: &rl_passes::onnx::ModelProto| model.graph.as_ref().map_or(0, |g| g.node.len());
    println!("wrote {} ({} nodes)", req.output.display(), count(&step));
    if let Some(path) = &req.eval_output {
        println!("wrote {} ({} nodes)", path.display(), count(&compiled.eval));
    }
    Ok(())
}
