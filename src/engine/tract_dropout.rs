//! tract runs Dropout in inference mode only (its kernel refuses to drop at random). A training-mode Dropout
//! with a non-zero ratio, as the step models of exported training graphs carry, is lowered for tract to the same
//! computation in ops it runs:
//!
//! ```text
//! keep = Not(Less(RandomUniformLike(X), ratio))      (the mask output, kept with probability 1 − ratio)
//! Y    = X · Cast(keep) · 1 / (1 − ratio)
//! ```
//!
//! The draw is tract's own: the same distribution as ONNX Runtime's kernel, not the same numbers. With a seed,
//! every run of the prepared model draws the same numbers (what `run` and `check` need to be repeatable);
//! without one, each run draws afresh (what training needs).

use rl_passes::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto,
    NodeProto, TensorProto,
};
use rl_passes::tensor::{f32_values, scalar};

/// The value of a constant scalar input: an initializer or a Constant node's `value`.
fn constant<'a>(g: &'a GraphProto, name: &str) -> Option<&'a TensorProto> {
    g.initializer.iter().find(|t| t.name() == name).or_else(|| {
        g.node
            .iter()
            .find(|n| n.op_type() == "Constant" && n.output.first().is_some_and(|o| o == name))
            .and_then(|n| n.attribute.iter().find(|a| a.name() == "value"))
            .and_then(|a| a.t.as_ref())
    })
}

fn constant_bool(g: &GraphProto, name: &str) -> Option<bool> {
    let t = constant(g, name)?;
    if t.data_type() != DataType::Bool as i32 {
        return None;
    }
    match t.raw_data.as_deref() {
        Some([b, ..]) => Some(*b != 0),
        _ => t.int32_data.first().map(|&b| b != 0),
    }
}

/// The ratio of a Dropout node, when it is known: its input, its attribute (opset < 12), or the default 0.5.
fn ratio(g: &GraphProto, node: &NodeProto) -> Option<f32> {
    match node.input.get(1).filter(|r| !r.is_empty()) {
        Some(r) => f32_values(constant(g, r)?)?.first().copied(),
        None => Some(
            node.attribute
                .iter()
                .find(|a| a.name() == "ratio")
                .and_then(|a| a.f)
                .unwrap_or(0.5),
        ),
    }
}

/// A node of the default domain with one output.
pub(super) fn op(op_type: &str, name: String, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        name: Some(name),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    }
}

pub(super) fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(value),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

/// The nodes computing the training-mode Dropout `node` (float32 data) with drop probability `ratio`.
fn lowered(node: &NodeProto, ratio: f32, k: usize, seed: Option<u64>) -> Vec<NodeProto> {
    let base = format!("{}/dropout{k}", node.name());
    // tract 0.23 tells RandomUniformLike from RandomUniform by the node's name.
    let v = |what: &str| format!("{base}/{what}");
    let x = node.input[0].as_str();
    let mask = node
        .output
        .get(1)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| v("keep"));
    let mut random = op(
        "RandomUniformLike",
        v("RandomUniformLike"),
        &[x],
        &v("draw"),
    );
    random
        .attribute
        .push(int_attribute("dtype", DataType::Float as i64));
    if let Some(seed) = seed {
        // ONNX seeds are floats; each Dropout draws from its own stream.
        random.attribute.push(AttributeProto {
            name: Some("seed".into()),
            f: Some((seed.wrapping_add(k as u64) % (1 << 24)) as f32),
            r#type: Some(AttributeType::Float as i32),
            ..Default::default()
        });
    }
    let mut cast = op("Cast", v("Cast"), &[&mask], &v("keep_f"));
    cast.attribute
        .push(int_attribute("to", DataType::Float as i64));
    let mut ratio_node = op("Constant", v("ratio"), &[], &v("ratio"));
    let mut scale_node = op("Constant", v("scale"), &[], &v("scale"));
    for (n, value) in [
        (&mut ratio_node, ratio),
        (&mut scale_node, 1.0 / (1.0 - ratio)),
    ] {
        n.attribute.push(AttributeProto {
            name: Some("value".into()),
            t: Some(scalar("", DataType::Float as i32, f64::from(value))),
            r#type: Some(AttributeType::Tensor as i32),
            ..Default::default()
        });
    }
    vec![
        random,
        ratio_node,
        op("Less", v("Less"), &[&v("draw"), &v("ratio")], &v("dropped")),
        op("Not", v("Not"), &[&v("dropped")], &mask),
        cast,
        op("Mul", v("Mul"), &[x, &v("keep_f")], &v("kept")),
        scale_node,
        op(
            "Mul",
            v("Scale"),
            &[&v("kept"), &v("scale")],
            &node.output[0],
        ),
    ]
}

