//! BatchNormalization in the step model: each node computes its training-mode definition (batch statistics
//! over N and the spatial axes; the output is normalized with the biased batch variance, as in both ONNX and
//! PyTorch), and its running statistics become state updated with the node's momentum (default 0.9), following
//! the ONNX definition `running = running · momentum + batch · (1 − momentum)` (PyTorch's momentum is
//! 1 − ONNX's). The batch variance that enters the running variance is the **unbiased** one by default, as
//! PyTorch computes it: `var_batch · n/(n − 1)` with n = N·∏spatial; [`RunningVariance::Biased`] follows the ONNX
//! operator's definition instead (the biased variance, the one that normalizes the batch).
//!
//! Two stages around differentiation. Before it, [`BatchNormTrainingMode`] sets `training_mode = 1`, so that
//! the autodiff's BatchNormalization rule emits the compact backward (five full-size ops and two reductions per
//! node; differentiating the elementary decomposition op by op gives over three times as many, much of the cost
//! of a step of a BatchNorm network on ONNX Runtime). After it, [`LowerBatchNormTraining`] replaces each
//! node by its definition in elementary standard ops: tract (an inference engine) runs BatchNormalization with
//! the given statistics whatever `training_mode` says, and only with constant scale and bias, which are inputs
//! in the step model.
//!
//! This file holds the analyses both stages rely on; [`running_statistics`] checks that every node can run
//! in training mode before either changes anything.
//!
//! [`BatchNormTrainingMode`]: super::bn_training_mode::BatchNormTrainingMode
//! [`LowerBatchNormTraining`]: super::bn_lowering::LowerBatchNormTraining

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::TrainError;
use crate::analysis::shapes::TensorType;
use crate::ir::{Graph, Producer};

/// Which batch variance updates a BatchNormalization's running variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunningVariance {
    /// `Σ(x − mean)² / (n − 1)`, as `torch.nn.BatchNorm*` (the models' PyTorch users trained with this).
    #[default]
    Unbiased,
    /// `Σ(x − mean)² / n`, as the ONNX operator's definition (and its reference implementation).
    Biased,
}

impl RunningVariance {
    /// The divisor of the sum of squared deviations over `n` values.
    pub fn divisor(self, n: usize) -> usize {
        match self {
            RunningVariance::Unbiased => n.saturating_sub(1),
            RunningVariance::Biased => n,
        }
    }

    /// What manifests written before the choice existed computed.
    pub fn onnx() -> RunningVariance {
        RunningVariance::Biased
    }
}

impl std::fmt::Display for RunningVariance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunningVariance::Unbiased => "unbiased",
            RunningVariance::Biased => "biased",
        })
    }
}

/// A running statistic of a BatchNormalization: its initializer name and type.
pub struct RunningStat {
    pub name: String,
    pub ty: TensorType,
}

/// Names of the running statistics (inputs 3 and 4) and of the scale/bias (inputs 1 and 2) of every
/// BatchNormalization node.
pub fn bn_tensors(g: &Graph) -> (Vec<String>, Vec<String>) {
    let (mut stats, mut params) = (Vec::new(), Vec::new());
    for (_, n) in g.nodes() {
        if n.op_type() == "BatchNormalization" {
            stats.extend(n.input.iter().skip(3).take(2).cloned());
            params.extend(n.input.iter().skip(1).take(2).cloned());
        }
    }
    (stats, params)
}

/// Checks that every BatchNormalization of `g` can run in training mode in the step model, and returns the
/// running statistics in node order (mean, var of each node). With [`RunningVariance::Unbiased`], a node
/// that averages over a single value per channel (n = N·∏spatial = 1, so n − 1 = 0) is refused, as PyTorch
/// refuses it.
pub fn running_statistics(
    g: &Graph,
    types: &HashMap<String, TensorType>,
    running_var: RunningVariance,
) -> Result<Vec<RunningStat>, TrainError> {
    let mut stats: Vec<RunningStat> = Vec::new();
    for (_, n) in g
        .nodes()
        .filter(|(_, n)| n.op_type() == "BatchNormalization")
    {
        let label = n.name();
        if n.input.len() != 5 || n.input.iter().any(String::is_empty) {
            return Err(TrainError::Unsupported(format!(
                "node '{label}': BatchNormalization needs its five inputs"
            )));
        }
        if n.output.iter().skip(3).any(|o| !o.is_empty()) {
            return Err(TrainError::Unsupported(format!(
                "node '{label}': BatchNormalization's saved mean/variance outputs (opset < 14) are not supported"
            )));
        }
        for s in &n.input[3..5] {
            if g.producer(s) != Some(Producer::Initializer) {
                return Err(TrainError::Unsupported(format!(
                    "node '{label}': the running statistic '{s}' must be an initializer"
                )));
            }
            if stats.iter().any(|r| &r.name == s) {
                return Err(TrainError::Unsupported(format!(
                    "node '{label}': the running statistic '{s}' is shared with another BatchNormalization"
                )));
            }
            let ty = types.get(s.as_str()).cloned().ok_or_else(|| {
                TrainError::Unsupported(format!("node '{label}': '{s}' has no type"))
            })?;
            stats.push(RunningStat {
                name: s.clone(),
                ty,
            });
        }
        let x = n.input[0].as_str();
        let xt = types.get(x).ok_or_else(|| {
            TrainError::Unsupported(format!("node '{label}': input '{x}' has no type"))
        })?;
        if xt.shape.len() < 2 {
            return Err(TrainError::Unsupported(format!(
                "node '{label}': BatchNormalization input of rank {} (needs [N, C, ...])",
                xt.shape.len()
            )));
        }
        let count = values_per_channel(&xt.shape);
        if running_var == RunningVariance::Unbiased && count < 2 {
            return Err(TrainError::Unsupported(format!(
                "node '{label}': BatchNormalization input '{x}' of shape {:?} has {count} value per channel in a \
                 batch, and the unbiased running variance divides by n − 1 = 0 (PyTorch refuses this too: \
                 \"Expected more than 1 value per channel when training\"); train with a batch size of at least 2",
                xt.shape
            )));
        }
    }
    Ok(stats)
}

/// n = N·∏spatial: the values of one channel that a BatchNormalization of input shape `shape` ([N, C, ...])
/// averages over.
pub fn values_per_channel(shape: &[usize]) -> usize {
    shape
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != 1)
        .map(|(_, &d)| d)
        .product()
}
