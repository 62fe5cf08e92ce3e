//! `rl-rewrite train`: rewrites a classifier (`--every K`) or keeps it (`--bp`), compiles its training-step and
//! eval models ([`rl_passes::training::compile_train`]) and drives them on a dataset, with seeded shuffling and
//! augmentation, a learning-rate schedule, per-epoch metrics and checkpoints, `--resume`, interruption and NaN
//! handling.
//!
//! Reproducibility: every random draw is a function of `(seed, epoch, step)` ([`schedule`]), and a checkpoint
//! holds every parameter and state tensor bit for bit, so a resumed run on the same engine and device computes
//! exactly what the uninterrupted run computes.

pub mod checkpoint;
pub mod divergence;
pub mod metrics;
pub mod plot;
pub mod runner;
pub mod schedule;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rl_passes::io::load_model;
use rl_passes::onnx::{tensor_shape_proto::dimension::Value as Dim, type_proto, ModelProto};
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_passes::tensor::f32_values;
use rl_passes::training::{
    compile_train, ManifestTensor, TrainManifest, TrainOptions, TrainingModels,
};
use serde::Serialize;
use serde_json::json;

use crate::data::{self, check_model_shape, DataSpec, Dataset, Split};
use crate::engine::{Device, EngineChoice, HostTensor};
use checkpoint::Progress;
use divergence::{lr_hint, LossWatch};
use metrics::EpochMetrics;
use runner::{Models, Runner};
pub use schedule::Schedule;

/// What a training run is and what it reached: the figures `compare` sets side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// `None`: BP (the model as it is); `Some(K)`: Replacement Learning with every K-th unit frozen.
    pub every: Option<usize>,
    /// Parameter tensors replaced by integration subgraphs.
    pub tensors_replaced: usize,
    pub learnable_tensors: usize,
    pub learnable_values: usize,
    /// The optimizer's own state (momentum, AdamW moments), BatchNormalization running statistics excluded.
    pub optimizer_state_values: usize,
    pub optimizer_state_bytes: usize,
    pub running_stat_values: usize,
    /// Engine and execution provider that ran the steps.
    pub engine: String,
    /// One row per epoch done (resumed runs included).
    pub epochs: Vec<EpochMetrics>,
}

impl RunSummary {
    pub fn best_test_acc(&self) -> f64 {
        self.epochs.iter().map(|r| r.test_acc).fold(0.0, f64::max)
    }
    pub fn final_test_acc(&self) -> f64 {
        self.epochs.last().map_or(0.0, |r| r.test_acc)
    }
    /// Highest peak resident memory over the epochs, MiB.
    pub fn peak_host_mib(&self) -> f64 {
        self.epochs
            .iter()
            .map(|r| r.peak_host_mib)
            .fold(0.0, f64::max)
    }
    /// Highest device-memory peak over the epochs (CUDA), MiB.
    pub fn peak_device_mib(&self) -> Option<f64> {
        self.epochs
            .iter()
            .filter_map(|r| r.peak_device_mib)
            .reduce(f64::max)
    }
    /// Mean wall time of an epoch's training steps, seconds.
    pub fn mean_epoch_time_s(&self) -> f64 {
        let n = self.epochs.len().max(1) as f64;
        self.epochs.iter().map(|r| r.epoch_time_s).sum::<f64>() / n
    }
}

/// How a `train` invocation ended.
#[derive(Debug)]
pub enum TrainOutcome {
    /// All epochs done.
    Finished(RunSummary),
    /// Stopped after `--stop-after` epochs, checkpointed.
    Paused,
    /// Stopped by the request's `stop` flag (Ctrl-C in the binary), checkpointed.
    Interrupted,
}

#[derive(Clone)]
pub struct TrainRequest {
    pub model: PathBuf,
    pub data: DataSpec,
    /// `Some(K)`: rewrite with every K-th unit frozen; `None`: train the model as it is (BP).
    pub every: Option<usize>,
    pub epochs: usize,
    /// How the step is compiled: batch size, optimizer, regularization, gradient routing.
    pub compile: TrainOptions,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub augment: bool,
    pub engine: EngineChoice,
    pub device: Device,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this many epochs of this invocation: an interruption on purpose.
    pub stop_after: Option<usize>,
    /// Checked between steps: once set, the run writes a checkpoint and ends as [`TrainOutcome::Interrupted`].
    /// The binary sets it from its Ctrl-C handler.
    pub stop: &'static AtomicBool,
}

