//! tract 0.23 computes LogSoftmax as the logarithm of its softmax, so a log-probability below about −88 (the
//! smallest float32 exponent) becomes −∞: logits `[1000, 0]` give `[0, −∞]` instead of `[0, −1000]`. In a
//! training step the loss then multiplies −∞ by a zero target and the step turns NaN where ONNX Runtime and
//! PyTorch stay finite. For tract every LogSoftmax (opset ≥ 13, where `axis` names one axis) is lowered to the
//! shifted form, which is finite for every finite input:
//!
//! ```text
//! Z = X − ReduceMax(X, axis)          (keepdims)
//! Y = Z − Log(ReduceSum(Exp(Z), axis))
//! ```

use rl_passes::onnx::{attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto};

use super::tract_dropout::{int_attribute, op};

/// The model's version of the default ONNX domain.
fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .and_then(|o| o.version)
}

fn ints_attribute(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: values,
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

/// The nodes computing `node` (a LogSoftmax over `axis`) in the shifted form; `opset` decides whether the
/// reductions take their axes as an attribute (ReduceMax before 18) or as an input.
fn lowered(node: &NodeProto, k: usize, opset: i64) -> Vec<NodeProto> {
    let base = format!("{}/log_softmax{k}", node.name());
    let v = |what: &str| format!("{base}/{what}");
    let x = node.input[0].as_str();
    let axis = node
        .attribute
        .iter()
        .find(|a| a.name() == "axis")
        .and_then(|a| a.i)
        .unwrap_or(-1);
    let keepdims = int_attribute("keepdims", 1);
    let mut axes_const = op("Constant", v("axes"), &[], &v("axes"));
    axes_const.attribute.push(AttributeProto {
        name: Some("value".into()),
        t: Some(rl_passes::onnx::TensorProto {
            dims: vec![1],
            data_type: Some(rl_passes::onnx::tensor_proto::DataType::Int64 as i32),
            int64_data: vec![axis],
            ..Default::default()
        }),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    });
    let mut max = if opset >= 18 {
        op("ReduceMax", v("ReduceMax"), &[x, &v("axes")], &v("max"))
    } else {
        let mut n = op("ReduceMax", v("ReduceMax"), &[x], &v("max"));
        n.attribute.push(ints_attribute("axes", vec![axis]));
        n
    };
    max.attribute.push(keepdims.clone());
    let mut sum = op(
        "ReduceSum",
        v("ReduceSum"),
        &[&v("exp"), &v("axes")],
        &v("sum"),
    );
    sum.attribute.push(keepdims);
    vec![
        axes_const,
        max,
        op("Sub", v("Shift"), &[x, &v("max")], &v("shifted")),
        op("Exp", v("Exp"), &[&v("shifted")], &v("exp")),
        sum,
        op("Log", v("Log"), &[&v("sum")], &v("log_sum")),
        op(
            "Sub",
            v("Sub"),
            &[&v("shifted"), &v("log_sum")],
            &node.output[0],
        ),
    ]
}

/// Lowers every LogSoftmax of the default domain (see the module doc); whether any was. Models below opset 13
/// (LogSoftmax over a flattened 2-D view) are left as they are.
pub fn lower_log_softmax(model: &mut ModelProto) -> bool {
    let Some(opset) = default_opset(model).filter(|&v| v >= 13) else {
        return false;
    };
    let Some(g) = model.graph.as_mut() else {
        return false;
    };
    let mut changed = false;
    let mut nodes = Vec::with_capacity(g.node.len());
    for (k, node) in g.node.iter().enumerate() {
        if node.op_type() == "LogSoftmax" && node.domain().is_empty() && node.input.len() == 1 {
            nodes.extend(lowered(node, k, opset));
            changed = true;
        } else {
            nodes.push(node.clone());
        }
    }
    g.node = nodes;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tract::TractEngine;
    use crate::engine::{ElementType, Engine, HostTensor, InputFact};
    use rl_passes::onnx::tensor_proto::DataType;
    use rl_passes::testing::{node, ModelBuilder, NodeExt};

    fn log_softmax_model(opset: i64, axis: i64) -> ModelProto {
        let mut n = node("LogSoftmax", &["x"], &["y"]).named("ls");
        n.attribute.push(int_attribute("axis", axis));
        ModelBuilder::unnamed()
            .opset("", opset)
            .node(n)
            .input("x", DataType::Float, [2, 3])
            .output("y", DataType::Float, [2, 3])
            .build()
    }

    fn run(model: &ModelProto, x: Vec<f32>) -> Vec<f32> {
        let facts = [InputFact {
            name: "x".into(),
            element_type: ElementType::F32,
            shape: vec![2, 3],
        }];
        let engine = TractEngine::new(model, &facts).unwrap();
        let out = engine
            .run(&[("x".to_owned(), HostTensor::f32(vec![2, 3], x))])
            .unwrap();
        out[0].1.as_f32().unwrap().to_vec()
    }

    /// The float64 log-softmax of each row of a 2×3 matrix.
    fn reference(x: &[f32], axis: i64) -> Vec<f32> {
        let at = |r: usize, c: usize| f64::from(x[r * 3 + c]);
        let mut out = vec![0.0; 6];
        if axis == 1 || axis == -1 {
            for r in 0..2 {
                let m = (0..3).map(|c| at(r, c)).fold(f64::MIN, f64::max);
                let lse = (0..3).map(|c| (at(r, c) - m).exp()).sum::<f64>().ln() + m;
                for c in 0..3 {
                    out[r * 3 + c] = (at(r, c) - lse) as f32;
                }
            }
        } else {
            for c in 0..3 {
                let m = at(0, c).max(at(1, c));
                let lse = (0..2).map(|r| (at(r, c) - m).exp()).sum::<f64>().ln() + m;
                for r in 0..2 {
                    out[r * 3 + c] = (at(r, c) - lse) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn extreme_logits_stay_finite_on_every_opset_and_axis() {
        let x = vec![1000.0, 0.0, -1000.0, 90.0, 0.0, -10.0];
        for (opset, axis) in [(13, -1), (13, 0), (17, 1), (18, -1), (21, 0)] {
            let model = log_softmax_model(opset, axis);
            let mut lowered = model.clone();
            assert!(lower_log_softmax(&mut lowered));
            // TractEngine applies the lowering itself: both must give the float64 reference.
            for m in [&model, &lowered] {
                let y = run(m, x.clone());
                let want = reference(&x, axis);
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        a.is_finite() && (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "opset {opset} axis {axis}: {y:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn models_below_opset_13_are_left_alone() {
        let mut model = log_softmax_model(12, 1);
        assert!(!lower_log_softmax(&mut model));
    }
}
