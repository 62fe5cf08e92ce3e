//! Gradients at the points where an op is not differentiable (kinks, knots, ties), which finite differences
//! cannot check: each case feeds inputs that hit those points exactly, next to ordinary points, and compares
//! the compiled gradient with PyTorch's. The expected values are written out from the definition of the
//! torch backward named at each test (and were checked against torch 2.15); the loss weights each output
//! element differently, so a gradient routed to the wrong element shows.

use crate::check::{f64_init, fwd, gradients_at, Case};
use rl_passes::onnx::AttributeProto;
use rl_passes::testing::attr;

/// |got − want| ≤ 1e-12 · max(1, |want|) for every element (exact up to the float64 rounding of smooth
/// parts such as Gelu's).
fn assert_close(name: &str, input: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: size of d/d{input}");
    for (e, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{name}: d loss / d {input}[{e}] is {g}, PyTorch gives {w}\n  got  {got:?}\n  want {want:?}"
        );
    }
}

/// Checks the gradients of `ReduceSum(y · weights)` with respect to each input of `case` at `values`.
fn expect(case: Case, values: &[&[f64]], weights: &[f64], want: &[&[f64]]) {
    let values: Vec<Vec<f64>> = values.iter().map(|v| v.to_vec()).collect();
    let got = gradients_at(&case, &values, weights);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(&case.name, case.inputs[k].0, g, w);
    }
}

/// `y = OP(x)` on a vector x of `n` elements.
fn unary(op: &str, n: usize, attrs: Vec<AttributeProto>) -> Case {
    Case::new(op, "y")
        .input("x", &[n])
        .node(fwd(op, &["x"], &["y"], attrs))
}

/// 1, 2, …, n.
fn ramp(n: usize) -> Vec<f64> {
    (1..=n).map(|i| i as f64).collect()
}

#[test]
fn relu_is_zero_at_zero() {
    // torch.nn.functional.relu: threshold_backward, `x <= 0 → 0`.
    let x = [-1.0, -0.0, 0.0, 0.5, 2.0];
    let want = [0.0, 0.0, 0.0, 4.0, 5.0];
    expect(unary("Relu", 5, vec![]), &[&x], &ramp(5), &[&want]);
}

#[test]
fn clip_excludes_its_bounds() {
    // torch.nn.functional.relu6 / hardtanh (nn.ReLU6, nn.Hardtanh): `x <= min or x >= max → 0`.
    let relu6 = |lo: Option<f64>, hi: Option<f64>, name: &str| {
        let mut c = Case::new(name, "y").input("x", &[5]);
        let mut ins = vec!["x"];
        for (b, v) in [("lo", lo), ("hi", hi)] {
            match v {
                Some(v) => {
                    c.inits.push(f64_init(b, &[], &[v]));
                    ins.push(b);
                }
                None => ins.push(""),
            }
        }
        while ins.last() == Some(&"") {
            ins.pop();
        }
        c.node(fwd("Clip", &ins, &["y"], vec![]))
    };
    let w = ramp(5);
    let x = [-1.0, 0.0, 3.0, 6.0, 7.0];
    expect(
        relu6(Some(0.0), Some(6.0), "relu6"),
        &[&x],
        &w,
        &[&[0.0, 0.0, 3.0, 0.0, 0.0]],
    );
    let x = [-2.0, -1.0, 0.0, 1.0, 2.0];
    let want = [0.0, 0.0, 3.0, 0.0, 0.0];
    expect(
        relu6(Some(-1.0), Some(1.0), "hardtanh"),
        &[&x],
        &w,
        &[&want],
    );
    let want = [0.0, 0.0, 3.0, 4.0, 5.0];
    expect(relu6(Some(-1.0), None, "min only"), &[&x], &w, &[&want]);
    let want = [1.0, 2.0, 3.0, 0.0, 0.0];
    expect(relu6(None, Some(1.0), "max only"), &[&x], &w, &[&want]);
}

#[test]
fn clip_bounds_take_the_gradient_where_they_are_the_output() {
    // With x exclusive at the bounds, lo gets dY where x ≤ lo < hi and hi where x ≥ hi or lo ≥ hi, so that
    // the three gradients sum to dY at every element (the sum rule torch.clamp with tensor bounds keeps too).
    let case = || {
        Case::new("clip bound inputs", "y")
            .input("x", &[5])
            .input("lo", &[])
            .input("hi", &[])
            .node(fwd("Clip", &["x", "lo", "hi"], &["y"], vec![]))
    };
    let w = ramp(5);
    let x = [-2.0, -1.0, 0.0, 1.0, 2.0];
    let want: [&[f64]; 3] = [&[0.0, 0.0, 3.0, 0.0, 0.0], &[3.0], &[9.0]];
    expect(case(), &[&x, &[-1.0], &[1.0]], &w, &want);
    // lo > hi: the output is hi everywhere (torch.clamp gives hi all of it too).
    let want: [&[f64]; 3] = [&[0.0; 5], &[0.0], &[15.0]];
    expect(case(), &[&x, &[1.0], &[-1.0]], &w, &want);
    // lo = hi: likewise hi.
    expect(case(), &[&x, &[0.0], &[0.0]], &w, &want);
}

