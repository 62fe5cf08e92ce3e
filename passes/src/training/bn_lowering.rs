//! Replaces every BatchNormalization (checked by [`super::batchnorm::running_statistics`]) by its
//! training-mode definition in elementary standard ops, and emits the running-statistics updates, written
//! to `next_name(stat)`. Runs after differentiation (see [`super::batchnorm`]).
//!
//! The lowering emits the very ops (and constants) by which the autodiff's rule recomputes the centred input
//! d = x − mean, 1/σ and the gain γ/σ from x, so common-subexpression elimination leaves one copy, shared by
//! the forward and the backward. The forward computes Y = d·(γ/σ) + β without forming x̂.
//!
//! The variance is computed as `(Σ d² + n·ε) / n`: tract fuses `Mul(d, d) → ReduceSum → Div(n)` into a
//! mean-of-squares reducer that computes in float32 even for float64 tensors.
//!
//! The running variance takes `Σ d² / (n − 1)` (unbiased, PyTorch's, the default) or `Σ d² / n` (biased, the
//! ONNX operator's), as [`RunningVariance`] says: the same number of ops either way, only the divisor differs.

use std::collections::HashMap;

use super::batchnorm::{values_per_channel, RunningVariance};
use super::builder::{Builder, A};
use super::optimizer::next_name;
use crate::analysis::shapes::{attr_float, TensorType};
use crate::ir::Graph;
use crate::pass::{Changed, Pass, PassError};

pub struct LowerBatchNormTraining<'a> {
    /// Names the new nodes and constants: the step model's one builder, so that names stay unique across
    /// everything it emits.
    pub builder: &'a mut Builder,
    /// Types of the forward values.
    pub types: &'a HashMap<String, TensorType>,
    /// Which batch variance updates the running variance.
    pub running_var: RunningVariance,
}

impl Pass for LowerBatchNormTraining<'_> {
    fn name(&self) -> &'static str {
        "lower-batchnorm-training"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let targets: Vec<_> = g
            .nodes()
            .filter(|(_, n)| n.op_type() == "BatchNormalization")
            .map(|(i, _)| i)
            .collect();
        let b = &mut *self.builder;
        let (first_node, first_constant) = (b.nodes.len(), b.initializers.len());
        for &i in &targets {
            let n = g.node(i).clone();
            let x = n.input[0].as_str();
            let xt = self.types.get(x).ok_or_else(|| PassError::Invalid {
                pass: "lower-batchnorm-training",
                message: format!("node '{}': input '{x}' has no type", n.name()),
            })?;
            let (dtype, shape) = (xt.dtype, xt.shape.clone());
            let eps = attr_float(&n, "epsilon").unwrap_or(1e-5) as f64;
            let momentum = attr_float(&n, "momentum").unwrap_or(0.9) as f64;
            let c = shape[1];
            let axes: Vec<i64> = std::iter::once(0).chain(2..shape.len() as i64).collect();
            let count = values_per_channel(&shape);
            let mut cs = vec![c as i64];
            cs.extend(vec![1; shape.len() - 2]);

            // d = x − mean and inv = 1/√(var + ε) exactly as `autodiff::rules::norm::centre` emits them, and
            // the gain γ·inv as the rule does (see the module docs).
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
            // n ≥ 2 for the unbiased variance (checked by `running_statistics`).
            let divisor = self.running_var.divisor(count);
            let var = if divisor == count {
                b.op("Div", &[&ss, &nn], vec![])
            } else {
                let nv = b.scalar(dtype, divisor as f64);
                b.op("Div", &[&ss, &nv], vec![])
            };
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
            // Its readers wait for the definition, added below, which writes the same outputs.
            g.remove_node(i);
        }
        for t in b.initializers.drain(first_constant..) {
            g.add_initializer(t);
        }
        g.add_nodes(b.nodes.drain(first_node..))?;
        Ok(Changed::from(!targets.is_empty()))
    }
}
