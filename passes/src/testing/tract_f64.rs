//! tract 0.23 runs some ops wrongly or not at all in float64: Sigmoid, Tanh and Erf "do not support F64"; a
//! Gemm with beta != 1 mixes a float32 beta into a float64 product; LayerNormalization (like any
//! `Mul(x, x) → ReduceSum → Mul(1/n)` chain) becomes a mean-of-squares reducer computing in float32; and, being
//! an inference engine, it runs BatchNormalization with the given mean/var whatever `training_mode` says and
//! refuses training-mode Dropout. Tests that check gradients in float64 replace such *forward* nodes, for the
//! run only, by exact float64 definitions in standard ops producing the same value names, so the graph that
//! reads those values (the backward graph under test) runs unchanged.

use std::collections::HashMap;

use crate::onnx::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto};

use super::{f64_tensor, i64_tensor, node, NodeExt, XorShift};

/// Replaces each node of `model` that `select` picks and that has a float64 equivalent (Sigmoid, Tanh, Erf,
/// Gemm with beta != 1, LayerNormalization, BatchNormalization, Dropout with a training-mode input) by that
/// equivalent, in place. `shapes` gives the static shape of the first input of the normalizations and Dropout.
/// Dropout in training mode gets a *fixed* mask (a fixed uniform draw compared with the ratio), so that finite
/// differences see one deterministic function.
pub fn tract_f64_equivalents(
    model: &mut ModelProto,
    shapes: &HashMap<String, Vec<usize>>,
    select: impl Fn(&NodeProto) -> bool,
) {
    let graph = model.graph.as_mut().expect("a model with a graph");
    for n in std::mem::take(&mut graph.node) {
        let mut e = Equivalent {
            graph,
            prefix: format!("tw/{}/", n.output[0]),
            nodes: vec![],
        };
        let replaced = select(&n)
            && match n.op_type() {
                "Sigmoid" | "Tanh" => e.logistic(&n),
                "Erf" => e.erf(&n),
                "Gemm" => e.gemm(&n),
                "LayerNormalization" | "BatchNormalization" => {
                    e.normalization(&n, &shapes[&n.input[0]])
                }
                "Dropout" if n.input.len() > 2 => e.dropout(&n, &shapes[&n.input[0]]),
                _ => false,
            };
        let nodes = std::mem::take(&mut e.nodes);
        if replaced {
            graph.node.extend(nodes);
        } else {
            graph.node.push(n);
        }
    }
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
}

fn float_attr(n: &NodeProto, name: &str) -> Option<f32> {
    n.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.f)
}

/// The replacement of one node: its nodes, and initializers added to the graph, all named under `tw/{y}/`.
struct Equivalent<'g> {
    graph: &'g mut GraphProto,
    prefix: String,
    nodes: Vec<NodeProto>,
}

