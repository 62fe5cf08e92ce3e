//! The flags `compile-train`, `train` and `compare` share, and how they become the library's options: optimizer
//! (with PyTorch's per-optimizer defaults), BatchNorm running variance, schedule, augmentation, engine.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use rl_passes::training::optimizer::{ADAMW_BETAS, ADAMW_EPS, ADAMW_WEIGHT_DECAY};
use rl_passes::training::{Optimizer, RunningVariance, TrainOptions};
use rl_rewrite::data::DataSpec;
use rl_rewrite::engine::{Device, EngineChoice};
use rl_rewrite::execute::EngineOptions;
use rl_rewrite::train::{self, Schedule};

use crate::INTERRUPTED;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AugmentArg {
    /// Pad 4, random crop, random horizontal flip (seeded).
    CropFlip,
    /// No augmentation.
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OptimizerArg {
    /// SGD, a CIFAR recipe: lr 0.1, momentum 0.9, weight decay 5e-4 (Nesterov with --nesterov).
    Sgd,
    /// AdamW as torch.optim.AdamW: lr 1e-3, betas 0.9,0.999, eps 1e-8, decoupled weight decay 0.01.
    Adamw,
}

impl OptimizerArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OptimizerArg::Sgd => "sgd",
            OptimizerArg::Adamw => "adamw",
        }
    }

    /// The base learning rate when --lr is not given.
    pub(crate) fn default_lr(self) -> f64 {
        match self {
            OptimizerArg::Sgd => DEFAULT_SGD_LR,
            OptimizerArg::Adamw => DEFAULT_ADAMW_LR,
        }
    }
}

pub(crate) const DEFAULT_SGD_LR: f64 = 0.1;
pub(crate) const DEFAULT_ADAMW_LR: f64 = 1e-3;
pub(crate) const DEFAULT_SGD_MOMENTUM: f64 = 0.9;
pub(crate) const DEFAULT_SGD_WEIGHT_DECAY: f64 = 5e-4;

/// AdamW's β1 and β2, given as `B1,B2`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Betas(f64, f64);

pub(crate) fn parse_betas(s: &str) -> Result<Betas, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [b1, b2] = parts.as_slice() else {
        return Err(format!(
            "expected two numbers B1,B2 such as 0.9,0.999, got '{s}'"
        ));
    };
    let num = |v: &str| {
        v.parse::<f64>().map_err(|_| {
            format!("'{v}' in '{s}' is not a number; expected B1,B2 such as 0.9,0.999")
        })
    };
    Ok(Betas(num(b1)?, num(b2)?))
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RunningVarArg {
    /// Σ(x − mean)²/(n − 1), as PyTorch (n = batch × spatial positions per channel).
    Unbiased,
    /// Σ(x − mean)²/n, as the ONNX BatchNormalization operator's definition.
    Biased,
}

