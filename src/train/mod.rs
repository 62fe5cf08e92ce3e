//! `rl-rewrite train`: rewrites a classifier (`--every K`) or keeps it (`--bp`), compiles its training-step and
//! eval models ([`rl_passes::training::compile_train`]) and drives them on a dataset, with seeded shuffling and
//! augmentation, a learning-rate schedule, per-epoch metrics and checkpoints, `--resume`, Ctrl-C and NaN
//! handling.
//!
//! Reproducibility: every random draw is a function of `(seed, epoch, step)` ([`schedule`]), and a checkpoint
//! holds every parameter and state tensor bit for bit, so a resumed run on the same engine and device computes
//! exactly what the uninterrupted run computes.

pub mod checkpoint;
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
use rl_passes::training::{compile_train, ManifestTensor, Optimizer, TrainOptions};
use serde::Serialize;
use serde_json::json;

use crate::data::{self, check_model_shape, DataSpec, Dataset, Split};
use crate::engine::select::EngineChoice;
use crate::engine::Device;
use checkpoint::Progress;
use metrics::EpochMetrics;
use runner::{HostValue, Models, Runner};
pub use schedule::Schedule;

/// Exit code of a run stopped by Ctrl-C (after its checkpoint was written).
pub const EXIT_INTERRUPTED: i32 = 130;

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
    /// Stopped by Ctrl-C, checkpointed.
    Interrupted,
}

impl TrainOutcome {
    /// The process exit code of this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            TrainOutcome::Interrupted => EXIT_INTERRUPTED,
            _ => 0,
        }
    }
}

#[derive(Clone)]
pub struct TrainRequest {
    pub model: PathBuf,
    pub data: DataSpec,
    /// `Some(K)`: rewrite with every K-th unit frozen; `None`: train the model as it is (BP).
    pub every: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: Optimizer,
    pub label_smoothing: f64,
    /// Weight decay on every parameter (a, b, biases and norm parameters included).
    pub decay_all: bool,
    /// Stop gradients from reaching the neighbours' parameters through the integration subgraphs.
    pub detach_neighbours: bool,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub augment: bool,
    pub engine: EngineChoice,
    pub device: Device,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint, exit 0) after this many epochs of this invocation: an interruption on purpose.
    pub stop_after: Option<usize>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C sets a flag that the loop checks between steps.
fn catch_ctrl_c() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
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

