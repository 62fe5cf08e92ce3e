//! BatchNormalization in the step model: each node computes its training-mode definition (batch statistics
//! over N and the spatial axes, biased variance, as in the ONNX reference), and its running statistics become
//! state updated with the node's momentum (default 0.9), following the ONNX definition
//! `running = running · momentum + batch · (1 − momentum)`.
//!
//! Two stages around differentiation. Before it, [`batchnorm_training_mode`] sets `training_mode = 1`, so that
//! the autodiff's BatchNormalization rule emits the compact backward (five full-size ops and two reductions per
//! node; differentiating the elementary decomposition op by op gives over three times as many, much of the cost
//! of a step of a BatchNorm network on ONNX Runtime). After it, [`lower_batchnorm_training`] replaces each
//! node by its definition in elementary standard ops: tract (an inference engine) runs BatchNormalization with
//! the given statistics whatever `training_mode` says, and only with constant scale and bias, which are inputs
//! in the step model. The lowering emits the very ops (and constants) by which the rule recomputes the centred
//! input d = x − mean, 1/σ and the gain γ/σ from x, so common-subexpression elimination leaves one copy, shared by
//! the forward and the backward. The forward computes Y = d·(γ/σ) + β without forming x̂.
//!
//! The variance is computed as `(Σ d² + n·ε) / n`: tract fuses `Mul(d, d) → ReduceSum → Div(n)` into a
//! mean-of-squares reducer that computes in float32 even for float64 tensors.

use std::collections::HashMap;

use super::builder::{Builder, A};
use super::optimizer::next_name;
use super::step::TrainError;
use crate::analysis::shapes::{attr_float, TensorType};
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
    for n in g.dag.node_weights() {
        if n.op_type() == "BatchNormalization" {
            stats.extend(n.input.iter().skip(3).take(2).cloned());
            params.extend(n.input.iter().skip(1).take(2).cloned());
        }
    }
    (stats, params)
}

/// Checks that every BatchNormalization of `g` can run in training mode in the step model and sets its
/// `training_mode` to 1, for differentiation. Returns the running statistics in node order (mean, var of each
/// node). [`lower_batchnorm_training`] replaces the nodes afterwards.
pub fn batchnorm_training_mode(
    g: &mut Graph,
    types: &HashMap<String, TensorType>,
) -> Result<Vec<RunningStat>, TrainError> {
    let targets: Vec<_> = g
        .dag
        .node_indices()
        .filter(|&i| g.dag[i].op_type() == "BatchNormalization")
        .collect();
    let mut stats: Vec<RunningStat> = Vec::new();
    for i in targets {
        let n = &g.dag[i];
        let label = n.name().to_owned();
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
        let n = &mut g.dag[i];
        n.attribute.retain(|a| a.name() != "training_mode");
        n.attribute.push(A::Int(1).into_proto("training_mode"));
    }
    Ok(stats)
}

