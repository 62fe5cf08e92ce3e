//! The finite-difference checker: a [`Case`] is a small float64 forward graph; [`check`] differentiates its
//! weighted loss, runs forward and backward in tract and compares every checked gradient element with a central
//! difference.

use std::collections::HashMap;

use prost::Message;
use rl_passes::analysis::shapes::{infer, infer_shapes};
use rl_passes::autodiff::differentiate;
use rl_passes::ir::Graph;
use rl_passes::onnx::{tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, TensorProto};
use rl_passes::testing::{
    attr, f64_tensor, i64_dims, i64_tensor, node, tensor_value, tract_f64_equivalents,
    ModelBuilder, NodeExt, XorShift, SCALAR,
};
use tract_onnx::prelude::*;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;
/// Elements checked per input (all of them when the input is smaller).
const MAX_CHECKED: usize = 40;

/// A forward node of a case, named `fwd/OP/OUTPUT` (error messages and the tract workarounds go by it).
pub fn fwd(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    node(op, inputs, outputs)
        .named(format!("fwd/{op}/{}", outputs[0]))
        .attrs(attrs)
}

/// A float64 tensor of the given shape.
pub fn f64_init(name: &str, dims: &[usize], values: &[f64]) -> TensorProto {
    f64_tensor(name, &i64_dims(dims), values)
}

/// A model of `nodes` with float64 input `x` of `x_shape` and a float64 output `output` of unknown shape.
pub fn forward_model(
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    x_shape: &[usize],
    output: &str,
) -> ModelProto {
    ModelBuilder::unnamed()
        .nodes(nodes)
        .initializers(initializers)
        .input("x", DataType::Double, x_shape)
        .output(output, DataType::Double, SCALAR)
        .build()
}

