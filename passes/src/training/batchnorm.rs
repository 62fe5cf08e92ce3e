//! BatchNormalization in the step model: each node computes its training-mode definition (batch statistics
//! over N and the spatial axes, biased variance, as in the ONNX reference), and its running statistics become
//! state updated with the node's momentum (default 0.9), following the ONNX definition
//! `running = running · momentum + batch · (1 − momentum)`.
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

use super::error::TrainError;
use crate::analysis::shapes::TensorType;
use crate::ir::{Graph, Producer};

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
/// running statistics in node order (mean, var of each node).
pub fn running_statistics(
    g: &Graph,
    types: &HashMap<String, TensorType>,
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
    }
    Ok(stats)
}
