//! Finite-difference checks of every gradient rule, in double precision, with tract as the engine.
//!
//! Each case builds a small float64 graph around one op, reduces its output to a scalar loss with a fixed
//! random weighting (`loss = ReduceSum(Mul(y, R))`), differentiates it with respect to every float64 graph
//! input, runs forward and backward in tract, and compares each analytic gradient element with a central
//! difference (eps 1e-6): |a − n| ≤ 1e-6 · max(1, |a|, |n|).

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use rl_passes::analysis::shapes::{infer, infer_shapes, Inference};
use rl_passes::autodiff::differentiate;
use rl_passes::ir::Graph;
use rl_passes::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::*;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;
/// Elements checked per input (all of them when the input is smaller).
const MAX_CHECKED: usize = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

enum A {
    I(i64),
    Is(Vec<i64>),
    F(f32),
    S(&'static str),
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, A)>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("fwd/{op}/{}", outputs[0])),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs
            .into_iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: Some(n.into()),
                    ..Default::default()
                };
                let t = match a {
                    A::I(i) => {
                        p.i = Some(i);
                        AttributeType::Int
                    }
                    A::Is(v) => {
                        p.ints = v;
                        AttributeType::Ints
                    }
                    A::F(f) => {
                        p.f = Some(f);
                        AttributeType::Float
                    }
                    A::S(s) => {
                        p.s = Some(s.as_bytes().to_vec());
                        AttributeType::String
                    }
                };
                p.r#type = Some(t as i32);
                p
            })
            .collect(),
        ..Default::default()
    }
}