#[test]
fn abs_is_zero_at_zero() {
    // torch.abs: `grad · sgn(x)`.
    let x = [-2.0, 0.0, -0.0, 3.0];
    let want = [-1.0, 0.0, 0.0, 4.0];
    expect(unary("Abs", 4, vec![]), &[&x], &ramp(4), &[&want]);
}

#[test]
fn leaky_relu_takes_the_negative_slope_at_zero() {
    // torch.nn.functional.leaky_relu: `x > 0 ? grad : grad · negative_slope`.
    let x = [-2.0, 0.0, 3.0];
    let slope = vec![attr::float("alpha", 0.25)];
    expect(
        unary("LeakyRelu", 3, slope),
        &[&x],
        &ramp(3),
        &[&[0.25, 0.5, 3.0]],
    );
    // The default alpha, 0.01 as the float32 attribute holds it.
    let a = 0.01f32 as f64;
    let want = [a, 2.0 * a, 3.0];
    expect(unary("LeakyRelu", 3, vec![]), &[&x], &ramp(3), &[&want]);
}

#[test]
fn hard_sigmoid_is_zero_at_its_knots() {
    // torch.nn.functional.hardsigmoid: `-3 < x < 3 ? grad / 6 : 0`, exported with alpha = 1/6, beta = 1/2.
    let a = (1.0f32 / 6.0) as f64;
    let torch_like = vec![attr::float("alpha", 1.0 / 6.0), attr::float("beta", 0.5)];
    let x = [-4.0, -3.0, 0.0, 1.0, 3.0, 4.0];
    let want = [0.0, 0.0, 3.0 * a, 4.0 * a, 0.0, 0.0];
    expect(
        unary("HardSigmoid", 6, torch_like),
        &[&x],
        &ramp(6),
        &[&want],
    );
    // ONNX's defaults, alpha = 0.2 and beta = 0.5: the knots move to ∓2.5, still excluded.
    let a = 0.2f32 as f64;
    let x = [-3.0, -2.5, -1.0, 0.0, 2.5, 3.0];
    let want = [0.0, 0.0, 3.0 * a, 4.0 * a, 0.0, 0.0];
    expect(unary("HardSigmoid", 6, vec![]), &[&x], &ramp(6), &[&want]);
}

#[test]
fn hard_swish_takes_the_outer_pieces_at_its_knots() {
    // torch.nn.functional.hardswish: `x <= -3 → 0`, `x < 3 → x/3 + 1/2`, else 1.
    let x = [-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 4.0];
    let d = [0.0, 0.0, 1.0 / 6.0, 0.5, 5.0 / 6.0, 1.0, 1.0];
    let want: Vec<f64> = d.iter().zip(ramp(7)).map(|(d, w)| d * w).collect();
    expect(unary("HardSwish", 7, vec![]), &[&x], &ramp(7), &[&want]);
}

/// `y = OP(inputs…)` on float inputs of the given shapes.
fn variadic(op: &str, shapes: &[(&'static str, &[usize])]) -> Case {
    let names: Vec<&str> = shapes.iter().map(|(n, _)| *n).collect();
    let mut c = Case::new(format!("{op} {shapes:?}"), "y");
    for (n, s) in shapes {
        c = c.input(n, s);
    }
    c.node(fwd(op, &names, &["y"], vec![]))
}

#[test]
fn max_and_min_split_ties_equally() {
    // torch.maximum / torch.minimum: half to each of two equal arguments.
    let (a, b) = ([1.0, 2.0, 3.0], [1.0, 1.0, 4.0]);
    let w = ramp(3);
    let two = || [("a", &[3usize][..]), ("b", &[3][..])];
    expect(
        variadic("Max", &two()),
        &[&a, &b],
        &w,
        &[&[0.5, 2.0, 0.0], &[0.5, 0.0, 3.0]],
    );
    expect(
        variadic("Min", &two()),
        &[&a, &b],
        &w,
        &[&[0.5, 0.0, 3.0], &[0.5, 2.0, 0.0]],
    );
    // Broadcasting: b's gradient sums over the rows it was broadcast to.
    let (a, b) = ([1.0, 2.0, 3.0, 1.0], [1.0, 2.0]);
    let bc = || [("a", &[2usize, 2][..]), ("b", &[2][..])];
    let w = ramp(4);
    let want: [&[f64]; 2] = [&[0.5, 1.0, 3.0, 0.0], &[0.5, 5.0]];
    expect(variadic("Max", &bc()), &[&a, &b], &w, &want);
    let want: [&[f64]; 2] = [&[0.5, 1.0, 0.0, 4.0], &[3.5, 1.0]];
    expect(variadic("Min", &bc()), &[&a, &b], &w, &want);
    // Three inputs: each of m tied inputs gets 1/m (torch.amax / torch.amin over the stacked inputs).
    let (a, b, c) = ([1.0, 2.0, 5.0], [1.0, 2.0, 0.0], [1.0, 0.0, 0.0]);
    let three = || [("a", &[3usize][..]), ("b", &[3][..]), ("c", &[3][..])];
    let t = 1.0 / 3.0;
    let w = ramp(3);
    let want: [&[f64]; 3] = [&[t, 1.0, 3.0], &[t, 1.0, 0.0], &[t, 0.0, 0.0]];
    expect(variadic("Max", &three()), &[&a, &b, &c], &w, &want);
    let want: [&[f64]; 3] = [&[t, 0.0, 0.0], &[t, 0.0, 1.5], &[t, 2.0, 1.5]];
    expect(variadic("Min", &three()), &[&a, &b, &c], &w, &want);
}

/// Values 0 and 1 in a pattern full of ties: `(7i mod 4) div 2`.
fn tied(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7 % 4) / 2) as f64).collect()
}

