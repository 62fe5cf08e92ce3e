//! End-to-end tests of the diff: models built in memory, compared, and checked through both renderings.

use super::describe::{render_attr, summarize_tensor};
use super::digest::{hash_tensor_data, sha256_hex};
use super::text::human_bytes;
use super::*;
use crate::contract::{MANIFEST_KEY, PLAN_KEY};
use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::tensor_shape_proto::Dimension;
use crate::onnx::type_proto::Value as TypeValue;
use crate::onnx::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: (!name.is_empty()).then(|| name.to_owned()),
        op_type: Some(op.to_owned()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        f: Some(v),
        r#type: Some(AttributeType::Float as i32),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        ints: v.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

fn tensor_f32(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: vals.to_vec(),
        ..Default::default()
    }
}

fn tensor_f32_raw(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => DimValue::DimValue(v),
                Err(_) => DimValue::DimParam(d.to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// x -> Conv(w) -> Relu -> Add(bias) -> y
fn base_model() -> ModelProto {
    let mut conv = node("conv1", "Conv", &["x", "w"], &["c"]);
    conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
    let mut leaky = node("leaky", "LeakyRelu", &["c"], &["r"]);
    leaky.attribute.push(float_attr("alpha", 1.0));
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("pytorch".to_owned()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("main".to_owned()),
            node: vec![conv, leaky, node("add", "Add", &["r", "bias"], &["y"])],
            initializer: vec![
                tensor_f32("w", &[2, 3, 1, 1], &[0.5; 6]),
                tensor_f32("bias", &[2, 1, 1], &[0.0, 1.0]),
            ],
            input: vec![value_info("x", &["N", "3", "32", "32"])],
            output: vec![value_info("y", &["N", "2", "32", "32"])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn identical_models_are_equal() {
    let a = base_model();
    let d = diff_models(&a, &a.clone());
    assert!(d.is_empty());
    let text = d.to_string();
    assert!(text.starts_with("models are equal\n"), "{text}");
    assert!(text.contains("nodes: unchanged"));
    assert!(text.contains("op histogram: unchanged"));
    assert_eq!(d.to_json()["equal"], serde_json::Value::Bool(true));
    assert_eq!(d.summary, Summary::default());
}

#[test]
fn renamed_node_is_matched_by_position() {
    let a = base_model();
    let mut b = a.clone();
    graph_mut(&mut b).node[0].name = Some("conv1_renamed".to_owned());
    let d = diff_models(&a, &b);
    assert!(d.nodes.added.is_empty() && d.nodes.removed.is_empty());
    assert_eq!(d.nodes.changed.len(), 1);
    let c = &d.nodes.changed[0];
    assert_eq!(c.matched_by, MatchKind::Position);
    assert_eq!(
        c.details,
        vec![FieldChange::new(
            "name",
            Some("conv1".to_owned()),
            Some("conv1_renamed".to_owned())
        )]
    );
    let text = d.to_string();
    assert!(
        text.contains("~ Conv conv1_renamed (matched by position)\n"),
        "{text}"
    );
    assert!(
        text.contains("    name: conv1 -> conv1_renamed\n"),
        "{text}"
    );
}

#[test]
fn added_removed_and_changed_nodes() {
    let a = base_model();
    let mut b = a.clone();
    let g = graph_mut(&mut b);
    // Changed: the Conv's weight input and the LeakyRelu's alpha.
    g.node[0].input[1] = "w2".to_owned();
    g.node[1].attribute[0] = float_attr("alpha", 2.0);
    // Removed: the Add; added: a Mul and a Sub.
    g.node.remove(2);
    g.node.push(node("rl.mul_a", "Mul", &["r", "rl.a"], &["m"]));
    g.node.push(node("rl.sub", "Sub", &["m", "bias"], &["y"]));
    let d = diff_models(&a, &b);

    let added: Vec<&str> = d.nodes.added.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(added, ["rl.mul_a", "rl.sub"]);
    let removed: Vec<&str> = d.nodes.removed.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(removed, ["add"]);
    assert_eq!(d.nodes.changed.len(), 2);
    assert!(d
        .nodes
        .changed
        .iter()
        .all(|c| c.matched_by == MatchKind::Name));

    let text = d.to_string();
    assert!(
        text.contains("  + Mul rl.mul_a (r, rl.a) -> (m)\n"),
        "{text}"
    );
    assert!(text.contains("  - Add add (r, bias) -> (y)\n"), "{text}");
    assert!(
        text.contains("  ~ Conv conv1\n    input[1]: w -> w2\n"),
        "{text}"
    );
    assert!(
        text.contains("  ~ LeakyRelu leaky\n    attr alpha: 1.0 -> 2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("op histogram: Add -1, Mul +1, Sub +1\n"),
        "{text}"
    );
    assert!(text.contains("summary: nodes +2 -1 ~2;"), "{text}");

    let json = d.to_json();
    assert_eq!(json["equal"], false);
    assert_eq!(json["histogram"]["Mul"], 1);
    assert_eq!(
        json["nodes"]["changed"][0]["details"][0]["field"],
        "input[1]"
    );
}

#[test]
fn op_type_and_extra_inputs_of_named_node() {
    let a = base_model();
    let mut b = a.clone();
    let n = &mut graph_mut(&mut b).node[2];
    n.op_type = Some("Sum".to_owned());
    n.input.push("extra".to_owned());
    n.domain = Some("com.example".to_owned());
    let d = diff_models(&a, &b);
    assert_eq!(d.nodes.changed.len(), 1);
    let fields: Vec<&str> = d.nodes.changed[0]
        .details
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(fields, ["domain", "op_type", "input[2]"]);
    let text = d.to_string();
    assert!(text.contains("~ com.example::Sum add\n"), "{text}");
    assert!(text.contains("    domain: \"\" -> com.example\n"), "{text}");
    assert!(text.contains("    input[2]: (none) -> extra\n"), "{text}");
}

#[test]
fn initializer_content_change_is_detected_by_hash() {
    let a = base_model();
    let mut b = a.clone();
    graph_mut(&mut b).initializer[0] =
        tensor_f32("w", &[2, 3, 1, 1], &[0.5, 0.5, 0.5, 0.5, 0.5, 0.25]);
    let d = diff_models(&a, &b);
    assert_eq!(d.initializers.changed.len(), 1);
    let c = &d.initializers.changed[0];
    assert_eq!(c.what, ["content"]);
    assert_ne!(c.from.sha256, c.to.sha256);
    assert_eq!(c.from.bytes, Some(24));
    let text = d.to_string();
    assert!(
        text.contains(&format!(
            "  ~ w: float32[2,3,1,1] sha256:{} (24 B) -> float32[2,3,1,1] sha256:{} (24 B) [content]\n",
            &c.from.sha256[..8],
            &c.to.sha256[..8]
        )),
        "{text}"
    );

    // Same values stored in raw_data instead of float_data: same canonical content.
    let mut c2 = a.clone();
    graph_mut(&mut c2).initializer[0] = tensor_f32_raw("w", &[2, 3, 1, 1], &[0.5; 6]);
    assert!(diff_models(&a, &c2).is_empty());

    // Reshape only.
    let mut r = a.clone();
    graph_mut(&mut r).initializer[0].dims = vec![6];
    assert_eq!(diff_models(&a, &r).initializers.changed[0].what, ["shape"]);
}

#[test]
fn initializers_added_and_removed() {
    let a = base_model();
    let mut b = a.clone();
    let g = graph_mut(&mut b);
    g.initializer.remove(0);
    g.initializer.push(tensor_f32("rl.a", &[], &[1.0]));
    let d = diff_models(&a, &b);
    assert_eq!(
        d.summary.initializers,
        Counts {
            added: 1,
            removed: 1,
            changed: 0
        }
    );
    let text = d.to_string();
    let h = sha256_hex(&1.0f32.to_le_bytes());
    assert!(
        text.contains(&format!("  + rl.a: float32[] sha256:{} (4 B)\n", &h[..8])),
        "{text}"
    );
    assert!(text.contains("  - w: float32[2,3,1,1] sha256:"), "{text}");
}

#[test]
fn external_tensors_hash_their_location() {
    let ext = |offset: &str| TensorProto {
        name: Some("big".to_owned()),
        dims: vec![1024],
        data_type: Some(DataType::Float as i32),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            StringStringEntryProto::new("location", "weights.bin"),
            StringStringEntryProto::new("offset", offset),
            StringStringEntryProto::new("length", "4096"),
        ],
        ..Default::default()
    };
    let (h0, len) = hash_tensor_data(&ext("0"));
    assert_eq!(len, Some(4096));
    assert_eq!(h0, hash_tensor_data(&ext("0")).0);
    assert_ne!(h0, hash_tensor_data(&ext("4096")).0);
    assert_eq!(
        summarize_tensor(&ext("0")).body(),
        format!("float32[1024] sha256:{} (external, 4.0 KiB)", &h0[..8])
    );
}

#[test]
fn diff_is_deterministic() {
    let a = base_model();
    let mut b = a.clone();
    let g = graph_mut(&mut b);
    g.node.push(node("", "Mul", &["y", "s"], &["z"]));
    g.node.push(node("", "Mul", &["z", "s"], &["z2"]));
    g.initializer.push(tensor_f32("s", &[1], &[2.0]));
    g.initializer.push(tensor_f32("t", &[1], &[3.0]));
    b.metadata_props
        .push(StringStringEntryProto::new("k2", "v"));
    b.metadata_props
        .push(StringStringEntryProto::new("k1", "v"));
    let d1 = diff_models(&a, &b);
    let d2 = diff_models(&a, &b);
    assert_eq!(d1, d2);
    assert_eq!(d1.to_string(), d2.to_string());
    assert_eq!(d1.to_json().to_string(), d2.to_json().to_string());
    let keys: Vec<&str> = d1
        .metadata
        .model
        .added
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["k1", "k2"]);
}

#[test]
fn unnamed_nodes_match_by_position_within_op_type() {
    let mut a = base_model();
    graph_mut(&mut a).node = vec![
        node("", "Relu", &["x"], &["r0"]),
        node("", "Add", &["r0", "x"], &["a0"]),
        node("", "Relu", &["a0"], &["r1"]),
    ];
    let mut b = a.clone();
    let g = graph_mut(&mut b);
    g.node[2].input[0] = "r0".to_owned(); // second Relu changed
    g.node.insert(0, node("", "Mul", &["x", "x"], &["sq"])); // shifts all positions
    g.node.push(node("", "Relu", &["r1"], &["r2"])); // third Relu added
    let d = diff_models(&a, &b);
    assert_eq!(d.nodes.changed.len(), 1);
    let c = &d.nodes.changed[0];
    assert_eq!(
        (c.a_index, c.b_index, c.matched_by),
        (2, 3, MatchKind::Position)
    );
    assert_eq!(
        c.details,
        vec![FieldChange::new(
            "input[0]",
            Some("a0".into()),
            Some("r0".into())
        )]
    );
    let added: Vec<(usize, &str)> = d
        .nodes
        .added
        .iter()
        .map(|n| (n.index, n.op_type.as_str()))
        .collect();
    assert_eq!(added, [(0, "Mul"), (4, "Relu")]);
    assert!(d.nodes.removed.is_empty());
    let text = d.to_string();
    assert!(text.contains("  + Relu #4 (r1) -> (r2)\n"), "{text}");
    assert!(
        text.contains("  ~ Relu #3 (matched by position)\n    input[0]: a0 -> r0\n"),
        "{text}"
    );
}

#[test]
fn metadata_key_added_and_plan_hidden() {
    let a = base_model();
    let mut b = a.clone();
    let plan = format!("{{\"layers\":[{}]}}", "\"layer1.0.conv1\",".repeat(20));
    b.metadata_props
        .push(StringStringEntryProto::new(PLAN_KEY, plan.clone()));
    b.metadata_props
        .push(StringStringEntryProto::new("short", "yes"));
    graph_mut(&mut b)
        .metadata_props
        .push(StringStringEntryProto::new("g", "1"));
    let d = diff_models(&a, &b);
    assert_eq!(d.metadata.model.added.len(), 2);
    assert_eq!(
        d.summary.metadata,
        Counts {
            added: 3,
            removed: 0,
            changed: 0
        }
    );
    let text = d.to_string();
    let h = sha256_hex(plan.as_bytes());
    assert!(
        text.contains(&format!(
            "  + {PLAN_KEY} ({} bytes, sha256:{})\n",
            plan.len(),
            &h[..8]
        )),
        "{text}"
    );
    assert!(!text.contains("layer1.0.conv1"));
    assert!(text.contains("  + short: \"yes\"\n"), "{text}");
    assert!(text.contains("graph metadata:\n  + g: \"1\"\n"), "{text}");
    assert_eq!(
        d.to_json()["metadata"]["model"]["added"][0]["value"]["value"],
        serde_json::Value::Null
    );

    // A changed plan shows lengths and hashes only.
    let mut c = b.clone();
    c.metadata_props[0] = StringStringEntryProto::new(PLAN_KEY, "{}");
    let text = diff_models(&b, &c).to_string();
    assert!(
        text.contains(&format!("  ~ {PLAN_KEY}: ({} bytes, sha256:", plan.len())),
        "{text}"
    );
}

#[test]
fn contract_values_are_never_shown_inline() {
    let a = base_model();
    let mut b = a.clone();
    b.metadata_props
        .push(StringStringEntryProto::new(MANIFEST_KEY, "{}"));
    let text = diff_models(&a, &b).to_string();
    let h = sha256_hex(b"{}");
    assert!(
        text.contains(&format!(
            "  + {MANIFEST_KEY} (2 bytes, sha256:{})\n",
            &h[..8]
        )),
        "{text}"
    );
}

#[test]
fn header_opsets_and_io() {
    let a = base_model();
    let mut b = a.clone();
    b.ir_version = Some(9);
    b.producer_name = Some("rl-rewrite".to_owned());
    b.opset_import[0].version = Some(18);
    b.opset_import.push(OperatorSetIdProto {
        domain: Some("com.microsoft".to_owned()),
        version: Some(1),
    });
    let g = graph_mut(&mut b);
    g.input[0] = value_info("x", &["N", "3", "64", "64"]);
    g.output.push(value_info("aux", &["N"]));
    let d = diff_models(&a, &b);
    let text = d.to_string();
    assert!(
        text.contains("model:\n  ~ ir_version: 8 -> 9\n  ~ producer_name: pytorch -> rl-rewrite\n"),
        "{text}"
    );
    assert!(
        text.contains("opsets:\n  + com.microsoft 1\n  ~ ai.onnx 17 -> 18\n"),
        "{text}"
    );
    assert!(
        text.contains("inputs:\n  ~ x: float32[N,3,32,32] -> float32[N,3,64,64]\n"),
        "{text}"
    );
    assert!(text.contains("outputs:\n  + aux: float32[N]\n"), "{text}");
    assert!(d.outputs.order.is_none());
}

#[test]
fn attribute_rendering() {
    let g = GraphProto {
        node: vec![node("", "Relu", &["a"], &["b"])],
        ..Default::default()
    };
    let at = AttributeProto {
        name: Some("body".to_owned()),
        g: Some(Box::new(g)),
        ..Default::default()
    };
    assert!(render_attr(&at).starts_with("<graph 1 nodes sha256:"));
    let long = ints_attr("big", &(0..40).collect::<Vec<_>>());
    assert!(render_attr(&long).starts_with("[0,1,2,3,4,5,6,7,... +32 more; 40 items sha256:"));
    let s = AttributeProto {
        name: Some("mode".to_owned()),
        s: Some(b"NOTSET".to_vec()),
        ..Default::default()
    };
    assert_eq!(render_attr(&s), "\"NOTSET\"");
    assert_eq!(human_bytes(1234), "1.2 KiB");
    assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
}

#[test]
fn full_report_golden() {
    let a = base_model();
    let mut b = a.clone();
    b.producer_name = Some("rl-rewrite".to_owned());
    let plan = format!("{{\"layers\":[{}]}}", "\"layer1.0.conv1\",".repeat(20));
    b.metadata_props
        .push(StringStringEntryProto::new(PLAN_KEY, plan));
    let g = graph_mut(&mut b);
    g.initializer.remove(0);
    g.initializer.push(tensor_f32("rl.layer1.a", &[], &[1.0]));
    g.initializer
        .push(tensor_f32("bias", &[2, 1, 1], &[0.0, 2.0]));
    g.initializer.remove(0);
    g.node[0].input[1] = "rl.w".to_owned();
    g.node[1].attribute[0] = float_attr("alpha", 0.01);
    let mut mul = node(
        "rl.conv1.weight.mul_a",
        "Mul",
        &["rl.layer1.a", "w0"],
        &["rl.w"],
    );
    mul.attribute.push(ints_attr("dummy", &[1, 2]));
    g.node.insert(0, mul);
    g.node.push(node("", "Identity", &["y"], &["y2"]));
    let d = diff_models(&a, &b);
    assert_eq!(d.to_string(), GOLDEN);
    assert_eq!(d.to_json()["summary"]["initializers"]["changed"], 1);
}

const GOLDEN: &str = "\
models differ
model:
  ~ producer_name: pytorch -> rl-rewrite
opsets: unchanged
metadata:
  + replacement_learning.plan (353 bytes, sha256:a76a3a8f)
graph metadata: unchanged
inputs: unchanged
outputs: unchanged
initializers:
  + rl.layer1.a: float32[] sha256:e00e5eb9 (4 B)
  - w: float32[2,3,1,1] sha256:9ba54d57 (24 B)
  ~ bias: float32[2,1,1] sha256:22b6f43b (8 B) -> float32[2,1,1] sha256:3f710ac0 (8 B) [content]
nodes:
  + Mul rl.conv1.weight.mul_a (rl.layer1.a, w0) -> (rl.w) {dummy=[1,2]}
  + Identity #4 (y) -> (y2)
  ~ Conv conv1
    input[1]: w -> rl.w
  ~ LeakyRelu leaky
    attr alpha: 1.0 -> 0.01
other: unchanged
op histogram: Identity +1, Mul +1
summary: nodes +2 -0 ~2; initializers +1 -1 ~1; inputs +0 -0 ~0; outputs +0 -0 ~0; metadata +1 -0 ~0; opsets +0 -0 ~0
";
