//! Element-wise ops: broadcasting arithmetic, Pow, Max and Min, unary functions, Relu, Cast, the GELU pattern
//! and the Gelu op, Clip, the piecewise activations (Abs, LeakyRelu, HardSigmoid, HardSwish).

use crate::check::{check, f64_init, fwd, Case};
use rl_passes::onnx::AttributeProto;
use rl_passes::testing::attr;

fn binary(op: &'static str, sa: &[usize], sb: &[usize], positive_b: bool) -> Case {
    let c = Case::new(format!("{op} {sa:?} {sb:?}"), "y").input("a", sa);
    let c = if positive_b {
        c.input_in("b", sb, 0.5, 2.0)
    } else {
        c.input("b", sb)
    };
    c.node(fwd(op, &["a", "b"], &["y"], vec![]))
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
        .node(fwd("Mul", &["x", "x"], &["sq"], vec![]))
        .node(fwd("Add", &["sq", "x"], &["y"], vec![]));
    check(c, 1);
}

#[test]
fn pow_constant_and_variable_exponent() {
    let c = Case::new("pow const", "y")
        .input_in("x", &[2, 3], 0.5, 2.0)
        // Constant node with a float64 scalar value.
        .node(fwd(
            "Constant",
            &[],
            &["p"],
            vec![attr::tensor("value", f64_init("", &[], &[2.5]))],
        ))
        .node(fwd("Pow", &["x", "p"], &["y"], vec![]));
    check(c, 1);
    for (sa, sb) in [
        (&[2usize, 3][..], &[3usize][..]),
        (&[3], &[2, 3]),
        (&[2, 3], &[]),
    ] {
        let c = Case::new(format!("pow {sa:?} {sb:?}"), "y")
            .input_in("a", sa, 0.5, 2.0)
            .input_in("b", sb, -1.5, 2.5)
            .node(fwd("Pow", &["a", "b"], &["y"], vec![]));
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
                .node(fwd(op, &["x"], &["y"], vec![]));
        check(c, 3);
    }
}

#[test]
fn relu_away_from_the_kink() {
    // Values in ±[0.05, 1]: the kink at 0 is never within eps.
    let c = Case::new("relu", "y")
        .input_in("x", &[4, 5], 0.05, 1.0)
        .node(fwd("Neg", &["x"], &["nx"], vec![]))
        .node(fwd(
            "Concat",
            &["x", "nx"],
            &["both"],
            vec![attr::int("axis", 0)],
        ))
        .node(fwd("Relu", &["both"], &["y"], vec![]));
    check(c, 4);
}

#[test]
fn cast_round_trip_through_float64() {
    let c = Case::new("cast", "y").input("x", &[3, 2]).node(fwd(
        "Cast",
        &["x"],
        &["y"],
        vec![attr::int("to", 11)],
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
        .node(fwd("Div", &["x", "sqrt2"], &["t"], vec![]))
        .node(fwd("Erf", &["t"], &["e"], vec![]))
        .node(fwd("Add", &["e", "one"], &["p"], vec![]))
        .node(fwd("Mul", &["x", "p"], &["q"], vec![]))
        .node(fwd("Mul", &["q", "half"], &["y"], vec![]));
    check(c, 6);
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
    c = c.node(fwd("Clip", &["x", "lo", "hi"], &["y"], vec![]));
    check(c, 430);
    let mut c = Case::new("clip inside", "y").input("x", &[3, 4]);
    c.inits.push(f64_init("lo", &[], &[-2.0]));
    c.inits.push(f64_init("hi", &[], &[2.0]));
    let c = c.node(fwd("Clip", &["x", "lo", "hi"], &["y"], vec![]));
    check(c, 431);
    let mut c = Case::new("clip min only (relu6-like lower)", "y").input("x", &[2, 5]);
    c.inits.push(f64_init("lo", &[], &[0.0]));
    let c = c.node(fwd("Clip", &["x", "lo"], &["y"], vec![]));
    check(c, 432);
    let mut c = Case::new("clip max only", "y").input("x", &[2, 5]);
    c.inits.push(f64_init("hi", &[], &[0.0]));
    let c = c.node(fwd("Clip", &["x", "", "hi"], &["y"], vec![]));
    check(c, 433);
}

#[test]
fn max_min_broadcasting_and_variadic() {
    // Random inputs never tie; the gradient at ties is checked in conventions.rs.
    for op in ["Max", "Min"] {
        for (i, (sa, sb)) in BROADCASTS.iter().enumerate() {
            check(binary(op, sa, sb, false), 440 + i as u64);
        }
        let c = Case::new(format!("{op} of three"), "y")
            .input("a", &[2, 3])
            .input("b", &[3])
            .input("c", &[2, 1])
            .node(fwd(op, &["a", "b", "c"], &["y"], vec![]));
        check(c, 450);
        let c = Case::new(format!("{op} of one"), "y")
            .input("a", &[2, 3])
            .node(fwd(op, &["a"], &["y"], vec![]));
        check(c, 451);
    }
}

#[test]
fn piecewise_activations_away_from_their_knots() {
    // x in ±[0.05, 4]: on both sides of 0 (Abs, LeakyRelu) and of ±3 (HardSwish, HardSigmoid with alpha 1/6)
    // and of ±2.5 (HardSigmoid's defaults); a value within eps of a knot is improbable with these seeds
    // (the check would show it). The gradients at the knots are checked in conventions.rs.
    let cases: Vec<(&str, &str, Vec<AttributeProto>)> = vec![
        ("Abs", "", vec![]),
        ("LeakyRelu", "", vec![]),
        ("LeakyRelu", " alpha 0.25", vec![attr::float("alpha", 0.25)]),
        ("HardSigmoid", "", vec![]),
        (
            "HardSigmoid",
            " alpha 1/6",
            vec![attr::float("alpha", 1.0 / 6.0), attr::float("beta", 0.5)],
        ),
        ("HardSwish", "", vec![]),
    ];
    for (i, (op, label, attrs)) in cases.into_iter().enumerate() {
        let c = Case::new(format!("{op}{label}"), "y")
            .input_in("x", &[4, 5], 0.05, 4.0)
            .node(fwd("Neg", &["x"], &["nx"], vec![]))
            .node(fwd(
                "Concat",
                &["x", "nx"],
                &["both"],
                vec![attr::int("axis", 0)],
            ))
            .node(fwd(op, &["both"], &["y"], attrs));
        check(c, 460 + i as u64);
    }
}

#[test]
fn gelu_op() {
    for (i, approximate) in ["none", "tanh"].into_iter().enumerate() {
        let c = Case::new(format!("Gelu {approximate}"), "y")
            .opset(20)
            .input_in("x", &[3, 4], -3.0, 3.0)
            .node(fwd(
                "Gelu",
                &["x"],
                &["y"],
                vec![attr::string("approximate", approximate)],
            ));
        check(c, 470 + i as u64);
    }
}