impl Equivalent<'_> {
    fn name(&self, local: &str) -> String {
        format!("{}{local}", self.prefix)
    }

    fn scalar(&mut self, local: &str, v: f64) -> String {
        let name = self.name(local);
        self.graph.initializer.push(f64_tensor(&name, &[], &[v]));
        name
    }

    fn push(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.nodes.push(node(op, inputs, &[output]));
    }

    /// sigmoid(x) = 1 / (1 + e^-x); tanh(x) = 2 sigmoid(2x) - 1.
    fn logistic(&mut self, n: &NodeProto) -> bool {
        let (x, y) = (n.input[0].as_str(), n.output[0].as_str());
        let tanh = n.op_type() == "Tanh";
        let (one, two) = (self.scalar("one", 1.0), self.scalar("two", 2.0));
        let p = |s: &str| self.name(s);
        let (two_x, neg, exp, den, s2) = (p("2x"), p("neg"), p("exp"), p("den"), p("s2"));
        let arg = if tanh {
            self.push("Mul", &[x, &two], &two_x);
            two_x.as_str()
        } else {
            x
        };
        self.push("Neg", &[arg], &neg);
        self.push("Exp", &[&neg], &exp);
        self.push("Add", &[&exp, &one], &den);
        if tanh {
            self.push("Div", &[&two, &den], &s2);
            self.push("Sub", &[&s2, &one], y);
        } else {
            self.push("Div", &[&one, &den], y);
        }
        true
    }

    /// erf(x) = 2/√π Σ u_k with u_k = (−1)^k x^(2k+1) / (k! (2k+1)), 60 terms (|x| ≤ 2.5), each term from the
    /// previous one: u_k = u_{k−1} · (−x²) · (2k − 1) / (k (2k + 1)).
    fn erf(&mut self, n: &NodeProto) -> bool {
        let (x, y) = (n.input[0].clone(), n.output[0].as_str());
        let k2 = self.scalar("k", std::f64::consts::FRAC_2_SQRT_PI);
        let (x2, nx2) = (self.name("x2"), self.name("nx2"));
        self.push("Mul", &[&x, &x], &x2);
        self.push("Neg", &[&x2], &nx2);
        let (mut term, mut sum) = (x.clone(), x);
        for k in 1..60 {
            let ratio = (2 * k - 1) as f64 / (k as f64 * (2 * k + 1) as f64);
            let c = self.scalar(&format!("c{k}"), ratio);
            let (a, t, s) = (
                self.name(&format!("a{k}")),
                self.name(&format!("t{k}")),
                self.name(&format!("s{k}")),
            );
            self.push("Mul", &[&term, &nx2], &a);
            self.push("Mul", &[&a, &c], &t);
            self.push("Add", &[&sum, &t], &s);
            (term, sum) = (t, s);
        }
        self.push("Mul", &[&sum, &k2], y);
        true
    }

    /// Gemm(A, B, C; beta) = Gemm(A, B, beta · C; beta = 1).
    fn gemm(&mut self, n: &NodeProto) -> bool {
        let beta = float_attr(n, "beta").unwrap_or(1.0);
        if beta == 1.0 || n.input.len() < 3 {
            return false;
        }
        let b = self.scalar("beta", beta as f64);
        let bc = self.name("bc");
        self.push("Mul", &[&n.input[2], &b], &bc);
        let mut gemm = n.clone();
        gemm.attribute.retain(|a| a.name() != "beta");
        gemm.input[2] = bc;
        self.nodes.push(gemm);
        true
    }

    /// LayerNormalization over the trailing axes from `axis`; BatchNormalization with batch statistics (biased
    /// variance) in training mode, else with the given mean and variance. The variance is `(Σ d² + n·ε) / n`,
    /// which tract does not fuse into its float32 reducer.
    fn normalization(&mut self, n: &NodeProto, shape: &[usize]) -> bool {
        let eps = float_attr(n, "epsilon").unwrap_or(1e-5) as f64;
        let bn = n.op_type() == "BatchNormalization";
        let rank = shape.len() as i64;
        let axes: Vec<i64> = if bn {
            std::iter::once(0).chain(2..rank).collect()
        } else {
            let a = int_attr(n, "axis").unwrap_or(-1);
            (if a < 0 { a + rank } else { a }..rank).collect()
        };
        let count: usize = axes.iter().map(|&a| shape[a as usize]).product();
        let x = n.input[0].as_str();
        let y = n.output[0].as_str();
        let p = |s: &str| self.name(s);
        let (d, ve, sd, xh, xs) = (p("d"), p("ve"), p("sd"), p("xh"), p("xs"));
        let (scale, bias) = if bn {
            let channel_shape = self.name("cs");
            let mut dims = vec![shape[1] as i64];
            dims.resize(shape.len() - 1, 1);
            let dims_len = dims.len() as i64;
            self.graph
                .initializer
                .push(i64_tensor(&channel_shape, &[dims_len], &dims));
            let (s, b) = (self.name("s"), self.name("b"));
            self.push("Reshape", &[&n.input[1], &channel_shape], &s);
            self.push("Reshape", &[&n.input[2], &channel_shape], &b);
            if int_attr(n, "training_mode") != Some(1) {
                let (m, v, e) = (self.name("m"), self.name("v"), self.scalar("eps", eps));
                self.push("Reshape", &[&n.input[3], &channel_shape], &m);
                self.push("Reshape", &[&n.input[4], &channel_shape], &v);
                self.push("Add", &[&v, &e], &ve);
                self.push("Sub", &[x, &m], &d);
            } else {
                self.batch_statistics(x, &axes, count, eps);
            }
            (s, Some(b))
        } else {
            self.batch_statistics(x, &axes, count, eps);
            (n.input[1].clone(), n.input.get(2).cloned())
        };
        self.push("Sqrt", &[&ve], &sd);
        self.push("Div", &[&d, &sd], &xh);
        match bias.filter(|b| !b.is_empty()) {
            Some(b) => {
                self.push("Mul", &[&xh, &scale], &xs);
                self.push("Add", &[&xs, &b], y);
            }
            None => self.push("Mul", &[&xh, &scale], y),
        }
        true
    }

    /// `d = x − mean(x)` and `ve = var(x) + ε` over `axes` (`count` elements each).
    fn batch_statistics(&mut self, x: &str, axes: &[i64], count: usize, eps: f64) {
        let ax = self.name("axes");
        self.graph
            .initializer
            .push(i64_tensor(&ax, &[axes.len() as i64], axes));
        let n = self.scalar("n", count as f64);
        let neps = self.scalar("neps", count as f64 * eps);
        let p = |s: &str| self.name(s);
        let (ms, m, d, sq, ss, sse, ve) =
            (p("ms"), p("m"), p("d"), p("sq"), p("ss"), p("sse"), p("ve"));
        self.push("ReduceSum", &[x, &ax], &ms);
        self.push("Div", &[&ms, &n], &m);
        self.push("Sub", &[x, &m], &d);
        self.push("Mul", &[&d, &d], &sq);
        self.push("ReduceSum", &[&sq, &ax], &ss);
        self.push("Add", &[&ss, &neps], &sse);
        self.push("Div", &[&sse, &n], &ve);
    }

    /// Training-mode Dropout with a fixed mask: mask = u > ratio for a fixed uniform draw u,
    /// y = x · mask / (1 − ratio).
    fn dropout(&mut self, n: &NodeProto, shape: &[usize]) -> bool {
        let mut rng = XorShift(0x5eed);
        let numel: usize = shape.iter().product();
        let u: Vec<f64> = (0..numel).map(|_| rng.next()).collect();
        let u_name = self.name("u");
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.graph.initializer.push(f64_tensor(&u_name, &dims, &u));
        let one = self.scalar("one", 1.0);
        let ratio = n.input[1].as_str();
        let mask = n.output[1].as_str();
        let (fm, keep, sc) = (self.name("fm"), self.name("keep"), self.name("sc"));
        self.push("Greater", &[&u_name, ratio], mask);
        self.nodes
            .push(node("Cast", &[mask], &[&fm]).int("to", DataType::Double as i64));
        self.push("Sub", &[&one, ratio], &keep);
        self.push("Div", &[&fm, &keep], &sc);
        self.push("Mul", &[&n.input[0], &sc], &n.output[0]);
        true
    }
}