/// Lowers every training-mode Dropout with a known non-zero ratio (see the module doc); whether any was.
pub fn lower_training_dropout(model: &mut ModelProto, seed: Option<u64>) -> bool {
    let Some(g) = model.graph.as_mut() else {
        return false;
    };
    let mut changed = false;
    let mut nodes = Vec::with_capacity(g.node.len());
    for (k, node) in g.node.iter().enumerate() {
        let training = node.op_type() == "Dropout"
            && node.domain().is_empty()
            && node
                .input
                .get(2)
                .filter(|t| !t.is_empty())
                .and_then(|t| constant_bool(g, t))
                == Some(true);
        match ratio(g, node).filter(|&r| training && r > 0.0 && r < 1.0) {
            Some(r) => {
                nodes.extend(lowered(node, r, k, seed));
                changed = true;
            }
            None => nodes.push(node.clone()),
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
    use rl_passes::testing::{bool_tensor, node, ModelBuilder, NodeExt};

    const N: usize = 4000;

    /// `y, mask = Dropout(x, 0.25, training_mode=true)` on float32 `x` of N values.
    fn dropout_model() -> ModelProto {
        ModelBuilder::unnamed()
            .node(node("Dropout", &["x", "ratio", "training"], &["y", "mask"]).named("drop"))
            .initializer(scalar("ratio", DataType::Float as i32, 0.25))
            .initializer(bool_tensor("training", &[], &[true]))
            .input("x", DataType::Float, [N])
            .output("y", DataType::Float, [N])
            .output("mask", DataType::Bool, [N])
            .build()
    }

    #[test]
    fn training_dropout_keeps_three_quarters_scaled_and_repeats_when_seeded() {
        let model = dropout_model();
        let mut lowered = model.clone();
        assert!(lower_training_dropout(&mut lowered, None));
        let ops: Vec<&str> = lowered
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type())
            .collect();
        assert!(
            !ops.contains(&"Dropout") && ops.contains(&"RandomUniformLike"),
            "{ops:?}"
        );

        let facts = [InputFact {
            name: "x".into(),
            element_type: ElementType::F32,
            shape: vec![N],
        }];
        let engine = TractEngine::new(&model, &facts).unwrap();
        let x = [("x".to_owned(), HostTensor::f32(vec![N], vec![1.0; N]))];
        let out = engine.run(&x).unwrap();
        let (y, mask) = (out[0].1.as_f32().unwrap(), out[1].1.as_i64().unwrap());
        let kept = mask.iter().filter(|&&m| m != 0).count() as f64 / N as f64;
        // 4000 draws: the kept fraction's standard deviation is under 0.007.
        assert!((kept - 0.75).abs() < 0.04, "kept {kept}");
        for (&v, &m) in y.iter().zip(mask) {
            let expected = if m != 0 { 1.0 / 0.75 } else { 0.0 };
            assert!((v - expected).abs() < 1e-6, "{v} with mask {m}");
        }
        assert_eq!(engine.run(&x).unwrap(), out, "seeded draws repeat");
    }

    #[test]
    fn inference_dropout_and_zero_ratio_are_left_alone() {
        let mut model = dropout_model();
        let g = model.graph.as_mut().unwrap();
        g.initializer[0] = scalar("ratio", DataType::Float as i32, 0.0);
        assert!(!lower_training_dropout(&mut model, None));
        let g = model.graph.as_mut().unwrap();
        g.initializer[0] = scalar("ratio", DataType::Float as i32, 0.5);
        g.initializer[1].raw_data = Some(vec![0u8].into());
        assert!(!lower_training_dropout(&mut model, None));
    }
}