pub fn train_command(req: &TrainRequest) -> Result<TrainOutcome> {
    if req.epochs == 0 || req.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    let loaded = load_model(&req.model)?;
    let mut tensors_replaced = 0;
    let forward = match req.every {
        Some(every) => {
            let r = rewrite(
                loaded.model,
                &RewriteOptions {
                    every,
                    ..RewriteOptions::default()
                },
            )
            .with_context(|| req.model.display().to_string())?;
            println!(
                "Replacement Learning: every {every}: {} tensors replaced by a·prev + b·next",
                r.tensors_removed
            );
            tensors_replaced = r.tensors_removed;
            r.model
        }
        None => loaded.model,
    };
    let mut train = data::open(&req.data, Split::Train)?;
    let mut test = data::open(&req.data, Split::Test)?;
    let compiled = compile_train(
        &forward,
        &TrainOptions {
            batch_size: req.batch,
            optimizer: req.optimizer,
            label_smoothing: req.label_smoothing,
            detach_neighbours: req.detach_neighbours,
            decay_all: req.decay_all,
        },
    )
    .with_context(|| req.model.display().to_string())?;
    let manifest = &compiled.manifest;
    let shape = input_shape(&compiled.step, &manifest.input)?;
    check_model_shape(train.image_shape(), &shape)?;
    let steps_per_epoch = train.len() / req.batch;
    if steps_per_epoch == 0 {
        bail!(
            "the training split has {} images, fewer than one batch of {}",
            train.len(),
            req.batch
        );
    }
    let total_steps = steps_per_epoch as u64 * req.epochs as u64;
    let carried: Vec<(String, Vec<usize>)> = manifest
        .params
        .iter()
        .chain(&manifest.state)
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let names: Vec<String> = carried.iter().map(|(n, _)| n.clone()).collect();
    let mut settings = json!({
        "model": req.model.display().to_string(),
        "data": req.data.to_string(),
        "every": req.every,
        "batch": req.batch,
        "optimizer": manifest.optimizer,
        "label_smoothing": req.label_smoothing,
        "decay_all": req.decay_all,
        "detach_neighbours": req.detach_neighbours,
        "lr": req.lr,
        "schedule": req.schedule,
        "warmup": req.warmup,
        "augment": req.augment,
        "seed": req.seed,
        "engine": format!("{:?}", req.engine),
        "device": format!("{:?}", req.device),
    });

    let (mut progress, start, mut rows) = match &req.resume {
        Some(dir) => {
            let (p, values) = checkpoint::load(dir, &carried)?;
            let rows = metrics::read(dir)?;
            println!(
                "resuming {} at epoch {}, step {} of it ({} steps done)",
                dir.display(),
                p.epoch + 1,
                p.step_in_epoch,
                p.global_step
            );
            (p, values, rows)
        }
        None => {
            let values = compiled
                .initial
                .iter()
                .map(|t| {
                    Ok(HostValue {
                        shape: t.dims.iter().map(|&d| d as usize).collect(),
                        data: f32_values(t).ok_or_else(|| {
                            anyhow!("'{}' is not float32; only float32 models train", t.name())
                        })?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let p = Progress {
                epoch: 0,
                step_in_epoch: 0,
                global_step: 0,
                partial: (0.0, 0, 0),
                settings: settings.clone(),
            };
            (p, values, Vec::new())
        }
    };
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
            checkpoint::save(&req.out, &forward, &names, &values, &progress)?;
        }
        _ => {}
    }
    let values_in = |tensors: &[ManifestTensor]| -> usize {
        tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    };
    let learnable = values_in(&manifest.params);
    let state_values = values_in(manifest.optimizer_state());
    // Every carried tensor is float32 (checked above when the initial values were read).
    let state_bytes = 4 * state_values;
    let running_values = values_in(manifest.running_statistics());
    println!(
        "training {} on {} ({} train / {} test images): {} learnable values in {} tensors, {} optimizer-state \
         values, {} running statistics, {}, batch {}, {} steps per epoch, engine {}",
        req.model.display(),
        req.data,
        train.len(),
        test.len(),
        learnable,
        manifest.params.len(),
        state_values,
        running_values,
        manifest.optimizer,
        req.batch,
        steps_per_epoch,
        runner.describe()
    );
    catch_ctrl_c();

    let image_shape = train.image_shape();
    let il = train.image_len();
    let mut epochs_this_run = 0;
    while progress.epoch < req.epochs {
        let epoch = progress.epoch;
        let order = schedule::epoch_order(req.seed, epoch, train.len());
        let bar = ProgressBar::new(steps_per_epoch as u64);
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
        let mut images_this_run = 0usize;
        let mut lr = req.lr;
        for s in progress.step_in_epoch..steps_per_epoch {
            if INTERRUPTED.load(Ordering::SeqCst) {
                bar.abandon();
                let values = runner.values()?;
                checkpoint::save(&req.out, &forward, &names, &values, &progress)?;
                eprintln!(
                    "interrupted: checkpoint written to {} at epoch {}, step {} of it; continue with --resume {}",
                    req.out.display(),
                    epoch + 1,
                    s,
                    req.out.display()
                );
                return Ok(TrainOutcome::Interrupted);
            }
            let mut b = train.gather(&order[s * req.batch..(s + 1) * req.batch])?;
            if req.augment {
                schedule::crop_flip(
                    &mut b.images,
                    image_shape,
                    req.seed,
                    epoch,
                    progress.global_step,
                );
            }
            debug_assert_eq!(b.images.len(), req.batch * il);
            lr = schedule::learning_rate(
                req.schedule,
                req.lr,
                progress.global_step,
                total_steps,
                req.warmup,
            );
            let (loss, correct) = runner.step(&b.images, &b.labels, lr as f32)?;
            if !loss.is_finite() {
                bar.abandon();
                bail!(
                    "the loss became {loss} at step {} (epoch {}, step {} of it, learning rate {lr:.3e}); training \
                     stopped. The last good checkpoint ({} epoch(s) done) is kept in {}; try a lower --lr or a \
                     --warmup",
                    progress.global_step + 1,
                    epoch + 1,
                    s + 1,
                    progress.epoch,
                    req.out.display()
                );
            }
            progress.global_step += 1;
            progress.step_in_epoch = s + 1;
            progress.partial.0 += loss as f64 * req.batch as f64;
            progress.partial.1 += correct;
            progress.partial.2 += req.batch;
            images_this_run += req.batch;
            let (l, c, n) = progress.partial;
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                l / n as f64,
                100.0 * c as f64 / n as f64,
                images_this_run as f64 / started.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        let epoch_time = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (test_loss, test_acc) = evaluate(runner.as_mut(), test.as_mut(), req.batch)?;
        let (l, c, n) = progress.partial;
        let row = EpochMetrics {
            epoch: epoch + 1,
            train_loss: l / n.max(1) as f64,
            train_acc: c as f64 / n.max(1) as f64,
            test_loss,
            test_acc,
            lr,
            epoch_time_s: epoch_time,
            images_per_s: images_this_run as f64 / epoch_time.max(1e-9),
            peak_host_mib: metrics::peak_host_mib(),
            peak_device_mib: runner
                .device_peak_bytes()
                .map(|b| b as f64 / (1024.0 * 1024.0)),
        };
        println!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | lr {:.3e} | {:.2} s, {:.0} img/s, \
             peak {:.0} MiB{}",
            row.epoch,
            req.epochs,
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
        rows.retain(|r| r.epoch <= epoch);
        rows.push(row);
        progress.epoch += 1;
        progress.step_in_epoch = 0;
        progress.partial = (0.0, 0, 0);
        let values = runner.values()?;
        checkpoint::save(&req.out, &forward, &names, &values, &progress)?;
        metrics::write(&req.out, &rows)?;
        let title = plot::curves_title(&req.model, req.every);
        plot::write_curves(&req.out.join("curves.svg"), &title, &rows)?;
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
        learnable_values: learnable,
        optimizer_state_values: state_values,
        optimizer_state_bytes: state_bytes,
        running_stat_values: running_values,
        engine: runner.describe(),
        epochs: rows,
    }))
}