fn i64_init(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

fn f64_init(name: &str, dims: &[usize], values: &[f64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Double as i32),
        raw_data: Some(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

fn value_info(name: &str, dtype: DataType, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One op under test.
struct Case {
    name: String,
    /// float64 inputs: name, shape, sampling range.
    inputs: Vec<(&'static str, Vec<usize>, f64, f64)>,
    /// Integer graph inputs (indices): name, shape, values.
    int_inputs: Vec<(&'static str, Vec<usize>, Vec<i64>)>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
    output: &'static str,
}

impl Case {
    fn new(name: impl Into<String>, output: &'static str) -> Case {
        Case {
            name: name.into(),
            inputs: vec![],
            int_inputs: vec![],
            inits: vec![],
            nodes: vec![],
            output,
        }
    }
    fn input(mut self, name: &'static str, shape: &[usize]) -> Case {
        self.inputs.push((name, shape.to_vec(), -1.0, 1.0));
        self
    }
    fn input_in(mut self, name: &'static str, shape: &[usize], lo: f64, hi: f64) -> Case {
        self.inputs.push((name, shape.to_vec(), lo, hi));
        self
    }
    fn ints(mut self, name: &str, values: &[i64]) -> Case {
        self.inits.push(i64_init(name, values));
        self
    }
    fn node(mut self, n: NodeProto) -> Case {
        self.nodes.push(n);
        self
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn run(
    plan: &std::sync::Arc<TypedRunnableModel>,
    feeds: &[(Vec<usize>, Vec<f64>)],
    ints: &[(Vec<usize>, Vec<i64>)],
) -> Vec<Vec<f64>> {
    let mut inputs: TVec<TValue> = tvec![];
    for (shape, data) in feeds {
        inputs.push(Tensor::from_shape(shape, data).unwrap().into_tvalue());
    }
    for (shape, data) in ints {
        inputs.push(Tensor::from_shape(shape, data).unwrap().into_tvalue());
    }
    plan.run(inputs)
        .unwrap()
        .iter()
        .map(|t| {
            t.to_plain_array_view::<f64>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

fn check(case: Case, seed: u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut input = vec![];
    for (n, s, _, _) in &case.inputs {
        input.push(value_info(n, DataType::Double, s));
    }
    for (n, s, _) in &case.int_inputs {
        input.push(value_info(n, DataType::Int64, s));
    }
    let forward = GraphProto {
        node: case.nodes.clone(),
        name: Some(case.name.clone()),
        initializer: case.inits.clone(),
        input: input.clone(),
        output: vec![value_info(case.output, DataType::Double, &[])],
        ..Default::default()
    };
    let mut g = Graph::lift(model(forward)).expect("forward graph");
    let shape_in: Vec<(String, Vec<usize>)> = case
        .inputs
        .iter()
        .map(|(n, s, _, _)| (n.to_string(), s.clone()))
        .chain(
            case.int_inputs
                .iter()
                .map(|(n, s, _)| (n.to_string(), s.clone())),
        )
        .collect();
    let types = infer_shapes(&g, &shape_in).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let yshape = types[case.output].shape.clone();
    let r: Vec<f64> = (0..yshape.iter().product::<usize>())
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect();
    g.add_initializer(f64_init("R", &yshape, &r));
    g.add_nodes([
        node("Mul", &[case.output, "R"], &["weighted"], vec![]),
        node(
            "ReduceSum",
            &["weighted"],
            &["loss"],
            vec![("keepdims", A::I(0))],
        ),
    ])
    .unwrap();
    let inference = infer(&g, &shape_in).unwrap();
    let types = &inference.types;
    let wrt: Vec<String> = case.inputs.iter().map(|(n, ..)| n.to_string()).collect();
    let grads = differentiate(&mut g, "loss", &wrt, &inference)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    g.proto.output = vec![value_info("loss", DataType::Double, &[])];
    for w in &wrt {
        let s = &types[w].shape;
        g.proto
            .output
            .push(value_info(&grads[w], DataType::Double, s));
    }
    let native = g.lower().unwrap().encode_to_vec();
    tract_f64_workarounds(&mut g);
    tract_training_workarounds(&mut g, types);
    let bytes = g.lower().unwrap().encode_to_vec();
    let mut tm = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap_or_else(|e| panic!("{}: tract load: {e:?}", case.name));
    for (k, (_, s, _, _)) in case.inputs.iter().enumerate() {
        tm = tm.with_input_fact(k, f64::fact(s).into()).unwrap();
    }
    for (k, (_, s, _)) in case.int_inputs.iter().enumerate() {
        tm = tm
            .with_input_fact(case.inputs.len() + k, i64::fact(s).into())
            .unwrap();
    }
    let plan = tm
        .into_optimized()
        .unwrap_or_else(|e| panic!("{}: tract optimize: {e:?}", case.name))
        .into_runnable()
        .unwrap();
    let mut feeds: Vec<(Vec<usize>, Vec<f64>)> = case
        .inputs
        .iter()
        .map(|(_, s, lo, hi)| {
            let n = s.iter().product();
            (s.clone(), (0..n).map(|_| rng.uniform(*lo, *hi)).collect())
        })
        .collect();
    let ints: Vec<(Vec<usize>, Vec<i64>)> = case
        .int_inputs
        .iter()
        .map(|(_, s, v)| (s.clone(), v.clone()))
        .collect();
    let outs = run(&plan, &feeds, &ints);
    dump_for_ort(&case.name, &bytes, &native, &feeds, &ints, &outs);
    for (k, w) in wrt.iter().enumerate() {
        let analytic = outs[1 + k].clone();
        let n = feeds[k].1.len();
        assert_eq!(analytic.len(), n, "{}: gradient size of {w}", case.name);
        let step = n.div_ceil(MAX_CHECKED).max(1);
        for e in (0..n).step_by(step) {
            let x0 = feeds[k].1[e];
            feeds[k].1[e] = x0 + EPS;
            let lp = run(&plan, &feeds, &ints)[0][0];
            feeds[k].1[e] = x0 - EPS;
            let lm = run(&plan, &feeds, &ints)[0][0];
            feeds[k].1[e] = x0;
            let numeric = (lp - lm) / (2.0 * EPS);
            let a = analytic[e];
            assert!(
                (a - numeric).abs() <= TOL * 1f64.max(a.abs()).max(numeric.abs()),
                "{}: d loss / d {w}[{e}]: analytic {a} vs numeric {numeric}",
                case.name
            );
        }
    }
}

/// With `RL_AUTODIFF_DUMP=DIR`, writes each checked model (`NAME.onnx`, after the tract workarounds;
/// `NAME.native`, before them, when they changed it) and `NAME.bin`: the float64 feeds, the int64 feeds,
/// then tract's outputs (loss and gradients), raw little endian in graph order, for
/// `tests/ort_crosscheck.py` to run the same graphs in ONNX Runtime.
fn dump_for_ort(
    name: &str,
    model: &[u8],
    native: &[u8],
    feeds: &[(Vec<usize>, Vec<f64>)],
    ints: &[(Vec<usize>, Vec<i64>)],
    outs: &[Vec<f64>],
) {
    let Some(dir) = std::env::var_os("RL_AUTODIFF_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut stem = stem;
    while dir.join(format!("{stem}.onnx")).exists() {
        stem.push('_');
    }
    std::fs::write(dir.join(format!("{stem}.onnx")), model).unwrap();
    if native != model {
        std::fs::write(dir.join(format!("{stem}.native")), native).unwrap();
    }
    let mut raw = Vec::new();
    for (_, v) in feeds {
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    for (_, v) in ints {
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    for v in outs {
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    std::fs::write(dir.join(format!("{stem}.bin")), raw).unwrap();
}

/// tract 0.23 cannot evaluate some forward ops in float64 (Sigmoid, Tanh, Erf: "does not support F64"; Gemm
/// with beta != 1 mixes an f32 beta into an f64 product). The forward nodes under test are replaced, for the
/// run only, by exact float64 equivalents producing the same value names, so the backward graph (which reads
/// those values and never uses these ops) is checked unchanged.
fn tract_f64_workarounds(g: &mut Graph) {
    let targets: Vec<_> = g
        .node_indices()
        .filter(|&i| g.node(i).name().starts_with("fwd/"))
        .filter(|&i| matches!(g.node(i).op_type(), "Sigmoid" | "Tanh" | "Erf" | "Gemm"))
        .collect();
    for i in targets {
        let n = g.node(i).clone();
        let (x, y) = (n.input[0].clone(), n.output[0].clone());
        let p = |s: &str| format!("tw/{y}/{s}");
        let mut c = |name: &str, v: f64| {
            let name = p(name);
            g.add_initializer(f64_init(&name, &[], &[v]));
            name
        };
        let mut new = vec![];
        match n.op_type() {
            "Sigmoid" | "Tanh" => {
                // sigmoid(x) = 1 / (1 + e^-x); tanh(x) = 2 sigmoid(2x) - 1
                let (one, two) = (c("one", 1.0), c("two", 2.0));
                let arg = if n.op_type() == "Tanh" {
                    new.push(node("Mul", &[&x, &two], &[&p("2x")], vec![]));
                    p("2x")
                } else {
                    x.clone()
                };
                new.push(node("Neg", &[&arg], &[&p("neg")], vec![]));
                new.push(node("Exp", &[&p("neg")], &[&p("exp")], vec![]));
                new.push(node("Add", &[&p("exp"), &one], &[&p("den")], vec![]));
                if n.op_type() == "Tanh" {
                    new.push(node("Div", &[&two, &p("den")], &[&p("s2")], vec![]));
                    new.push(node("Sub", &[&p("s2"), &one], &[&y], vec![]));
                } else {
                    new.push(node("Div", &[&one, &p("den")], &[&y], vec![]));
                }
            }
            "Erf" => {
                // Maclaurin series 2/sqrt(pi) sum (-1)^k x^(2k+1) / (k! (2k+1)), 60 terms (|x| <= 2.5).
                let k2 = c("k", std::f64::consts::FRAC_2_SQRT_PI);
                new.push(node("Mul", &[&x, &x], &[&p("x2")], vec![]));
                new.push(node("Neg", &[&p("x2")], &[&p("nx2")], vec![]));
                let (mut term, mut sum) = (x.clone(), x.clone());
                for k in 1..60 {
                    let inv_k = c(&format!("ik{k}"), 1.0 / k as f64);
                    let inv_d = c(&format!("id{k}"), 1.0 / (2 * k + 1) as f64);
                    new.push(node(
                        "Mul",
                        &[&term, &p("nx2")],
                        &[&p(&format!("a{k}"))],
                        vec![],
                    ));
                    new.push(node(
                        "Mul",
                        &[&p(&format!("a{k}")), &inv_k],
                        &[&p(&format!("t{k}"))],
                        vec![],
                    ));
                    new.push(node(
                        "Mul",
                        &[&p(&format!("t{k}")), &inv_d],
                        &[&p(&format!("u{k}"))],
                        vec![],
                    ));
                    new.push(node(
                        "Add",
                        &[&sum, &p(&format!("u{k}"))],
                        &[&p(&format!("s{k}"))],
                        vec![],
                    ));
                    term = p(&format!("t{k}"));
                    sum = p(&format!("s{k}"));
                }
                new.push(node("Mul", &[&sum, &k2], &[&y], vec![]));
            }
            _ => {
                let beta = n
                    .attribute
                    .iter()
                    .find(|a| a.name() == "beta")
                    .and_then(|a| a.f)
                    .unwrap_or(1.0);
                if beta == 1.0 || n.input.len() < 3 {
                    continue;
                }
                let b = c("beta", beta as f64);
                new.push(node("Mul", &[&n.input[2], &b], &[&p("bc")], vec![]));
                let mut gemm = n.clone();
                gemm.attribute.retain(|a| a.name() != "beta");
                gemm.input[2] = p("bc");
                new.push(gemm);
            }
        }
        g.remove_node(i);
        g.add_nodes(new).unwrap();
    }
}

fn binary(op: &'static str, sa: &[usize], sb: &[usize], positive_b: bool) -> Case {
    let c = Case::new(format!("{op} {sa:?} {sb:?}"), "y").input("a", sa);
    let c = if positive_b {
        c.input_in("b", sb, 0.5, 2.0)
    } else {
        c.input("b", sb)
    };
    c.node(node(op, &["a", "b"], &["y"], vec![]))
}

const BROADCASTS: &[(&[usize], &[usize])] = &[
    (&[3, 4], &[3, 4]),
    (&[2, 3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[2, 1, 4], &[3, 1]),
    (&[], &[2, 3]),
    (&[5], &[]),
];

#[test]
fn add_sub_mul_div_broadcasting() {
    for op in ["Add", "Sub", "Mul", "Div"] {
        for (i, (sa, sb)) in BROADCASTS.iter().enumerate() {
            check(binary(op, sa, sb, op == "Div"), i as u64);
            check(binary(op, sb, sa, op == "Div"), 100 + i as u64);
        }
    }
}

#[test]
fn add_with_the_same_input_twice_accumulates() {
    let c = Case::new("x*x + x", "y")
        .input("x", &[3, 2])
        .node(node("Mul", &["x", "x"], &["sq"], vec![]))
        .node(node("Add", &["sq", "x"], &["y"], vec![]));
    check(c, 1);
}

#[test]
fn pow_constant_and_variable_exponent() {
    let c = Case::new("pow const", "y")
        .input_in("x", &[2, 3], 0.5, 2.0)
        .node(node("Constant", &[], &["p"], vec![]))
        .node(node("Pow", &["x", "p"], &["y"], vec![]));
    // Constant node with a float64 scalar value.
    let mut c = c;
    c.nodes[0].attribute = vec![AttributeProto {
        name: Some("value".into()),
        t: Some(f64_init("", &[], &[2.5])),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    }];
    check(c, 1);
    for (sa, sb) in [
        (&[2usize, 3][..], &[3usize][..]),
        (&[3], &[2, 3]),
        (&[2, 3], &[]),
    ] {
        let c = Case::new(format!("pow {sa:?} {sb:?}"), "y")
            .input_in("a", sa, 0.5, 2.0)
            .input_in("b", sb, -1.5, 2.5)
            .node(node("Pow", &["a", "b"], &["y"], vec![]));
        check(c, 2);
    }
}

#[test]
fn unary_ops() {
    let shape = [2, 3, 4];
    for (op, lo, hi) in [
        ("Neg", -1.0, 1.0),
        ("Sqrt", 0.3, 2.0),
        ("Exp", -1.0, 1.0),
        ("Sigmoid", -3.0, 3.0),
        ("Tanh", -2.0, 2.0),
        ("Erf", -2.0, 2.0),
        ("Identity", -1.0, 1.0),
    ] {
        let c =
            Case::new(op, "y")
                .input_in("x", &shape, lo, hi)
                .node(node(op, &["x"], &["y"], vec![]));
        check(c, 3);
    }
}

#[test]
fn relu_away_from_the_kink() {
    // Values in ±[0.05, 1]: the kink at 0 is never within eps.
    let c = Case::new("relu", "y")
        .input_in("x", &[4, 5], 0.05, 1.0)
        .node(node("Neg", &["x"], &["nx"], vec![]))
        .node(node(
            "Concat",
            &["x", "nx"],
            &["both"],
            vec![("axis", A::I(0))],
        ))
        .node(node("Relu", &["both"], &["y"], vec![]));
    check(c, 4);
}

#[test]
fn cast_round_trip_through_float64() {
    let c = Case::new("cast", "y").input("x", &[3, 2]).node(node(
        "Cast",
        &["x"],
        &["y"],
        vec![("to", A::I(11))],
    ));
    check(c, 5);
}

#[test]
fn gelu_pattern() {
    // 0.5 · x · (1 + erf(x / √2)), as exported by PyTorch.
    let mut c = Case::new("gelu", "y").input("x", &[3, 4]);
    c.inits
        .push(f64_init("sqrt2", &[], &[std::f64::consts::SQRT_2]));
    c.inits.push(f64_init("one", &[], &[1.0]));
    c.inits.push(f64_init("half", &[], &[0.5]));
    let c = c
        .node(node("Div", &["x", "sqrt2"], &["t"], vec![]))
        .node(node("Erf", &["t"], &["e"], vec![]))
        .node(node("Add", &["e", "one"], &["p"], vec![]))
        .node(node("Mul", &["x", "p"], &["q"], vec![]))
        .node(node("Mul", &["q", "half"], &["y"], vec![]));
    check(c, 6);
}

#[test]
fn matmul_batched_and_broadcasting() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[1, 3, 4, 2]),
        (&[4], &[4, 5]),
        (&[3, 4], &[4]),
        (&[2, 3, 4], &[4]),
        (&[4], &[2, 4, 3]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let c = Case::new(format!("matmul {sa:?} {sb:?}"), "y")
            .input("a", sa)
            .input("b", sb)
            .node(node("MatMul", &["a", "b"], &["y"], vec![]));
        check(c, 10 + i as u64);
    }
}

#[test]
fn gemm_transposes_alpha_beta_and_bias_broadcasting() {
    let (m, k, n) = (3, 4, 5);
    for ta in [0, 1] {
        for tb in [0, 1] {
            for c_shape in [vec![m, n], vec![n], vec![1, n], vec![m, 1], vec![]] {
                let sa = if ta == 1 { [k, m] } else { [m, k] };
                let sb = if tb == 1 { [n, k] } else { [k, n] };
                let c = Case::new(format!("gemm tA={ta} tB={tb} C{c_shape:?}"), "y")
                    .input("a", &sa)
                    .input("b", &sb)
                    .input("c", &c_shape)
                    .node(node(
                        "Gemm",
                        &["a", "b", "c"],
                        &["y"],
                        vec![
                            ("transA", A::I(ta)),
                            ("transB", A::I(tb)),
                            ("alpha", A::F(0.75)),
                            ("beta", A::F(-1.5)),
                        ],
                    ));
                check(c, 20);
            }
        }
    }
    let c = Case::new("gemm without C", "y")
        .input("a", &[2, 3])
        .input("b", &[3, 4])
        .node(node("Gemm", &["a", "b"], &["y"], vec![]));
    check(c, 21);
}

#[test]
fn reshape_flatten_squeeze_unsqueeze() {
    let c = Case::new("reshape", "y")
        .input("x", &[2, 3, 4])
        .ints("s", &[0, -1, 2])
        .node(node("Reshape", &["x", "s"], &["y"], vec![]));
    check(c, 30);
    for axis in [0, 1, 2, -1] {
        let c = Case::new(format!("flatten {axis}"), "y")
            .input("x", &[2, 3, 4])
            .node(node("Flatten", &["x"], &["y"], vec![("axis", A::I(axis))]));
        check(c, 31);
    }
    let c = Case::new("squeeze", "y")
        .input("x", &[2, 1, 3, 1])
        .ints("ax", &[1, -1])
        .node(node("Squeeze", &["x", "ax"], &["y"], vec![]));
    check(c, 32);
    let c = Case::new("unsqueeze", "y")
        .input("x", &[2, 3])
        .ints("ax", &[0, 3])
        .node(node("Unsqueeze", &["x", "ax"], &["y"], vec![]));
    check(c, 33);
}

#[test]
fn transpose_permutations() {
    for perm in [vec![1, 0, 2], vec![2, 0, 1], vec![1, 2, 0]] {
        let c = Case::new(format!("transpose {perm:?}"), "y")
            .input("x", &[2, 3, 4])
            .node(node(
                "Transpose",
                &["x"],
                &["y"],
                vec![("perm", A::Is(perm))],
            ));
        check(c, 40);
    }
    let c = Case::new("transpose default", "y")
        .input("x", &[2, 3, 4])
        .node(node("Transpose", &["x"], &["y"], vec![]));
    check(c, 41);
}

#[test]
fn concat_axes() {
    for axis in [0, 1, -1] {
        let c = Case::new(format!("concat {axis}"), "y")
            .input("a", &[2, 3, 2])
            .input("b", &[2, 3, 2])
            .node(node(
                "Concat",
                &["a", "b", "a"],
                &["y"],
                vec![("axis", A::I(axis))],
            ));
        check(c, 50);
    }
    let c = Case::new("concat uneven", "y")
        .input("a", &[2, 1])
        .input("b", &[2, 3])
        .node(node("Concat", &["a", "b"], &["y"], vec![("axis", A::I(1))]));
    check(c, 51);
}

#[test]
fn slices_with_unit_steps() {
    type SliceCase = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);
    let cases: Vec<SliceCase> = vec![
        (vec![1], vec![3], Some(vec![1])),
        (vec![0, 1], vec![1, -1], Some(vec![0, 2])),
        (vec![-3], vec![i64::MAX], Some(vec![-1])),
        (vec![1, 0, 1], vec![2, 2, 4], None),
    ];
    for (i, (s, e, ax)) in cases.into_iter().enumerate() {
        let mut c = Case::new(format!("slice {s:?} {e:?} {ax:?}"), "y")
            .input("x", &[2, 3, 5])
            .ints("s", &s)
            .ints("e", &e);
        let mut ins = vec!["x", "s", "e"];
        if let Some(ax) = ax {
            c = c.ints("ax", &ax);
            ins.push("ax");
        }
        let c = c.node(node("Slice", &ins, &["y"], vec![]));
        check(c, 60 + i as u64);
    }
}

#[test]
fn gather_constant_and_data_indices() {
    let c = Case::new("gather class token", "y")
        .input("x", &[2, 5, 3])
        .node(node("Constant", &[], &["i"], vec![("value_int", A::I(0))]))
        .node(node("Gather", &["x", "i"], &["y"], vec![("axis", A::I(1))]));
    check(c, 70);
    let mut c = Case::new("gather embedding", "y")
        .input("table", &[6, 4])
        .node(node("Gather", &["table", "idx"], &["y"], vec![]));
    c.int_inputs
        .push(("idx", vec![2, 3], vec![0, 5, 2, 2, -1, 3]));
    check(c, 71);
    let c = Case::new("gather last axis", "y")
        .input("x", &[2, 3, 4])
        .ints("i", &[3, 0, 3])
        .node(node(
            "Gather",
            &["x", "i"],
            &["y"],
            vec![("axis", A::I(-1))],
        ));
    check(c, 72);
}

#[test]
fn reduce_sum_and_mean() {
    for op in ["ReduceSum", "ReduceMean"] {
        for (axes, keep) in [(vec![1], 1), (vec![0, 2], 0), (vec![-1], 0), (vec![], 1)] {
            let mut c = Case::new(format!("{op} {axes:?} keep={keep}"), "y").input("x", &[2, 3, 4]);
            let mut ins = vec!["x"];
            if !axes.is_empty() && op == "ReduceSum" {
                c = c.ints("ax", &axes);
                ins.push("ax");
            }
            let mut attrs = vec![("keepdims", A::I(keep))];
            if op == "ReduceMean" && !axes.is_empty() {
                attrs.push(("axes", A::Is(axes.clone())));
            }
            let c = c.node(node(op, &ins, &["y"], attrs));
            check(c, 80);
        }
    }
}

#[test]
fn softmax_and_log_softmax() {
    for op in ["Softmax", "LogSoftmax"] {
        for axis in [-1, 0, 1] {
            let c = Case::new(format!("{op} {axis}"), "y")
                .input_in("x", &[2, 3, 4], -2.0, 2.0)
                .node(node(op, &["x"], &["y"], vec![("axis", A::I(axis))]));
            check(c, 90);
        }
    }
}

#[test]
fn attention_block() {
    // softmax(Q Kᵀ / √d) V with Q, K, V from one input: exercises accumulation across MatMul/Transpose.
    let mut c = Case::new("attention", "y")
        .input("x", &[2, 3, 4])
        .input("wq", &[4, 4])
        .input("wk", &[4, 4])
        .input("wv", &[4, 4]);
    c.inits.push(f64_init("scale", &[], &[0.5]));
    let c = c
        .node(node("MatMul", &["x", "wq"], &["q"], vec![]))
        .node(node("MatMul", &["x", "wk"], &["k"], vec![]))
        .node(node("MatMul", &["x", "wv"], &["v"], vec![]))
        .node(node(
            "Transpose",
            &["k"],
            &["kt"],
            vec![("perm", A::Is(vec![0, 2, 1]))],
        ))
        .node(node("MatMul", &["q", "kt"], &["s"], vec![]))
        .node(node("Mul", &["s", "scale"], &["ss"], vec![]))
        .node(node("Softmax", &["ss"], &["p"], vec![("axis", A::I(-1))]))
        .node(node("MatMul", &["p", "v"], &["y"], vec![]));
    check(c, 95);
}

#[test]
fn missing_rule_names_the_node() {
    let forward = GraphProto {
        node: vec![node("Hardmax", &["x"], &["y"], vec![])],
        input: vec![value_info("x", DataType::Double, &[2, 3])],
        output: vec![value_info("y", DataType::Double, &[])],
        ..Default::default()
    };
    let mut g = Graph::lift(model(forward)).unwrap();
    g.add_nodes([node(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![("keepdims", A::I(0))],
    )])
    .unwrap();
    let mut types = HashMap::new();
    let t = |s: Vec<usize>| rl_passes::analysis::shapes::TensorType::new(11, s);
    types.insert("x".to_owned(), t(vec![2, 3]));
    types.insert("y".to_owned(), t(vec![2, 3]));
    types.insert("loss".to_owned(), t(vec![]));
    let inference = Inference {
        types,
        ..Default::default()
    };
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/Hardmax/y' (Hardmax): no gradient rule for op Hardmax"
    );
    let _ = A::S("unused");
}

/// A Conv case: X [N, C, S…], W [M, C/group, k…], optional bias.
fn conv_case(
    name: &str,
    x: &[usize],
    w: &[usize],
    bias: bool,
    attrs: Vec<(&'static str, A)>,
) -> Case {
    let mut c = Case::new(format!("conv {name} x{x:?} w{w:?}"), "y")
        .input("x", x)
        .input("w", w);
    let mut ins = vec!["x", "w"];
    if bias {
        c = c.input("b", &[w[0]]);
        ins.push("b");
    }
    c.node(node("Conv", &ins, &["y"], attrs))
}

#[test]
fn conv_2d_strides_pads_dilations_groups() {
    let cases: Vec<Case> = vec![
        conv_case("plain", &[2, 3, 5, 5], &[4, 3, 3, 3], true, vec![]),
        conv_case(
            "stride 2, pads 1",
            &[2, 3, 6, 6],
            &[4, 3, 3, 3],
            true,
            vec![
                ("strides", A::Is(vec![2, 2])),
                ("pads", A::Is(vec![1, 1, 1, 1])),
            ],
        ),
        conv_case(
            // (7 + 1 + 2 − 3) = 7 not divisible by 2 along H; (6 + 0 + 1 − 3) = 4 along W with stride 3
            "stride 2x3, asymmetric pads, remainder",
            &[1, 2, 7, 6],
            &[3, 2, 3, 3],
            false,
            vec![
                ("strides", A::Is(vec![2, 3])),
                ("pads", A::Is(vec![1, 0, 2, 1])),
            ],
        ),
        conv_case(
            // no end pad to trim: the weight-gradient convolution overshoots and is sliced
            "stride 2, unpadded remainder",
            &[1, 2, 8, 7],
            &[2, 2, 3, 2],
            true,
            vec![("strides", A::Is(vec![2, 2]))],
        ),
        conv_case(
            "dilations 2",
            &[2, 2, 7, 8],
            &[3, 2, 3, 2],
            true,
            vec![
                ("dilations", A::Is(vec![2, 2])),
                ("pads", A::Is(vec![2, 1, 1, 0])),
            ],
        ),
        conv_case(
            "dilations 2, stride 2, remainder",
            &[1, 2, 9, 8],
            &[2, 2, 3, 3],
            true,
            vec![
                ("dilations", A::Is(vec![2, 2])),
                ("strides", A::Is(vec![2, 2])),
                ("pads", A::Is(vec![0, 1, 1, 2])),
            ],
        ),
        conv_case(
            "groups 2",
            &[2, 4, 5, 5],
            &[6, 2, 3, 3],
            true,
            vec![("group", A::I(2)), ("pads", A::Is(vec![1, 1, 1, 1]))],
        ),
        conv_case(
            "depthwise, stride 2",
            &[2, 3, 6, 7],
            &[3, 1, 3, 3],
            true,
            vec![
                ("group", A::I(3)),
                ("strides", A::Is(vec![2, 2])),
                ("pads", A::Is(vec![1, 1, 1, 1])),
            ],
        ),
        conv_case(
            "depthwise multiplier 2, dilation 2",
            &[1, 2, 7, 7],
            &[4, 1, 2, 3],
            false,
            vec![("group", A::I(2)), ("dilations", A::Is(vec![2, 2]))],
        ),
        conv_case(
            "1x1 stride 2",
            &[2, 4, 5, 5],
            &[3, 4, 1, 1],
            false,
            vec![("strides", A::Is(vec![2, 2]))],
        ),
        conv_case(
            "SAME_UPPER stride 2",
            &[1, 2, 5, 6],
            &[2, 2, 3, 3],
            true,
            vec![
                ("strides", A::Is(vec![2, 2])),
                ("auto_pad", A::S("SAME_UPPER")),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 200 + i as u64);
    }
}

#[test]
fn conv_1d() {
    let cases = vec![
        conv_case("1-D plain", &[2, 3, 7], &[4, 3, 3], true, vec![]),
        conv_case(
            "1-D stride 2, pads, dilation 2, groups 3",
            &[2, 3, 10],
            &[6, 1, 3],
            true,
            vec![
                ("strides", A::Is(vec![2])),
                ("pads", A::Is(vec![2, 1])),
                ("dilations", A::Is(vec![2])),
                ("group", A::I(3)),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 230 + i as u64);
    }
}

/// The weight gradient's constructions besides the gathered im2col of the cases above: the tiling reshape
/// (windows equal to strides, as in patch embeddings); the gathered im2col with many taps and a 3-D kernel.
/// (The batch/channel-swapped convolution is taken by the grouped cases above.)
#[test]
fn conv_weight_gradient_paths() {
    let cases = vec![
        conv_case(
            "patches 2x2, exact tiling",
            &[2, 3, 6, 4],
            &[4, 3, 2, 2],
            true,
            vec![("strides", A::Is(vec![2, 2]))],
        ),
        conv_case(
            "patches 3x2, rows and columns left over",
            &[1, 2, 8, 5],
            &[3, 2, 3, 2],
            false,
            vec![("strides", A::Is(vec![3, 2]))],
        ),
        conv_case(
            "9x9 kernel (81 taps), stride 1",
            &[1, 2, 10, 10],
            &[2, 2, 9, 9],
            true,
            vec![("pads", A::Is(vec![1, 0, 0, 1]))],
        ),
        conv_case(
            "3-D ungrouped, stride (1,2,1), pads",
            &[2, 2, 4, 5, 3],
            &[3, 2, 2, 3, 2],
            true,
            vec![
                ("strides", A::Is(vec![1, 2, 1])),
                ("pads", A::Is(vec![0, 1, 1, 1, 0, 0])),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 240 + i as u64);
    }
}

#[test]
fn global_average_pool() {
    for x in [&[2usize, 3, 4, 5][..], &[2, 3, 7]] {
        let c = Case::new(format!("GlobalAveragePool {x:?}"), "y")
            .input("x", x)
            .node(node("GlobalAveragePool", &["x"], &["y"], vec![]));
        check(c, 300);
    }
}

fn pool_attrs(
    k: &[i64],
    s: &[i64],
    pads: &[i64],
    extra: Vec<(&'static str, A)>,
) -> Vec<(&'static str, A)> {
    let mut v = vec![
        ("kernel_shape", A::Is(k.to_vec())),
        ("strides", A::Is(s.to_vec())),
        ("pads", A::Is(pads.to_vec())),
    ];
    v.extend(extra);
    v
}

#[test]
fn average_pool_count_include_pad_strides_pads() {
    type P = (
        &'static [usize],
        &'static [i64],
        &'static [i64],
        &'static [i64],
        i64,
    );
    let cases: &[P] = &[
        (&[2, 3, 6, 6], &[2, 2], &[2, 2], &[0, 0, 0, 0], 0),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1], 0),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1], 1),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1], 0),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1], 1),
        (&[2, 2, 9], &[3], &[2], &[1, 1], 0),
    ];
    for (i, (x, k, s, p, inc)) in cases.iter().enumerate() {
        let c = Case::new(
            format!("AveragePool x{x:?} k{k:?} s{s:?} p{p:?} inc{inc}"),
            "y",
        )
        .input("x", x)
        .node(node(
            "AveragePool",
            &["x"],
            &["y"],
            pool_attrs(k, s, p, vec![("count_include_pad", A::I(*inc))]),
        ));
        check(c, 310 + i as u64);
    }
}

#[test]
fn average_pool_ceil_mode() {
    for inc in [0, 1] {
        let c = Case::new(format!("AveragePool ceil inc{inc}"), "y")
            .input("x", &[1, 2, 6, 7])
            .node(node(
                "AveragePool",
                &["x"],
                &["y"],
                pool_attrs(
                    &[3, 3],
                    &[2, 2],
                    &[1, 0, 0, 1],
                    vec![("count_include_pad", A::I(inc)), ("ceil_mode", A::I(1))],
                ),
            ));
        check(c, 330 + inc as u64);
    }
}

#[test]
fn max_pool_routes_to_the_argmax() {
    // Random inputs have no ties; the analytic gradient goes to the element MaxPool's Indices names.
    type P = (
        &'static [usize],
        &'static [i64],
        &'static [i64],
        &'static [i64],
    );
    let cases: &[P] = &[
        (&[2, 3, 6, 6], &[2, 2], &[2, 2], &[0, 0, 0, 0]),
        (&[2, 2, 7, 7], &[3, 3], &[2, 2], &[1, 1, 1, 1]),
        (&[1, 2, 7, 6], &[3, 2], &[2, 3], &[1, 0, 2, 1]),
        (&[2, 2, 5, 5], &[3, 3], &[1, 1], &[1, 1, 1, 1]),
        (&[2, 3, 9], &[3], &[2], &[1, 0]),
    ];
    for (i, (x, k, s, p)) in cases.iter().enumerate() {
        let c = Case::new(format!("MaxPool x{x:?} k{k:?} s{s:?} p{p:?}"), "y")
            .input("x", x)
            .node(node("MaxPool", &["x"], &["y"], pool_attrs(k, s, p, vec![])));
        check(c, 340 + i as u64);
    }
    // With the Indices output present in the forward graph, and dilations.
    let c = Case::new("MaxPool with Indices, dilation 2", "y")
        .input("x", &[1, 2, 7, 7])
        .node(node(
            "MaxPool",
            &["x"],
            &["y", "idx"],
            pool_attrs(
                &[2, 2],
                &[1, 2],
                &[0, 1, 1, 0],
                vec![("dilations", A::Is(vec![2, 2]))],
            ),
        ));
    check(c, 350);
}

/// tract 0.23 is an inference engine: it runs BatchNormalization with the given mean/var whatever
/// `training_mode` says (and only with constant parameters), and refuses Dropout in training mode. Its
/// LayerNormalization, like any `Mul(x, x) → ReduceSum → Mul(1/n)` chain, becomes a mean-of-squares
/// reducer that computes in float32 even for float64 tensors. For the run only, such forward nodes are
/// replaced by their exact float64 definition in standard ops, producing the same value names: batch
/// statistics (biased variance) or the given mean/var for BatchNormalization, the statistics over the
/// trailing axes for LayerNormalization (variance as `(Σ d² + n·ε) / n`, which tract does not fuse); for
/// Dropout a *fixed* mask (Greater of a fixed uniform draw and the ratio) so that finite differences see
/// one deterministic function.
fn tract_training_workarounds(
    g: &mut Graph,
    types: &HashMap<String, rl_passes::analysis::shapes::TensorType>,
) {
    let get_i =
        |n: &NodeProto, a: &str| n.attribute.iter().find(|x| x.name() == a).and_then(|x| x.i);
    let targets: Vec<_> = g
        .node_indices()
        .filter(|&i| g.node(i).name().starts_with("fwd/"))
        .filter(|&i| {
            let n = g.node(i);
            matches!(n.op_type(), "BatchNormalization" | "LayerNormalization")
                || (n.op_type() == "Dropout" && n.input.len() > 2)
        })
        .collect();
    for i in targets {
        let n = g.node(i).clone();
        let y = n.output[0].clone();
        let p = |s: &str| format!("tw/{y}/{s}");
        let shape = types[&n.input[0]].shape.clone();
        let mut new = vec![];
        if n.op_type() != "Dropout" {
            let eps = n
                .attribute
                .iter()
                .find(|a| a.name() == "epsilon")
                .and_then(|a| a.f)
                .unwrap_or(1e-5) as f64;
            let bn = n.op_type() == "BatchNormalization";
            let axes: Vec<i64> = if bn {
                std::iter::once(0).chain(2..shape.len() as i64).collect()
            } else {
                let r = shape.len() as i64;
                let a = get_i(&n, "axis").unwrap_or(-1);
                (if a < 0 { a + r } else { a }..r).collect()
            };
            let count: usize = axes.iter().map(|&a| shape[a as usize]).product();
            g.add_initializer(f64_init(&p("neps"), &[], &[count as f64 * eps]));
            g.add_initializer(f64_init(&p("eps"), &[], &[eps]));
            g.add_initializer(f64_init(&p("n"), &[], &[count as f64]));
            g.add_initializer(i64_init(&p("axes"), &axes));
            let x = n.input[0].as_str();
            let (scale, bias) = if bn {
                let mut cs = vec![shape[1] as i64];
                cs.extend(vec![1; shape.len() - 2]);
                g.add_initializer(i64_init(&p("cs"), &cs));
                new.push(node(
                    "Reshape",
                    &[&n.input[1], &p("cs")],
                    &[&p("s")],
                    vec![],
                ));
                new.push(node(
                    "Reshape",
                    &[&n.input[2], &p("cs")],
                    &[&p("b")],
                    vec![],
                ));
                (p("s"), Some(p("b")))
            } else {
                (n.input[1].clone(), n.input.get(2).cloned())
            };
            if bn && get_i(&n, "training_mode") != Some(1) {
                new.push(node(
                    "Reshape",
                    &[&n.input[3], &p("cs")],
                    &[&p("m")],
                    vec![],
                ));
                new.push(node(
                    "Reshape",
                    &[&n.input[4], &p("cs")],
                    &[&p("v")],
                    vec![],
                ));
                new.push(node("Add", &[&p("v"), &p("eps")], &[&p("ve")], vec![]));
                new.push(node("Sub", &[x, &p("m")], &[&p("d")], vec![]));
            } else {
                new.push(node("ReduceSum", &[x, &p("axes")], &[&p("ms")], vec![]));
                new.push(node("Div", &[&p("ms"), &p("n")], &[&p("m")], vec![]));
                new.push(node("Sub", &[x, &p("m")], &[&p("d")], vec![]));
                new.push(node("Mul", &[&p("d"), &p("d")], &[&p("sq")], vec![]));
                new.push(node(
                    "ReduceSum",
                    &[&p("sq"), &p("axes")],
                    &[&p("ss")],
                    vec![],
                ));
                new.push(node("Add", &[&p("ss"), &p("neps")], &[&p("sse")], vec![]));
                new.push(node("Div", &[&p("sse"), &p("n")], &[&p("ve")], vec![]));
            }
            new.push(node("Sqrt", &[&p("ve")], &[&p("sd")], vec![]));
            new.push(node("Div", &[&p("d"), &p("sd")], &[&p("xh")], vec![]));
            match bias.filter(|b| !b.is_empty()) {
                Some(b) => {
                    new.push(node("Mul", &[&p("xh"), &scale], &[&p("xs")], vec![]));
                    new.push(node("Add", &[&p("xs"), &b], &[&y], vec![]));
                }
                None => new.push(node("Mul", &[&p("xh"), &scale], &[&y], vec![])),
            }
        } else {
            // training_mode given: the test graphs always pass `true`
            let mut rng = Rng(0x5eed);
            let numel: usize = shape.iter().product();
            let u: Vec<f64> = (0..numel).map(|_| rng.next()).collect();
            g.add_initializer(f64_init(&p("u"), &shape, &u));
            g.add_initializer(f64_init(&p("one"), &[], &[1.0]));
            let ratio = n.input[1].as_str();
            new.push(node("Greater", &[&p("u"), ratio], &[&n.output[1]], vec![]));
            new.push(node(
                "Cast",
                &[&n.output[1]],
                &[&p("fm")],
                vec![("to", A::I(11))],
            ));
            new.push(node("Sub", &[&p("one"), ratio], &[&p("keep")], vec![]));
            new.push(node("Div", &[&p("fm"), &p("keep")], &[&p("sc")], vec![]));
            new.push(node("Mul", &[&n.input[0], &p("sc")], &[&y], vec![]));
        }
        g.remove_node(i);
        g.add_nodes(new).unwrap();
    }
}

fn bn_case(name: &str, x: &[usize], training: bool, eps: f32) -> Case {
    let c = x[1];
    Case::new(
        format!("BatchNormalization {name} x{x:?} training={training}"),
        "y",
    )
    .input("x", x)
    .input_in("scale", &[c], 0.5, 1.5)
    .input("bias", &[c])
    .input("mean", &[c])
    .input_in("var", &[c], 0.5, 1.5)
    .node(node(
        "BatchNormalization",
        &["x", "scale", "bias", "mean", "var"],
        // training mode has the running mean and variance outputs (ONNX requires all three)
        if training {
            &["y", "running_mean", "running_var"]
        } else {
            &["y"]
        },
        vec![
            ("epsilon", A::F(eps)),
            ("training_mode", A::I(training as i64)),
        ],
    ))
}

#[test]
fn batch_normalization_inference_mode() {
    check(bn_case("4-D", &[2, 3, 4, 5], false, 1e-5), 400);
    check(bn_case("2-D", &[4, 3], false, 1e-3), 401);
    check(bn_case("3-D", &[2, 3, 5], false, 0.1), 402);
}

#[test]
fn batch_normalization_training_mode() {
    // input mean/var only feed the running statistics (not differentiated): their gradient is zero
    check(bn_case("4-D", &[2, 3, 4, 5], true, 1e-5), 410);
    check(bn_case("2-D", &[5, 3], true, 1e-3), 411);
    check(bn_case("3-D", &[3, 2, 4], true, 0.1), 412);
    let mut c = bn_case("momentum 0.9", &[2, 2, 3, 3], true, 1e-5);
    c.nodes[0].attribute.push(AttributeProto {
        name: Some("momentum".into()),
        f: Some(0.9),
        r#type: Some(AttributeType::Float as i32),
        ..Default::default()
    });
    check(c, 413);
}

#[test]
fn layer_normalization_axes_and_bias() {
    for (x, axis, bias, eps) in [
        (&[2usize, 3, 4][..], -1i64, true, 1e-5f32),
        (&[2, 3, 4], 1, true, 1e-3),
        (&[2, 3, 4], 0, false, 1e-5),
        (&[4, 5], -1, false, 0.1),
    ] {
        let a = if axis < 0 { x.len() - 1 } else { axis as usize };
        let mut c = Case::new(
            format!("LayerNormalization x{x:?} axis {axis} bias {bias}"),
            "y",
        )
        .input("x", x)
        .input_in("scale", &x[a..], 0.5, 1.5);
        let mut ins = vec!["x", "scale"];
        if bias {
            c = c.input("bias", &x[a..]);
            ins.push("bias");
        }
        let c = c.node(node(
            "LayerNormalization",
            &ins,
            &["y"],
            vec![("axis", A::I(axis)), ("epsilon", A::F(eps))],
        ));
        check(c, 420);
    }
}

#[test]
fn clip_bounds_as_inputs_and_absent() {
    // x in [0.6, 1] against lo in [0.7, 0.8] and hi in [0.85, 0.9]: elements below, between and above
    // the bounds, so the gradients of x, lo and hi are all exercised (an element within eps of a bound is
    // improbable with these seeds; the check would show it).
    let mut c = Case::new("clip min max inputs", "y")
        .input_in("x", &[3, 4], 0.6, 1.0)
        .input_in("lo", &[], 0.7, 0.8)
        .input_in("hi", &[], 0.85, 0.9);
    c = c.node(node("Clip", &["x", "lo", "hi"], &["y"], vec![]));
    check(c, 430);
    let mut c = Case::new("clip inside", "y").input("x", &[3, 4]);
    c.inits.push(f64_init("lo", &[], &[-2.0]));
    c.inits.push(f64_init("hi", &[], &[2.0]));
    let c = c.node(node("Clip", &["x", "lo", "hi"], &["y"], vec![]));
    check(c, 431);
    let mut c = Case::new("clip min only (relu6-like lower)", "y").input("x", &[2, 5]);
    c.inits.push(f64_init("lo", &[], &[0.0]));
    let c = c.node(node("Clip", &["x", "lo"], &["y"], vec![]));
    check(c, 432);
    let mut c = Case::new("clip max only", "y").input("x", &[2, 5]);
    c.inits.push(f64_init("hi", &[], &[0.0]));
    let c = c.node(node("Clip", &["x", "", "hi"], &["y"], vec![]));
    check(c, 433);
}

#[test]
fn dropout_training_and_inference() {
    let mut c = Case::new("dropout training", "y").input("x", &[3, 4, 5]);
    c.inits.push(f64_init("ratio", &[], &[0.3]));
    c.inits.push(TensorProto {
        name: Some("train".into()),
        data_type: Some(DataType::Bool as i32),
        raw_data: Some(Bytes::from_static(&[1])),
        ..Default::default()
    });
    let c = c.node(node(
        "Dropout",
        &["x", "ratio", "train"],
        &["y", "mask"],
        vec![],
    ));
    check(c, 440);
    let mut c = Case::new("dropout inference", "y").input("x", &[3, 4]);
    c.inits.push(f64_init("ratio", &[], &[0.3]));
    let c = c.node(node("Dropout", &["x", "ratio"], &["y"], vec![]));
    check(c, 441);
    let c = Case::new("dropout plain", "y")
        .input("x", &[3, 4])
        .node(node("Dropout", &["x"], &["y"], vec![]));
    check(c, 442);
}

#[test]
fn dropout_training_mode_computed_and_mask_required() {
    // training_mode computed in the graph (not a constant): the rule selects with Where at run time
    let mut c = Case::new("dropout computed training_mode", "y").input("x", &[2, 6]);
    c.inits.push(f64_init("ratio", &[], &[0.25]));
    c.inits.push(f64_init("one", &[], &[1.0]));
    c.inits.push(f64_init("zero", &[], &[0.0]));
    let c = c
        .node(node("Greater", &["one", "zero"], &["train"], vec![]))
        .node(node(
            "Dropout",
            &["x", "ratio", "train"],
            &["y", "mask"],
            vec![],
        ));
    check(c, 443);
    // training_mode and ratio from Constant nodes, as PyTorch exports them
    let mut c = Case::new("dropout constant nodes", "y")
        .input("x", &[4, 3])
        .node(node("Constant", &[], &["ratio"], vec![]))
        .node(node("Constant", &[], &["train"], vec![]))
        .node(node(
            "Dropout",
            &["x", "ratio", "train"],
            &["y", "mask"],
            vec![],
        ));
    let tensor_attr = |t: TensorProto| AttributeProto {
        name: Some("value".into()),
        t: Some(t),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    };
    c.nodes[0].attribute = vec![tensor_attr(f64_init("", &[], &[0.1]))];
    c.nodes[1].attribute = vec![tensor_attr(TensorProto {
        data_type: Some(DataType::Bool as i32),
        raw_data: Some(Bytes::from_static(&[1])),
        ..Default::default()
    })];
    check(c, 444);
    // without the mask output the random draw cannot be differentiated: a clear error
    let mut train = TensorProto {
        name: Some("train".into()),
        data_type: Some(DataType::Bool as i32),
        raw_data: Some(Bytes::from_static(&[1])),
        ..Default::default()
    };
    let forward = GraphProto {
        node: vec![
            node("Dropout", &["x", "ratio", "train"], &["y"], vec![]),
            node("ReduceSum", &["y"], &["loss"], vec![("keepdims", A::I(0))]),
        ],
        initializer: vec![f64_init("ratio", &[], &[0.5]), {
            train.dims = vec![];
            train
        }],
        input: vec![value_info("x", DataType::Double, &[2, 3])],
        output: vec![value_info("loss", DataType::Double, &[])],
        ..Default::default()
    };
    let mut g = Graph::lift(model(forward)).unwrap();
    let inference = infer(&g, &[("x".to_owned(), vec![2, 3])]).unwrap();
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/Dropout/y' (Dropout): Dropout: training-mode Dropout needs its mask output to be differentiated"
    );
}

#[test]
fn training_batch_norm_refuses_gradients_through_its_running_statistics() {
    // The rule differentiates Y only; a loss reading the updated running mean would lose that path.
    let c = [2usize];
    let forward = GraphProto {
        node: vec![
            node(
                "BatchNormalization",
                &["x", "scale", "bias", "mean", "var"],
                &["y", "running_mean", "running_var"],
                vec![("training_mode", A::I(1))],
            ),
            node("ReduceSum", &["y"], &["sy"], vec![("keepdims", A::I(0))]),
            node(
                "ReduceSum",
                &["running_mean"],
                &["sm"],
                vec![("keepdims", A::I(0))],
            ),
            node("Add", &["sy", "sm"], &["loss"], vec![]),
        ],
        initializer: vec![
            f64_init("scale", &c, &[1.0, 2.0]),
            f64_init("bias", &c, &[0.0, 0.5]),
            f64_init("mean", &c, &[0.0, 0.0]),
            f64_init("var", &c, &[1.0, 1.0]),
        ],
        input: vec![value_info("x", DataType::Double, &[3, 2])],
        output: vec![value_info("loss", DataType::Double, &[])],
        ..Default::default()
    };
    let mut g = Graph::lift(model(forward)).unwrap();
    let inference = infer(&g, &[("x".to_owned(), vec![3, 2])]).unwrap();
    let err = differentiate(&mut g, "loss", &["x".to_owned()], &inference).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'fwd/BatchNormalization/y' (BatchNormalization): BatchNormalization: gradients through the \
         running-statistics outputs are not supported"
    );
}

#[test]
fn small_cnn_with_training_batch_norm() {
    // Conv → BatchNormalization (training) → Relu → MaxPool 3x3 s2 p1 → depthwise Conv s2 → Conv 1x1 →
    // GlobalAveragePool → Flatten → Gemm: every parameter and the input checked at once.
    let c = Case::new("small cnn", "y")
        .input("x", &[2, 2, 9, 9])
        .input("w1", &[4, 2, 3, 3])
        .input("b1", &[4])
        .input_in("g", &[4], 0.5, 1.5)
        .input("beta", &[4])
        .input("rm", &[4])
        .input_in("rv", &[4], 0.5, 1.5)
        .input("w2", &[4, 1, 3, 3])
        .input("w3", &[3, 4, 1, 1])
        .input("fc", &[5, 3])
        .input("fcb", &[5])
        .node(node(
            "Conv",
            &["x", "w1", "b1"],
            &["c1"],
            vec![("pads", A::Is(vec![1, 1, 1, 1]))],
        ))
        .node(node(
            "BatchNormalization",
            &["c1", "g", "beta", "rm", "rv"],
            &["bn", "rm.next", "rv.next"],
            vec![("training_mode", A::I(1))],
        ))
        .node(node("Relu", &["bn"], &["r"], vec![]))
        .node(node(
            "MaxPool",
            &["r"],
            &["mp"],
            pool_attrs(&[3, 3], &[2, 2], &[1, 1, 1, 1], vec![]),
        ))
        .node(node(
            "Conv",
            &["mp", "w2"],
            &["c2"],
            vec![
                ("group", A::I(4)),
                ("strides", A::Is(vec![2, 2])),
                ("pads", A::Is(vec![1, 1, 1, 1])),
            ],
        ))
        .node(node("Conv", &["c2", "w3"], &["c3"], vec![]))
        .node(node("GlobalAveragePool", &["c3"], &["gap"], vec![]))
        .node(node("Flatten", &["gap"], &["f"], vec![("axis", A::I(1))]))
        .node(node(
            "Gemm",
            &["f", "fc", "fcb"],
            &["y"],
            vec![("transB", A::I(1))],
        ));
    check(c, 500);
}

#[test]
fn expand_broadcasts_both_ways() {
    for (x, shape) in [
        (&[3usize, 1][..], &[2i64, 3, 4][..]),
        (&[2, 3, 4], &[3, 1]),
        (&[1, 4], &[3, 1]),
        (&[], &[2, 2]),
    ] {
        let c = Case::new(format!("Expand {x:?} to {shape:?}"), "y")
            .input("x", x)
            .ints("s", shape)
            .node(node("Expand", &["x", "s"], &["y"], vec![]));
        check(c, 600);
    }
}

#[test]
fn split_with_sizes_and_unused_outputs() {
    let c = Case::new("split sizes input, all used", "y")
        .input("x", &[2, 7, 3])
        .ints("sizes", &[2, 4, 1])
        .node(node(
            "Split",
            &["x", "sizes"],
            &["a", "b", "c"],
            vec![("axis", A::I(1))],
        ))
        .node(node(
            "ReduceSum",
            &["b"],
            &["bs"],
            vec![("keepdims", A::I(1))],
        ))
        .node(node("Mul", &["a", "bs"], &["ab"], vec![]))
        .node(node(
            "Concat",
            &["ab", "c"],
            &["y"],
            vec![("axis", A::I(1))],
        ));
    check(c, 610);
    let c = Case::new("split equal, one output unused", "y")
        .input("x", &[6, 2])
        .node(node("Split", &["x"], &["a", "b", "c"], vec![]))
        .node(node("Mul", &["a", "c"], &["y"], vec![]));
    check(c, 611);
    let c = Case::new("split last axis equal", "y")
        .input("x", &[2, 4])
        .node(node("Split", &["x"], &["a", "b"], vec![("axis", A::I(-1))]))
        .node(node("Neg", &["b"], &["y"], vec![]));
    check(c, 612);
}

#[test]
fn conv_and_pools_auto_pad_and_3d() {
    let cases = vec![
        conv_case(
            // (ORT runs no dilation with SAME_*, so none here)
            "SAME_LOWER stride 2",
            &[1, 2, 7, 6],
            &[3, 2, 3, 2],
            true,
            vec![
                ("strides", A::Is(vec![2, 2])),
                ("auto_pad", A::S("SAME_LOWER")),
            ],
        ),
        conv_case(
            "VALID stride 3",
            &[2, 2, 8, 7],
            &[2, 2, 2, 3],
            false,
            vec![("strides", A::Is(vec![3, 3])), ("auto_pad", A::S("VALID"))],
        ),
        conv_case(
            "3-D stride (2,1,2), pads, groups 2",
            &[1, 4, 5, 4, 5],
            &[2, 2, 2, 3, 2],
            true,
            vec![
                ("strides", A::Is(vec![2, 1, 2])),
                ("pads", A::Is(vec![1, 0, 1, 0, 1, 0])),
                ("group", A::I(2)),
            ],
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(c, 700 + i as u64);
    }
    for op in ["MaxPool", "AveragePool"] {
        let c = Case::new(format!("{op} SAME_UPPER 3x3 s2"), "y")
            .input("x", &[2, 2, 6, 7])
            .node(node(
                op,
                &["x"],
                &["y"],
                vec![
                    ("kernel_shape", A::Is(vec![3, 3])),
                    ("strides", A::Is(vec![2, 2])),
                    ("auto_pad", A::S("SAME_UPPER")),
                ],
            ));
        check(c, 710);
    }
}
