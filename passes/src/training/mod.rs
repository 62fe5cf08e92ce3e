//! Training compilation: a forward model becomes a *training-step* model and an *eval* model, both in
//! standard ONNX ops, so any ONNX Runtime binding (or tract) can train it.
//!
//! # The step model ([`compile_train`])
//!
//! Inputs, in this order:
//! - the batch, under the model's own input name, with the batch dimension fixed to
//!   [`TrainOptions::batch_size`];
//! - `labels`: int64 `[N]` class indices;
//! - `lr`: float32 scalar, the learning rate (a schedule changes it between steps, no recompilation);
//! - every trainable parameter, under its initializer name (no longer an initializer);
//! - every optimizer state tensor (`p.momentum` for SGD with momentum; `p.exp_avg`, `p.exp_avg_sq` and the
//!   shared scalar `adamw.step` for AdamW), zeros before the first step.
//!
//! Outputs: `loss` (scalar of the model's float type: mean softmax cross-entropy, see [`loss`]), `correct`
//! (int64 scalar: correct predictions in the batch), then **`x.next` for each parameter and state input `x`**,
//! in input order: feed `x.next` back as `x` at the next step. [`TrainManifest`] lists all of them (it is also
//! stored in the step model's metadata under [`crate::contract::MANIFEST_KEY`]);
//! [`TrainingModels::initial`] holds their first values.
//!
//! Trainable parameters: every float initializer with more than one element that the model output depends on,
//! plus, for a model rewritten by Replacement Learning (plan in the metadata), each frozen unit's scalars `a`
//! and `b`. The replaced tensors are computed (`a·P_prev + b·P_next`), so gradients reach the neighbours through
//! the integration, unless [`TrainOptions::detach_neighbours`] stops them at the integration's `Mul`s.
//! Weight decay never applies to `a`/`b`, to tensors of rank ≤ 1 (biases) or to normalization scales and
//! biases, unless [`TrainOptions::decay_all`].
//!
//! BatchNormalization runs in training mode (batch statistics, written in elementary standard ops so that every engine runs it):
//! its running mean and variance are **state** inputs under their initializer names (not trainable, no weight
//! decay), after the optimizer state, and `x.next` is the running statistic updated with the node's momentum
//! (default 0.9): `x · momentum + batch · (1 − momentum)`. The batch variance of the running variance is the
//! unbiased one, `Σ(x − mean)²/(n − 1)` with n = N·∏spatial, as PyTorch updates it, unless
//! [`TrainOptions::bn_running_var`] asks for the ONNX operator's biased `Σ(x − mean)²/n`; the batch itself is
//! normalized with the biased variance either way, as in both frameworks.
//! Its scale and bias are trainable (no weight decay unless [`TrainOptions::decay_all`]). Dropout runs in
//! training mode (a fresh random mask each step, ratio from the node): ONNX Runtime runs the node itself; for tract,
//! which has no random Dropout kernel, the engine layer lowers it to standard random and mask ops.
//!
//! # The eval model
//!
//! The forward model at the same fixed batch size with inputs batch and `labels`, outputs the model's own
//! outputs plus `loss` and `correct`; BatchNormalization and Dropout run in inference mode (training-mode
//! exports are switched back); parameters and running statistics stay initializers, and each trainable
//! parameter and running statistic is also listed as a graph input, so trained values can be fed in place of
//! the stored defaults.

mod batchnorm;
mod bn_lowering;
mod bn_training_mode;
mod builder;
mod dropout_training;
mod error;
mod inference_mode;
pub mod loss;
pub mod optimizer;
mod step;

pub use batchnorm::RunningVariance;
pub use error::TrainError;
pub use optimizer::{next_name, AdamWNote, Optimizer, StateTensor, ADAMW_NOTE, ADAMW_STEP};
pub use step::{compile_train, ManifestTensor, TrainManifest, TrainOptions, TrainingModels};