#[test]
fn max_pool_routes_ties_to_the_first_maximum() {
    // torch.nn.functional.max_pool1d/2d: each window's gradient goes to one element, its first maximum in
    // scan order (row-major over the window; padding never wins), summed over overlapping windows.
    type P = (
        &'static str,
        &'static [usize],
        Vec<AttributeProto>,
        Vec<f64>,
        usize,
        &'static [i64],
    );
    let pool = |k: &[i64], s: &[i64], p: &[i64]| {
        vec![
            attr::ints("kernel_shape", k),
            attr::ints("strides", s),
            attr::ints("pads", p),
        ]
    };
    let with = |mut v: Vec<AttributeProto>, extra: AttributeProto| {
        v.push(extra);
        v
    };
    #[rustfmt::skip]
    let cases: Vec<P> = vec![
        ("non-overlapping", &[2, 2, 4, 4], pool(&[2, 2], &[2, 2], &[0; 4]), tied(64), 16, &[
            0, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 0, 0, 0, 0, 0,
            0, 9, 10, 0, 0, 0, 0, 0, 0, 11, 12, 0, 0, 0, 0, 0, 0, 13, 14, 0, 0, 0, 0, 0, 0, 15, 16, 0, 0, 0,
            0, 0,
        ]),
        ("overlapping, padded", &[2, 1, 5, 5], pool(&[3, 3], &[1, 1], &[1; 4]), tied(50), 50, &[
            0, 27, 13, 0, 0, 23, 13, 0, 0, 44, 33, 0, 0, 57, 0, 0, 0, 69, 25, 0, 0, 21, 0, 0, 0, 116, 61,
            0, 0, 128, 73, 0, 0, 117, 0, 0, 0, 129, 45, 0, 0, 182, 49, 0, 0, 0, 0, 0, 0, 50,
        ]),
        ("dilated", &[1, 2, 5, 5],
            with(pool(&[2, 2], &[1, 1], &[0; 4]), attr::ints("dilations", &[2, 2])), tied(50), 18, &[
            0, 2, 4, 0, 0, 4, 5, 0, 0, 6, 7, 0, 0, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 11, 0, 0, 12, 13,
            0, 0, 14, 15, 0, 0, 34, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]),
        ("ceil mode", &[1, 1, 5, 5],
            with(pool(&[2, 2], &[2, 2], &[0; 4]), attr::int("ceil_mode", 1)), tied(25), 9, &[
            0, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 0, 9,
        ]),
        ("negative values next to padding", &[1, 1, 7], pool(&[3], &[2], &[1, 1]),
            tied(7).iter().map(|v| -1.0 - v).collect(), 4, &[1, 0, 0, 5, 0, 4, 0]),
        ("constant", &[1, 1, 4, 4], pool(&[3, 3], &[1, 1], &[1; 4]), vec![2.0; 16], 16, &[
            14, 10, 12, 0, 19, 11, 12, 0, 27, 15, 16, 0, 0, 0, 0, 0,
        ]),
    ];
    for (name, shape, attrs, x, outputs, want) in cases {
        let c = Case::new(format!("MaxPool ties, {name}"), "y")
            .input("x", shape)
            .node(fwd("MaxPool", &["x"], &["y"], attrs));
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        expect(c, &[&x], &ramp(outputs), &[&want]);
    }
}

#[test]
fn gelu_matches_torch_at_zero_and_around() {
    // torch.nn.functional.gelu, approximate "none" and "tanh" (exported as Gelu from opset 20).
    let x = [-1.5, -0.5, 0.0, 0.5, 2.0];
    let none = [
        -0.1274691922299796,
        0.26500975068767424,
        1.5,
        3.4699804986246514,
        5.426159005390985,
    ];
    let tanh = [
        -0.12771079315143308,
        0.2652601929307153,
        1.5,
        3.4694796141385695,
        5.430496283118091,
    ];
    for (approximate, want) in [("none", none), ("tanh", tanh)] {
        let c = unary("Gelu", 5, vec![attr::string("approximate", approximate)]).opset(20);
        expect(c, &[&x], &ramp(5), &[&want]);
    }
}