/// One op under test.
pub struct Case {
    pub name: String,
    /// float64 inputs: name, shape, sampling range.
    pub inputs: Vec<(&'static str, Vec<usize>, f64, f64)>,
    /// Integer graph inputs (indices): name, shape, values.
    pub int_inputs: Vec<(&'static str, Vec<usize>, Vec<i64>)>,
    pub inits: Vec<TensorProto>,
    pub nodes: Vec<NodeProto>,
    pub output: &'static str,
    /// The default-domain opset, when not the builder's default.
    pub opset: Option<i64>,
}

impl Case {
    pub fn new(name: impl Into<String>, output: &'static str) -> Case {
        Case {
            name: name.into(),
            inputs: vec![],
            int_inputs: vec![],
            inits: vec![],
            nodes: vec![],
            output,
            opset: None,
        }
    }
    /// Imports the default domain at `version` (Gelu needs 20).
    pub fn opset(mut self, version: i64) -> Case {
        self.opset = Some(version);
        self
    }
    pub fn input(mut self, name: &'static str, shape: &[usize]) -> Case {
        self.inputs.push((name, shape.to_vec(), -1.0, 1.0));
        self
    }
    pub fn input_in(mut self, name: &'static str, shape: &[usize], lo: f64, hi: f64) -> Case {
        self.inputs.push((name, shape.to_vec(), lo, hi));
        self
    }
    pub fn ints(mut self, name: &str, values: &[i64]) -> Case {
        self.inits
            .push(i64_tensor(name, &[values.len() as i64], values));
        self
    }
    pub fn node(mut self, n: NodeProto) -> Case {
        self.nodes.push(n);
        self
    }

    /// The forward graph: the nodes, float64 then int64 inputs, the output as a float64 scalar.
    fn forward(&self) -> Graph {
        let mut m = ModelBuilder::new(&self.name)
            .nodes(self.nodes.clone())
            .initializers(self.inits.clone());
        if let Some(v) = self.opset {
            m = m.opset("", v);
        }
        for (n, s, _, _) in &self.inputs {
            m = m.input(n, DataType::Double, s);
        }
        for (n, s, _) in &self.int_inputs {
            m = m.input(n, DataType::Int64, s);
        }
        let m = m.output(self.output, DataType::Double, SCALAR).build();
        Graph::lift(m).expect("forward graph")
    }

    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let float = self
            .inputs
            .iter()
            .map(|(n, s, _, _)| (n.to_string(), s.clone()));
        let int = self
            .int_inputs
            .iter()
            .map(|(n, s, _)| (n.to_string(), s.clone()));
        float.chain(int).collect()
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

/// The loss `ReduceSum(Mul(y, R))` of the case's output, differentiated with respect to every float64 input;
/// returns the model (outputs: loss, then the gradients) and the inputs' names.
/// `weights(n)` gives the n values of R.
fn backward_model(
    case: &Case,
    weights: impl FnOnce(usize) -> Vec<f64>,
) -> (ModelProto, Vec<String>, HashMap<String, Vec<usize>>) {
    let mut g = case.forward();
    let shape_in = case.shapes();
    let types = infer_shapes(&g, &shape_in).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let yshape = types[case.output].shape.clone();
    let r = weights(yshape.iter().product::<usize>());
    assert_eq!(
        r.len(),
        yshape.iter().product::<usize>(),
        "{}: weights",
        case.name
    );
    g.add_initializer(f64_init("R", &yshape, &r));
    g.add_nodes([
        fwd("Mul", &[case.output, "R"], &["weighted"], vec![]),
        fwd(
            "ReduceSum",
            &["weighted"],
            &["loss"],
            vec![attr::int("keepdims", 0)],
        ),
    ])
    .unwrap();
    let inference = infer(&g, &shape_in).unwrap();
    let types = &inference.types;
    let wrt: Vec<String> = case.inputs.iter().map(|(n, ..)| n.to_string()).collect();
    let grads = differentiate(&mut g, "loss", &wrt, &inference)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    g.proto.output = vec![tensor_value("loss", DataType::Double, SCALAR)];
    for w in &wrt {
        let s = &types[w].shape;
        g.proto
            .output
            .push(tensor_value(&grads[w], DataType::Double, s));
    }
    let shapes = types
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    (g.lower().unwrap(), wrt, shapes)
}

fn runnable(case: &Case, bytes: &[u8]) -> std::sync::Arc<TypedRunnableModel> {
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
    tm.into_optimized()
        .unwrap_or_else(|e| panic!("{}: tract optimize: {e:?}", case.name))
        .into_runnable()
        .unwrap()
}

/// The model as tract runs it: the forward nodes tract cannot run in float64 replaced by exact
/// equivalents, and so are the backward graph's Erf and Tanh nodes (tract has no float64 kernel for them).
fn for_tract(model: &ModelProto, shapes: &HashMap<String, Vec<usize>>) -> Vec<u8> {
    let mut m = model.clone();
    activations_as_definitions(&mut m);
    tract_f64_equivalents(&mut m, shapes, |n| {
        n.name().starts_with("fwd/") || matches!(n.op_type(), "Erf" | "Tanh")
    });
    m.encode_to_vec()
}

/// Replaces each forward node of the ops tract has no float64 kernel for and `tract_f64_equivalents` does
/// not cover by its definition in standard ops: Gelu (`x·(1 + erf(x/√2))/2`, or with `approximate = "tanh"`
/// `x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2`), HardSwish (`x·min(max(x/6 + 1/2, 0), 1)`) and LeakyRelu
/// (`x > 0 ? x : alpha·x`).
fn activations_as_definitions(model: &mut ModelProto) {
    let graph = model.graph.as_mut().expect("a model with a graph");
    for n in std::mem::take(&mut graph.node) {
        let op = n.op_type().to_owned();
        if !matches!(op.as_str(), "Gelu" | "HardSwish" | "LeakyRelu")
            || !n.name().starts_with("fwd/")
        {
            graph.node.push(n);
            continue;
        }
        let (x, y) = (n.input[0].as_str(), n.output[0].as_str());
        let p = |s: &str| format!("fwd/def/{y}/{s}");
        let mut scalar = |local: &str, v: f64| {
            graph.initializer.push(f64_init(&p(local), &[], &[v]));
            p(local)
        };
        let (zero, half, one) = (scalar("zero", 0.0), scalar("half", 0.5), scalar("one", 1.0));
        let mut nodes = vec![];
        let mut push = |op: &str, ins: &[&str], out: &str| {
            nodes.push(node(op, ins, &[out]).named(format!("fwd/def/{out}")))
        };
        match op.as_str() {
            "Gelu" => {
                if n.attribute.iter().any(|a| a.s.as_deref() == Some(b"tanh")) {
                    let (kappa, beta) = (
                        scalar("kappa", 0.044715),
                        scalar("beta", std::f64::consts::FRAC_2_PI.sqrt()),
                    );
                    push("Mul", &[x, x], &p("sq"));
                    push("Mul", &[&p("sq"), &kappa], &p("ksq"));
                    push("Add", &[&p("ksq"), &one], &p("poly"));
                    push("Mul", &[x, &p("poly")], &p("cubic"));
                    push("Mul", &[&p("cubic"), &beta], &p("u"));
                    push("Tanh", &[&p("u")], &p("s"));
                } else {
                    let r = scalar("r", std::f64::consts::FRAC_1_SQRT_2);
                    push("Mul", &[x, &r], &p("u"));
                    push("Erf", &[&p("u")], &p("s"));
                }
                push("Add", &[&p("s"), &one], &p("s1"));
                push("Mul", &[&p("s1"), &half], &p("cdf"));
                push("Mul", &[x, &p("cdf")], y);
            }
            "HardSwish" => {
                let sixth = scalar("sixth", 1.0 / 6.0);
                push("Mul", &[x, &sixth], &p("z0"));
                push("Add", &[&p("z0"), &half], &p("z"));
                push("Max", &[&p("z"), &zero], &p("lo"));
                push("Min", &[&p("lo"), &one], &p("hs"));
                push("Mul", &[x, &p("hs")], y);
            }
            _ => {
                let a = n.attribute.iter().find_map(|a| a.f).unwrap_or(0.01);
                let alpha = scalar("alpha", a as f64);
                push("Greater", &[x, &zero], &p("pos"));
                push("Mul", &[x, &alpha], &p("neg"));
                push("Where", &[&p("pos"), x, &p("neg")], y);
            }
        }
        graph.node.extend(nodes);
    }
}

/// The gradients of `ReduceSum(Mul(y, weights))` with respect to the case's float64 inputs at the given
/// input values (one vector per input, in order), as tract computes them from the differentiated graph.
pub fn gradients_at(case: &Case, values: &[Vec<f64>], weights: &[f64]) -> Vec<Vec<f64>> {
    let (model, wrt, shapes) = backward_model(case, |_| weights.to_vec());
    let bytes = for_tract(&model, &shapes);
    let plan = runnable(case, &bytes);
    assert_eq!(
        values.len(),
        case.inputs.len(),
        "{}: one value per input",
        case.name
    );
    let feeds: Vec<(Vec<usize>, Vec<f64>)> = case
        .inputs
        .iter()
        .zip(values)
        .map(|((_, s, _, _), v)| (s.clone(), v.clone()))
        .collect();
    let ints = int_feeds(case);
    let outs = run(&plan, &feeds, &ints);
    dump_for_ort(
        &case.name,
        &bytes,
        &model.encode_to_vec(),
        &feeds,
        &ints,
        &outs,
    );
    outs[1..=wrt.len()].to_vec()
}

/// The case's integer inputs as (shape, values) feeds.
fn int_feeds(case: &Case) -> Vec<(Vec<usize>, Vec<i64>)> {
    case.int_inputs
        .iter()
        .map(|(_, s, v)| (s.clone(), v.clone()))
        .collect()
}

pub fn check(case: Case, seed: u64) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (model, wrt, shapes) =
        backward_model(&case, |n| (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect());
    let native = model.encode_to_vec();
    let bytes = for_tract(&model, &shapes);
    let plan = runnable(&case, &bytes);
    let mut feeds: Vec<(Vec<usize>, Vec<f64>)> = case
        .inputs
        .iter()
        .map(|(_, s, lo, hi)| {
            let n = s.iter().product();
            (s.clone(), (0..n).map(|_| rng.uniform(*lo, *hi)).collect())
        })
        .collect();
    let ints = int_feeds(&case);
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
