//! Softmax cross-entropy over int64 class labels, with optional label smoothing, and the count of correct
//! predictions, in standard ops the autodiff differentiates.
//!
//! With logits `[N, K]`, `logp = LogSoftmax(logits, axis 1)` and the target distribution
//! `T = (1−ε)·onehot(y) + ε/K` (built from the labels: `Equal(Reshape(y, [N,1]), [[0..K)])` cast to float, so
//! no gradient flows into it), `loss = −(1/N)·Σ_{n,k} T[n,k]·logp[n,k]`
//! `= mean_n(−(1−ε)·logp[n, y_n] − ε/K·Σ_k logp[n,k])`.
//! `correct = ReduceSum(Cast(Equal(ArgMax(logits, axis 1), y), int64))`, an int64 scalar.

use super::builder::{Builder, A};
use crate::onnx::tensor_proto::DataType;

/// Emits the loss into `out_loss` and the correct count into `out_correct`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_cross_entropy(
    b: &mut Builder,
    logits: &str,
    labels: &str,
    n: usize,
    k: usize,
    dtype: i32,
    smoothing: f64,
    out_loss: &str,
    out_correct: &str,
) {
    let logp = b.op("LogSoftmax", &[logits], vec![("axis", A::Int(1))]);
    let col = b.const_i64(&[2], &[n as i64, 1]);
    let y = b.op("Reshape", &[labels, &col], vec![]);
    let classes: Vec<i64> = (0..k as i64).collect();
    let classes = b.const_i64(&[1, k], &classes);
    let hit = b.op("Equal", &[&y, &classes], vec![]);
    let onehot = b.op("Cast", &[&hit], vec![("to", A::Int(dtype as i64))]);
    let target = if smoothing != 0.0 {
        let keep = b.scalar(dtype, 1.0 - smoothing);
        let spread = b.scalar(dtype, smoothing / k as f64);
        let scaled = b.op("Mul", &[&onehot, &keep], vec![]);
        b.op("Add", &[&scaled, &spread], vec![])
    } else {
        onehot
    };
    let prod = b.op("Mul", &[&logp, &target], vec![]);
    let axes = b.const_i64(&[2], &[0, 1]);
    let total = b.op("ReduceSum", &[&prod, &axes], vec![("keepdims", A::Int(0))]);
    let scale = b.scalar(dtype, -1.0 / n as f64);
    b.op_to("Mul", &[&total, &scale], vec![], Some(out_loss));

    let pred = b.op(
        "ArgMax",
        &[logits],
        vec![("axis", A::Int(1)), ("keepdims", A::Int(0))],
    );
    let eq = b.op("Equal", &[&pred, labels], vec![]);
    let eqi = b.op("Cast", &[&eq], vec![("to", A::Int(DataType::Int64 as i64))]);
    let axis0 = b.const_i64(&[1], &[0]);
    b.op_to(
        "ReduceSum",
        &[&eqi, &axis0],
        vec![("keepdims", A::Int(0))],
        Some(out_correct),
    );
}