impl From<RunningVarArg> for RunningVariance {
    fn from(v: RunningVarArg) -> Self {
        match v {
            RunningVarArg::Unbiased => RunningVariance::Unbiased,
            RunningVarArg::Biased => RunningVariance::Biased,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum EngineArg {
    /// ONNX Runtime when its library is found, else the embedded tract engine (with one note on stderr).
    Auto,
    /// ONNX Runtime (libonnxruntime loaded at run time; see scripts/setup-ort.sh).
    Ort,
    /// The embedded pure-Rust engine (CPU only).
    Tract,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DeviceArg {
    /// CUDA when it works here, else the CPU (with one warning line on stderr).
    Auto,
    /// The CPU execution provider only.
    Cpu,
    /// The CUDA execution provider; an error when it cannot be used.
    Cuda,
}

#[derive(Args, Clone, Copy)]
pub(crate) struct EngineArgs {
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) engine: EngineArg,
    /// Where ONNX Runtime runs it (tract runs on the CPU).
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) device: DeviceArg,
}

impl EngineArgs {
    pub(crate) fn engine(self) -> EngineChoice {
        match self.engine {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Ort => EngineChoice::Ort,
            EngineArg::Tract => EngineChoice::Tract,
        }
    }

    pub(crate) fn device(self) -> Device {
        match self.device {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
        }
    }

    pub(crate) fn with_batch(self, batch: usize) -> EngineOptions {
        EngineOptions {
            engine: self.engine(),
            device: self.device(),
            batch,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ScheduleArg {
    /// Cosine decay per step from the base rate to 0 at the last step.
    Cosine,
    /// ×0.1 at 50 % and again at 75 % of the steps.
    Step,
    /// The base rate throughout.
    Constant,
}

impl From<ScheduleArg> for Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Step => Schedule::Step,
            ScheduleArg::Constant => Schedule::Constant,
        }
    }
}

/// How the training step is compiled: optimizer, regularization, gradient routing (`compile-train`, `train`,
/// `compare`).
#[derive(Args, Clone)]
pub(crate) struct CompilerFlags {
    /// The optimizer; each has its own defaults (the flags of the other one are refused).
    #[arg(long, value_enum, default_value = "sgd")]
    pub(crate) optimizer: OptimizerArg,
    /// SGD only: momentum [default: 0.9].
    #[arg(long, value_name = "M")]
    pub(crate) momentum: Option<f64>,
    /// SGD only: Nesterov momentum.
    #[arg(long)]
    pub(crate) nesterov: bool,
    /// AdamW only: the moments' decay rates β1,β2 [default: 0.9,0.999].
    #[arg(long, value_name = "B1,B2", value_parser = parse_betas, allow_hyphen_values = true)]
    pub(crate) betas: Option<Betas>,
    /// AdamW only: ε added to the denominator [default: 1e-8].
    #[arg(long, value_name = "EPS")]
    pub(crate) eps: Option<f64>,
    /// Weight decay [default: 5e-4 for sgd, 0.01 for adamw (decoupled)]; never applied to a, b, biases or
    /// norm parameters unless --decay-all.
    #[arg(long, value_name = "WD")]
    pub(crate) weight_decay: Option<f64>,
    /// Apply weight decay to every parameter.
    #[arg(long)]
    pub(crate) decay_all: bool,
    /// Label smoothing ε in [0, 1).
    #[arg(long, value_name = "E", default_value_t = 0.0)]
    pub(crate) label_smoothing: f64,
    /// Stop gradients from reaching the neighbours' parameters through the integration subgraphs.
    #[arg(long)]
    pub(crate) detach_neighbours: bool,
    /// Batch variance that updates BatchNorm running variances: unbiased as PyTorch computes it (models
    /// exported from PyTorch were trained so), or biased as the ONNX operator defines it.
    #[arg(long, value_enum, value_name = "KIND", default_value = "unbiased")]
    pub(crate) bn_running_var: RunningVarArg,
}

impl CompilerFlags {
    /// The compiler's options for a fixed batch size; flags that do not apply to the chosen optimizer are
    /// refused.
    pub(crate) fn options(&self, batch: usize) -> anyhow::Result<TrainOptions> {
        Ok(TrainOptions {
            batch_size: batch,
            optimizer: self.make_optimizer()?,
            label_smoothing: self.label_smoothing,
            detach_neighbours: self.detach_neighbours,
            decay_all: self.decay_all,
            bn_running_var: self.bn_running_var.into(),
        })
    }

    /// The optimizer with the user's values and the chosen optimizer's defaults for the others.
    pub(crate) fn make_optimizer(&self) -> anyhow::Result<Optimizer> {
        let kind = self.optimizer;
        // (flag, given, the optimizer it belongs to, what the chosen optimizer has instead)
        let foreign: &[(&str, bool, &str, &str)] = match kind {
            OptimizerArg::Sgd => &[
                (
                    "--betas",
                    self.betas.is_some(),
                    "adamw",
                    "SGD's is --momentum M",
                ),
                ("--eps", self.eps.is_some(), "adamw", "SGD has no ε"),
            ],
            OptimizerArg::Adamw => &[
                (
                    "--momentum",
                    self.momentum.is_some(),
                    "sgd",
                    "AdamW's moment decay rates are --betas B1,B2",
                ),
                (
                    "--nesterov",
                    self.nesterov,
                    "sgd",
                    "AdamW has no Nesterov variant here",
                ),
            ],
        };
        if let Some((flag, _, owner, instead)) = foreign.iter().find(|(_, given, ..)| *given) {
            bail!(
                "{flag} applies to --optimizer {owner} only, and the optimizer is {} ({instead}): leave {flag} \
                 out, or choose --optimizer {owner}",
                kind.name()
            );
        }
        let optimizer = match kind {
            OptimizerArg::Sgd => Optimizer::sgd(
                self.momentum.unwrap_or(DEFAULT_SGD_MOMENTUM),
                self.nesterov,
                self.weight_decay.unwrap_or(DEFAULT_SGD_WEIGHT_DECAY),
            ),
            OptimizerArg::Adamw => {
                let Betas(beta1, beta2) = self.betas.unwrap_or(Betas(ADAMW_BETAS.0, ADAMW_BETAS.1));
                Optimizer::AdamW {
                    beta1,
                    beta2,
                    eps: self.eps.unwrap_or(ADAMW_EPS),
                    weight_decay: self.weight_decay.unwrap_or(ADAMW_WEIGHT_DECAY),
                }
            }
        };
        if let Err(e) = optimizer.validate() {
            bail!("--optimizer {}: {e}", kind.name());
        }
        Ok(optimizer)
    }
}

/// Training settings shared by `train` and `compare`.
#[derive(Args, Clone)]
pub(crate) struct TrainFlags {
    /// cifar10:DIR, cifar100:DIR, stl10:DIR, mnist:DIR or synthetic:N[:CxHxW[:CLASSES[:SEED]]].
    #[arg(long, value_name = "SPEC")]
    pub(crate) data: DataSpec,
    #[arg(long, value_name = "E", default_value_t = 10)]
    pub(crate) epochs: usize,
    /// Images per step (the last partial batch of an epoch is dropped).
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub(crate) batch: usize,
    #[command(flatten)]
    pub(crate) compiler: CompilerFlags,
    /// Base learning rate [default: 0.1 for sgd, 1e-3 for adamw].
    #[arg(long, value_name = "LR")]
    pub(crate) lr: Option<f64>,
    #[arg(long, value_enum, default_value = "cosine")]
    pub(crate) schedule: ScheduleArg,
    /// Linear warm-up over the first N steps.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) warmup: u64,
    /// Training augmentation.
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) augment: AugmentArg,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Seed of shuffling and augmentation.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub(crate) seed: u64,
}

impl TrainFlags {
    /// The request to train `model` (rewritten with `every`, or BP) into `out`.
    pub(crate) fn request(
        &self,
        model: PathBuf,
        every: Option<usize>,
        out: PathBuf,
    ) -> anyhow::Result<train::TrainRequest> {
        let lr = self
            .lr
            .unwrap_or_else(|| self.compiler.optimizer.default_lr());
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be a positive finite number (got {lr})");
        }
        Ok(train::TrainRequest {
            model,
            data: self.data.clone(),
            every,
            epochs: self.epochs,
            compile: self.compiler.options(self.batch)?,
            lr,
            schedule: self.schedule.into(),
            warmup: self.warmup,
            augment: matches!(self.augment, AugmentArg::CropFlip),
            engine: self.engine.engine(),
            device: self.engine.device(),
            seed: self.seed,
            out,
            resume: None,
            stop_after: None,
            stop: &INTERRUPTED,
        })
    }
}
