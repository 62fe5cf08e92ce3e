//! The rewritten model computes exactly what the original computes with each replaced tensor set to
//! a·prev + b·next (checked with tract on seeded random inputs).

mod common;

use rl_passes::analysis::units::UnitKind;
use rl_passes::onnx::ModelProto;
use rl_passes::pipeline::{rewrite, RewriteOptions};
use rl_rewrite::commands::tract_max_diff;
use rl_rewrite::reference::with_integrated_weights;

/// The rewrite of `model` (every 2) freezes `frozen` units and computes exactly what the original computes with
/// each replaced tensor set to `a·prev + b·next`, for two settings of a and b.
fn check_equivalence(name: &str, model: ModelProto, unit: UnitKind, batch: usize, frozen: usize) {
    for (a, b) in [(1.0, 0.0), (0.5, 0.5)] {
        let opts = RewriteOptions {
            unit,
            every: 2,
            offset: 0,
            init_a: a,
            init_b: b,
        };
        let rewritten = rewrite(model.clone(), &opts).unwrap();
        assert_eq!(rewritten.plan.frozen.len(), frozen, "{name}: frozen units");
        let reference =
            with_integrated_weights(&model, &rewritten.plan, a as f32, b as f32).unwrap();
        let diff = tract_max_diff(&rewritten.model, &reference, batch, 11).unwrap();
        assert!(
            diff <= 1e-5,
            "{name} ({a}/{b}): rewritten vs reference differ by {diff}"
        );
        // The check can fail: the rewrite really changes what the model computes.
        let changed = tract_max_diff(&rewritten.model, &model, batch, 11).unwrap();
        assert!(
            changed > 1e-4,
            "{name} ({a}/{b}): the rewrite changed nothing (max diff {changed})"
        );
        println!("{name} a={a} b={b}: {} units frozen, |rewritten − reference| = {diff:.2e}, |rewritten − original| = {changed:.2e}", rewritten.plan.frozen.len());
    }
}

#[test]
fn resnet32_blocks() {
    check_equivalence(
        "resnet32",
        common::zoo("resnet32", None, None),
        UnitKind::Block,
        2,
        4,
    );
}

#[test]
fn resnet56_blocks() {
    check_equivalence(
        "resnet56",
        common::zoo("resnet56", None, None),
        UnitKind::Block,
        2,
        10,
    );
}

#[test]
fn vit_ti_blocks_at_32px() {
    check_equivalence(
        "vit-ti",
        common::zoo("vit-ti", Some(32), Some(10)),
        UnitKind::Block,
        2,
        5,
    );
}

#[test]
fn resnet18_layers() {
    check_equivalence(
        "resnet18",
        common::zoo("resnet18", Some(64), Some(10)),
        UnitKind::Layer,
        2,
        1,
    );
}