/// The fixed shape of the step model's input `name`.
fn input_shape(step: &ModelProto, name: &str) -> Result<Vec<usize>> {
    let vi = step
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name() == name))
        .ok_or_else(|| anyhow!("the step model has no input '{name}'"))?;
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!("input '{name}' is not a tensor");
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => Ok(v as usize),
                    _ => Err(anyhow!("input '{name}' has a symbolic dimension")),
                })
                .collect()
        })
        .unwrap_or_else(|| Err(anyhow!("input '{name}' has no shape")))
}

/// Mean cross-entropy sum and correct count of the first `valid` rows of `logits` (`[N, classes]`).
fn score(logits: &[f32], labels: &[i64], valid: usize) -> (f64, i64) {
    let classes = logits.len() / labels.len().max(1);
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &label) in logits.chunks(classes).zip(labels).take(valid) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label as usize] as f64;
        let best = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        correct += i64::from(best as i64 == label);
    }
    (loss, correct)
}

/// Test loss and top-1 accuracy with the eval model (the last batch padded, padded rows ignored).
fn evaluate(runner: &mut dyn Runner, test: &mut dyn Dataset, batch: usize) -> Result<(f64, f64)> {
    test.reset();
    let il = test.image_len();
    let (mut loss, mut correct, mut seen) = (0.0, 0i64, 0usize);
    while let Some(b) = test.next_batch(batch)? {
        let mut images = b.images;
        let mut labels = b.labels;
        images.resize(batch * il, 0.0);
        labels.resize(batch, 0);
        let logits = runner.logits(&images, &labels)?;
        let (l, c) = score(&logits, &labels, b.len);
        loss += l;
        correct += c;
        seen += b.len;
    }
    let n = seen.max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// The model that trains: the rewrite (`--every K`) or the model as it is, and how many parameter tensors the
/// rewrite replaced by integration subgraphs.
fn forward_model(req: &TrainRequest) -> Result<(ModelProto, usize)> {
    let loaded = load_model(&req.model)?;
    let Some(every) = req.every else {
        return Ok((loaded.model, 0));
    };
    let r = rewrite(
        loaded.model,
        &RewriteOptions {
            every,
            ..RewriteOptions::default()
        },
    )
    .with_context(|| req.model.display().to_string())?;
    // Replaced tensors, not removed initializers: they differ where a replaced tensor shared its storage.
    let replaced = r.plan.replaced_tensor_count();
    println!("Replacement Learning: every {every}: {replaced} tensors replaced by a·prev + b·next");
    Ok((r.model, replaced))
}

/// The settings a resumed run must share with the checkpoint.
fn settings_of(req: &TrainRequest, manifest: &TrainManifest) -> serde_json::Value {
    json!({
        "model": req.model.display().to_string(),
        "data": req.data.to_string(),
        "every": req.every,
        "batch": req.compile.batch_size,
        "optimizer": manifest.optimizer,
        "label_smoothing": req.compile.label_smoothing,
        "decay_all": req.compile.decay_all,
        "detach_neighbours": req.compile.detach_neighbours,
        "bn_running_var": manifest.bn_running_var,
        "lr": req.lr,
        "schedule": req.schedule,
        "warmup": req.warmup,
        "augment": req.augment,
        "seed": req.seed,
        "engine": format!("{:?}", req.engine),
        "device": format!("{:?}", req.device),
    })
}

/// Where the run starts: the checkpoint of `--resume` (progress, values, metrics so far), or the compiled
/// initial values at step 0.
fn start_or_resume(
    req: &TrainRequest,
    compiled: &TrainingModels,
    carried: &[(String, Vec<usize>)],
    settings: &serde_json::Value,
) -> Result<(Progress, Vec<HostTensor>, Vec<EpochMetrics>)> {
    if let Some(dir) = &req.resume {
        let (p, values) = checkpoint::load(dir, carried)?;
        let rows = metrics::read(dir)?;
        println!(
            "resuming {} at epoch {}, step {} of it ({} steps done)",
            dir.display(),
            p.epoch + 1,
            p.step_in_epoch,
            p.global_step
        );
        return Ok((p, values, rows));
    }
    let values = compiled
        .initial
        .iter()
        .map(|t| {
            let data = f32_values(t).ok_or_else(|| {
                anyhow!("'{}' is not float32; only float32 models train", t.name())
            })?;
            Ok(HostTensor::f32(
                t.dims.iter().map(|&d| d as usize).collect(),
                data,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let p = Progress {
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        partial: (0.0, 0, 0),
        settings: settings.clone(),
    };
    Ok((p, values, Vec::new()))
}

/// Sizes of what a run learns and carries, for the banner and the summary.
struct StateSizes {
    learnable: usize,
    optimizer_state: usize,
    running_statistics: usize,
}

impl StateSizes {
    fn of(manifest: &TrainManifest) -> StateSizes {
        let values_in = |tensors: &[ManifestTensor]| -> usize {
            tensors
                .iter()
                .map(|t| t.shape.iter().product::<usize>())
                .sum()
        };
        StateSizes {
            learnable: values_in(&manifest.params),
            optimizer_state: values_in(manifest.optimizer_state()),
            running_statistics: values_in(manifest.running_statistics()),
        }
    }
}

/// What stays fixed while epochs run.
struct Trainer<'a> {
    req: &'a TrainRequest,
    forward: &'a ModelProto,
    /// Names of the carried tensors (parameters, then state), in manifest order.
    names: Vec<String>,
    steps_per_epoch: usize,
    total_steps: u64,
}

/// How an epoch's steps ended.
enum EpochEnd {
    /// All steps taken: the epoch's wall time and images.
    Done {
        seconds: f64,
        images: usize,
        lr: f64,
    },
    /// Stopped by the request's flag; the checkpoint is written.
    Interrupted,
}

impl Trainer<'_> {
    fn batch(&self) -> usize {
        self.req.compile.batch_size
    }

    /// The steps of the current epoch, from `progress.step_in_epoch` on. A non-finite loss ends the run with an
    /// error; a loss growing far past its start (`watch`) prints one warning.
    fn run_steps(
        &self,
        runner: &mut dyn Runner,
        train: &mut dyn Dataset,
        progress: &mut Progress,
        watch: &mut LossWatch,
    ) -> Result<EpochEnd> {
        let (req, batch) = (self.req, self.batch());
        let epoch = progress.epoch;
        let order = schedule::epoch_order(req.seed, epoch, train.len());
        let bar = ProgressBar::new(self.steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, req.epochs));
        bar.set_position(progress.step_in_epoch as u64);
        let started = Instant::now();
        let mut images = 0usize;
        let mut lr = req.lr;
        for s in progress.step_in_epoch..self.steps_per_epoch {
            if req.stop.load(Ordering::SeqCst) {
                bar.abandon();
                let values = runner.values()?;
                checkpoint::save(&req.out, self.forward, &self.names, &values, progress)?;
                eprintln!(
                    "interrupted: checkpoint written to {} at epoch {}, step {} of it; continue with --resume {}",
                    req.out.display(),
                    epoch + 1,
                    s,
                    req.out.display()
                );
                return Ok(EpochEnd::Interrupted);
            }
            let mut b = train.gather(&order[s * batch..(s + 1) * batch])?;
            if req.augment {
                let shape = train.image_shape();
                schedule::crop_flip(&mut b.images, shape, req.seed, epoch, progress.global_step);
            }
            lr = schedule::learning_rate(
                req.schedule,
                req.lr,
                progress.global_step,
                self.total_steps,
                req.warmup,
            );
            let (loss, correct) = runner.step(&b.images, &b.labels, lr as f32)?;
            if !loss.is_finite() {
                bar.abandon();
                bail!(
                    "the loss became {loss} at step {} (epoch {}, step {} of it, learning rate {lr:.3e}); training \
                     stopped. The last good checkpoint ({} epoch(s) done) is kept in {}. Hint: {}",
                    progress.global_step + 1,
                    epoch + 1,
                    s + 1,
                    progress.epoch,
                    req.out.display(),
                    lr_hint(&req.compile.optimizer, req.lr)
                );
            }
            if let Some(g) = watch.observe(loss as f64) {
                bar.suspend(|| {
                    eprintln!(
                        "warning: the training loss grew from {} (its start, the first steps' mean) to {} \
                         (smoothed) at step {} (epoch {}, learning rate {lr:.3e}): training is diverging. Hint: {}",
                        divergence::show_loss(g.start),
                        divergence::show_loss(g.now),
                        progress.global_step + 1,
                        epoch + 1,
                        lr_hint(&req.compile.optimizer, req.lr)
                    )
                });
            }
            progress.global_step += 1;
            progress.step_in_epoch = s + 1;
            progress.partial.0 += loss as f64 * batch as f64;
            progress.partial.1 += correct;
            progress.partial.2 += batch;
            images += batch;
            let (l, c, n) = progress.partial;
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                l / n as f64,
                100.0 * c as f64 / n as f64,
                images as f64 / started.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(EpochEnd::Done {
            seconds: started.elapsed().as_secs_f64(),
            images,
            lr,
        })
    }

    /// The metrics row of the epoch just trained (test split evaluated now).
    fn epoch_row(
        &self,
        runner: &mut dyn Runner,
        test: &mut dyn Dataset,
        progress: &Progress,
        (seconds, images, lr): (f64, usize, f64),
    ) -> Result<EpochMetrics> {
        let (test_loss, test_acc) = evaluate(runner, test, self.batch())?;
        let (l, c, n) = progress.partial;
        let row = EpochMetrics {
            epoch: progress.epoch + 1,
            train_loss: l / n.max(1) as f64,
            train_acc: c as f64 / n.max(1) as f64,
            test_loss,
            test_acc,
            lr,
            epoch_time_s: seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            peak_host_mib: metrics::peak_host_mib(),
            peak_device_mib: runner
                .device_peak_bytes()
                .map(|b| b as f64 / (1024.0 * 1024.0)),
        };
        println!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | lr {:.3e} | {:.2} s, {:.0} img/s, \
             peak {:.0} MiB{}",
            row.epoch,
            self.req.epochs,
            row.train_loss,
            100.0 * row.train_acc,
            row.test_loss,
            100.0 * row.test_acc,
            row.lr,
            row.epoch_time_s,
            row.images_per_s,
            row.peak_host_mib,
            row.peak_device_mib
                .map_or_else(String::new, |m| format!(", device peak {m:.0} MiB"))
        );
        Ok(row)
    }

    /// Records a finished epoch: progress, checkpoint, metrics and curves.
    fn end_epoch(
        &self,
        runner: &dyn Runner,
        progress: &mut Progress,
        rows: &mut Vec<EpochMetrics>,
        row: EpochMetrics,
    ) -> Result<()> {
        rows.retain(|r| r.epoch <= progress.epoch);
        rows.push(row);
        progress.epoch += 1;
        progress.step_in_epoch = 0;
        progress.partial = (0.0, 0, 0);
        let values = runner.values()?;
        let out = &self.req.out;
        checkpoint::save(out, self.forward, &self.names, &values, progress)?;
        metrics::write(out, rows)?;
        let title = plot::curves_title(&self.req.model, self.req.every);
        plot::write_curves(&out.join("curves.svg"), &title, rows)?;
        Ok(())
    }
}

pub fn train_command(req: &TrainRequest) -> Result<TrainOutcome> {
    if req.epochs == 0 || req.compile.batch_size == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    let batch = req.compile.batch_size;
    let (forward, tensors_replaced) = forward_model(req)?;
    let mut train = data::open(&req.data, Split::Train)?;
    let mut test = data::open(&req.data, Split::Test)?;
    let compiled =
        compile_train(&forward, &req.compile).with_context(|| req.model.display().to_string())?;
    let manifest = &compiled.manifest;
    let shape = input_shape(&compiled.step, &manifest.input)?;
    check_model_shape(train.image_shape(), &shape)?;
    let steps_per_epoch = train.len() / batch;
    if steps_per_epoch == 0 {
        bail!(
            "the training split has {} images, fewer than one batch of {batch}",
            train.len(),
        );
    }
    let carried: Vec<(String, Vec<usize>)> = manifest
        .params
        .iter()
        .chain(&manifest.state)
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let mut settings = settings_of(req, manifest);
    let (mut progress, start, mut rows) = start_or_resume(req, &compiled, &carried, &settings)?;
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let first_values = req.resume.is_none().then(|| start.clone());
    let mut runner = runner::open(
        Models {
            step: &compiled.step,
            eval: &compiled.eval,
            manifest,
            input_shape: shape.clone(),
            start,
        },
        req.engine,
        req.device,
    )?;
    let trainer = Trainer {
        req,
        forward: &forward,
        names: carried.into_iter().map(|(n, _)| n).collect(),
        steps_per_epoch,
        total_steps: steps_per_epoch as u64 * req.epochs as u64,
    };
    // Bit-for-bit continuation needs the same engine and provider, whatever `auto` chose.
    settings["engine_used"] = json!(runner.describe());
    match (&req.resume, first_values) {
        (Some(dir), _) if progress.settings != settings => bail!(
            "{} was trained with other settings; resume with the same model, data, flags and engine \
             (--epochs and --out may differ)\n  checkpoint: {}\n  now:        {}",
            dir.display(),
            progress.settings,
            settings
        ),
        (None, Some(values)) => {
            progress.settings = settings.clone();
            // The epoch-0 checkpoint: what a run that fails in its first epoch leaves behind.
            checkpoint::save(&req.out, &forward, &trainer.names, &values, &progress)?;
        }
        _ => {}
    }
    let sizes = StateSizes::of(manifest);
    println!(
        "training {} on {} ({} train / {} test images): {} learnable values in {} tensors, {} optimizer-state \
         values, {} running statistics, batch {batch}, {steps_per_epoch} steps per epoch, engine {}",
        req.model.display(),
        req.data,
        train.len(),
        test.len(),
        sizes.learnable,
        manifest.params.len(),
        sizes.optimizer_state,
        sizes.running_statistics,
        runner.describe()
    );
    println!(
        "optimizer {}, base learning rate {} ({} schedule{}), BatchNorm running variance {}",
        manifest.optimizer,
        req.lr,
        json!(req.schedule).as_str().unwrap_or("?"),
        if req.warmup > 0 {
            format!(", {} warm-up steps", req.warmup)
        } else {
            String::new()
        },
        manifest.bn_running_var
    );
    let mut epochs_this_run = 0;
    let mut watch = LossWatch::default();
    while progress.epoch < req.epochs {
        let (seconds, images, lr) =
            match trainer.run_steps(runner.as_mut(), train.as_mut(), &mut progress, &mut watch)? {
                EpochEnd::Interrupted => return Ok(TrainOutcome::Interrupted),
                EpochEnd::Done {
                    seconds,
                    images,
                    lr,
                } => (seconds, images, lr),
            };
        let row = trainer.epoch_row(
            runner.as_mut(),
            test.as_mut(),
            &progress,
            (seconds, images, lr),
        )?;
        trainer.end_epoch(runner.as_ref(), &mut progress, &mut rows, row)?;
        epochs_this_run += 1;
        if req.stop_after == Some(epochs_this_run) && progress.epoch < req.epochs {
            println!(
                "stopped after {epochs_this_run} epoch(s) as asked; continue with --resume {}",
                req.out.display()
            );
            return Ok(TrainOutcome::Paused);
        }
    }
    let best = rows.iter().map(|r| r.test_acc).fold(0.0, f64::max);
    println!(
        "done: final test accuracy {:.2}%, best {:.2}%; checkpoint {}",
        100.0 * rows.last().map_or(0.0, |r| r.test_acc),
        100.0 * best,
        req.out.join("model.onnx").display()
    );
    Ok(TrainOutcome::Finished(RunSummary {
        every: req.every,
        tensors_replaced,
        learnable_tensors: manifest.params.len(),
        learnable_values: sizes.learnable,
        optimizer_state_values: sizes.optimizer_state,
        // Every carried tensor is float32 (checked when the initial values were read).
        optimizer_state_bytes: 4 * sizes.optimizer_state,
        running_stat_values: sizes.running_statistics,
        engine: runner.describe(),
        epochs: rows,
    }))
}