/// Replaces every BatchNormalization of `g` (checked by [`batchnorm_training_mode`]) by its training-mode
/// definition and emits the running-statistics updates, written to `stat.next`. Call after differentiation:
/// the nodes and constants go to `b`, the BatchNormalization nodes leave `g` at once.
pub fn lower_batchnorm_training(
    g: &mut Graph,
    b: &mut Builder,
    types: &HashMap<String, TensorType>,
) -> Result<(), TrainError> {
    let targets: Vec<_> = g
        .dag
        .node_indices()
        .filter(|&i| g.dag[i].op_type() == "BatchNormalization")
        .collect();
    for i in targets {
        let n = g.dag[i].clone();
        let x = n.input[0].as_str();
        let xt = types.get(x).ok_or_else(|| {
            TrainError::Unsupported(format!("node '{}': input '{x}' has no type", n.name()))
        })?;
        let (dtype, shape) = (xt.dtype, xt.shape.clone());
        let eps = attr_float(&n, "epsilon").unwrap_or(1e-5) as f64;
        let momentum = attr_float(&n, "momentum").unwrap_or(0.9) as f64;
        let c = shape[1];
        let axes: Vec<i64> = std::iter::once(0).chain(2..shape.len() as i64).collect();
        let count: usize = axes.iter().map(|&a| shape[a as usize]).product();
        let mut cs = vec![c as i64];
        cs.extend(vec![1; shape.len() - 2]);

        // d = x − mean and inv = 1/√(var + ε) exactly as `autodiff::rules::norm::centre` emits them, and the
        // gain γ·inv as the rule does (see the module docs).
        let axes_name = b.const_i64(&[axes.len()], &axes);
        let sum = b.op("ReduceSum", &[x, &axes_name], vec![("keepdims", A::Int(1))]);
        let nn = b.scalar(dtype, count as f64);
        let mean = b.op("Div", &[&sum, &nn], vec![]);
        let d = b.op("Sub", &[x, &mean], vec![]);
        let sq = b.op("Mul", &[&d, &d], vec![]);
        let ss = b.op(
            "ReduceSum",
            &[&sq, &axes_name],
            vec![("keepdims", A::Int(1))],
        );
        let neps = b.scalar(dtype, count as f64 * eps);
        let sse = b.op("Add", &[&ss, &neps], vec![]);
        let ve = b.op("Div", &[&sse, &nn], vec![]);
        let sd = b.op("Sqrt", &[&ve], vec![]);
        let one = b.scalar(dtype, 1.0);
        let inv = b.op("Div", &[&one, &sd], vec![]);
        let cs_name = b.const_i64(&[cs.len()], &cs);
        let s = b.op("Reshape", &[&n.input[1], &cs_name], vec![]);
        let bias = b.op("Reshape", &[&n.input[2], &cs_name], vec![]);
        // Y = d·(γ·inv) + β: x̂ itself is never formed (the backward works from d as well).
        let gain = b.op("Mul", &[&s, &inv], vec![]);
        let scaled = b.op("Mul", &[&d, &gain], vec![]);
        b.op_to("Add", &[&scaled, &bias], vec![], Some(&n.output[0]));

        // Running statistics (not on the loss's path: no gradient flows through them).
        let var = b.op("Div", &[&ss, &nn], vec![]);
        let keep = b.scalar(dtype, momentum);
        let take = b.scalar(dtype, 1.0 - momentum);
        let flat = b.const_i64(&[1], &[c as i64]);
        for (k, (stat, batch)) in [(&n.input[3], mean), (&n.input[4], var)]
            .into_iter()
            .enumerate()
        {
            let bf = b.op("Reshape", &[&batch, &flat], vec![]);
            let old = b.op("Mul", &[stat, &keep], vec![]);
            let new = b.op("Mul", &[&bf, &take], vec![]);
            let next = next_name(stat);
            b.op_to("Add", &[&old, &new], vec![], Some(&next));
            if let Some(o) = n.output.get(k + 1).filter(|o| !o.is_empty()) {
                b.op_to("Identity", &[&next], vec![], Some(o));
            }
        }
        g.remove_node(i);
    }
    Ok(())
}

/// The eval model's BatchNormalization and Dropout run in inference mode: `training_mode` removed, only the
/// first output kept (the running-statistics and mask outputs of training-mode exports are dropped).
pub fn inference_mode(g: &mut Graph) -> Result<(), TrainError> {
    let consumers = g.consumers();
    let targets: Vec<_> = g
        .dag
        .node_indices()
        .filter(|&i| matches!(g.dag[i].op_type(), "BatchNormalization" | "Dropout"))
        .collect();
    for i in targets {
        let n = &mut g.dag[i];
        for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if consumers.get(o).is_some_and(|c| !c.is_empty()) {
                return Err(TrainError::Unsupported(format!(
                    "node '{}': its training-mode output '{o}' is read by other nodes",
                    n.name()
                )));
            }
        }
        n.output.truncate(1);
        if n.op_type() == "BatchNormalization" {
            n.attribute.retain(|a| a.name() != "training_mode");
        } else {
            n.input.truncate(2);
        }
    }
    g.relink()?;
    Ok(())
}

/// Every Dropout of the step model runs in training mode: its `training_mode` input becomes a constant `true`
/// (one shared boolean initializer named `name`) and it gets a mask output when it has none (the gradient
/// rule multiplies by the mask). The ratio stays the node's own (default 0.5).
pub fn dropout_training(g: &mut Graph, name: &str) -> Result<usize, TrainError> {
    let targets: Vec<_> = g
        .dag
        .node_indices()
        .filter(|&i| g.dag[i].op_type() == "Dropout")
        .collect();
    if targets.is_empty() {
        return Ok(0);
    }
    if g.producer(name).is_some() {
        return Err(TrainError::NameClash(name.to_owned()));
    }
    g.add_initializer(crate::onnx::TensorProto {
        name: Some(name.to_owned()),
        data_type: Some(crate::onnx::tensor_proto::DataType::Bool as i32),
        raw_data: Some(bytes::Bytes::from(vec![1u8])),
        ..Default::default()
    });
    for &i in &targets {
        let mask = if g.dag[i].output.get(1).is_some_and(|m| !m.is_empty()) {
            None
        } else {
            Some(g.fresh_name(&format!("{}.mask", g.dag[i].output[0])))
        };
        let n = &mut g.dag[i];
        n.input.resize(2, String::new());
        n.input.push(name.to_owned());
        if let Some(m) = mask {
            n.output.resize(1, String::new());
            n.output.push(m);
        }
    }
    g.relink()?;
    Ok(targets.len())
}
