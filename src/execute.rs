//! Running models: `run` (one pass, outputs to .npy) and `check` (two models, same inputs, compared).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rl_passes::io::load_model;

use crate::engine::{open_engine, Device, ElementType, EngineChoice, HostTensor, InputFact};
use crate::inputs::{input_facts, random_inputs};
use crate::npy::{read_npy, to_npy};

/// Engine options shared by the commands that execute models.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub engine: EngineChoice,
    pub device: Device,
    /// Value of symbolic dimensions (the batch) in generated inputs.
    pub batch: usize,
}

/// min, max, mean, std of a tensor.
pub fn summary(t: &HostTensor) -> (f64, f64, f64, f64) {
    let values = t.to_f64();
    let n = values.len().max(1) as f64;
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &v in &values {
        min = min.min(v);
        max = max.max(v);
        sum += v;
    }
    let mean = sum / n;
    let var = values.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / n;
    (min, max, mean, var.sqrt())
}

fn parse_input(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => bail!("--input '{spec}' must look like NAME=FILE.npy"),
    }
}

/// A tensor read from a file as the model's input `fact` takes it: integers widen to float32 for a float input;
/// floats are refused for an integer input.
fn conform(t: HostTensor, fact: &InputFact, path: &Path) -> Result<HostTensor> {
    let t = match (fact.element_type, t.element_type()) {
        (want, got) if want == got => t,
        (ElementType::F32, ElementType::I64) => HostTensor::f32(
            t.shape.clone(),
            t.to_f64().into_iter().map(|v| v as f32).collect(),
        ),
        (want, got) => bail!(
            "{} holds {} values, but input '{}' is {}",
            path.display(),
            got.name(),
            fact.name,
            want.name()
        ),
    };
    Ok(t)
}

/// `rl-rewrite run`: one run on seeded random inputs (or inputs from files), outputs summarized and written.
pub fn run_command(
    model_path: &Path,
    inputs: &[String],
    seed: u64,
    out_dir: Option<&Path>,
    opts: &EngineOptions,
) -> Result<()> {
    let model = load_model(model_path)?.model;
    let declared =
        input_facts(&model, opts.batch).with_context(|| model_path.display().to_string())?;
    let mut feeds = random_inputs(&declared, seed);
    for spec in inputs {
        let (name, path) = parse_input(spec)?;
        let Some(k) = declared.iter().position(|f| f.name == name) else {
            let names: Vec<&str> = declared.iter().map(|f| f.name.as_str()).collect();
            bail!(
                "{} has no input '{name}' (its inputs: {})",
                model_path.display(),
                names.join(", ")
            );
        };
        feeds[k].1 = conform(read_npy(&path)?, &declared[k], &path)?;
    }
    let facts: Vec<InputFact> = declared
        .iter()
        .zip(&feeds)
        .map(|(f, (_, t))| InputFact {
            shape: t.shape.clone(),
            ..f.clone()
        })
        .collect();
    let engine = open_engine(&model, opts.engine, opts.device, &facts)
        .with_context(|| model_path.display().to_string())?;
    let outputs = engine
        .run(&feeds)
        .with_context(|| model_path.display().to_string())?;
    println!(
        "{}: {} on {}",
        model_path.display(),
        engine.name(),
        engine.provider()
    );
    for (name, t) in &feeds {
        let given = inputs.iter().any(|s| s.starts_with(&format!("{name}=")));
        println!(
            "input  {name}: {} {:?} {}",
            t.element_type().name(),
            t.shape,
            if given { "from file" } else { "random" }
        );
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (name, t) in &outputs {
        let (min, max, mean, std) = summary(t);
        println!(
            "output {name}: {:?} min {min:.6} max {max:.6} mean {mean:.6} std {std:.6}",
            t.shape
        );
        if let Some(dir) = out_dir {
            let file = dir.join(format!("{}.npy", sanitize(name)));
            rl_passes::io::write_atomically(&file, false, |w| w.write_all(&to_npy(t)))?;
            println!("  wrote {}", file.display());
        }
    }
    Ok(())
}

/// A file name for an output name (ONNX names may hold '/' or ':').
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Per-output comparison of two runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutputComparison {
    pub output: String,
    pub shape: Vec<usize>,
    pub max_abs: f64,
    pub max_rel: f64,
    pub within: bool,
}

/// Compares outputs elementwise: within tolerance when |a − b| ≤ tol · (1 + |b|) everywhere.
pub fn compare_outputs(
    a: &[(String, HostTensor)],
    b: &[(String, HostTensor)],
    tol: f64,
) -> Result<Vec<OutputComparison>> {
    if a.len() != b.len() {
        bail!("the models have {} and {} outputs", a.len(), b.len());
    }
    let mut out = Vec::new();
    for ((name, x), (name_b, y)) in a.iter().zip(b) {
        if x.shape != y.shape || x.element_type() != y.element_type() {
            bail!(
                "output '{name}' is {} {:?}, but '{name_b}' of the second model is {} {:?}",
                x.element_type().name(),
                x.shape,
                y.element_type().name(),
                y.shape
            );
        }
        let (mut max_abs, mut max_rel, mut within) = (0.0f64, 0.0f64, true);
        for (p, q) in x.to_f64().into_iter().zip(y.to_f64()) {
            let d = (p - q).abs();
            if d.is_nan() || d > tol * (1.0 + q.abs()) {
                within = false;
            }
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / p.abs().max(q.abs()).max(f64::from(f32::MIN_POSITIVE)));
        }
        out.push(OutputComparison {
            output: name.clone(),
            shape: x.shape.clone(),
            max_abs,
            max_rel,
            within,
        });
    }
    Ok(out)
}

/// `rl-rewrite check`: both models on the same seeded inputs; whether every output is within `tol`.
pub fn check_command(
    a: &Path,
    b: &Path,
    seed: u64,
    tol: f64,
    opts: &EngineOptions,
) -> Result<bool> {
    let (ma, mb) = (load_model(a)?.model, load_model(b)?.model);
    let fa = input_facts(&ma, opts.batch).with_context(|| a.display().to_string())?;
    let fb = input_facts(&mb, opts.batch).with_context(|| b.display().to_string())?;
    if fa != fb {
        let describe = |facts: &[InputFact]| {
            facts
                .iter()
                .map(|f| format!("{} {} {:?}", f.name, f.element_type.name(), f.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "the models take different inputs: {} takes {}; {} takes {}",
            a.display(),
            describe(&fa),
            b.display(),
            describe(&fb)
        );
    }
    let feeds = random_inputs(&fa, seed);
    let ea =
        open_engine(&ma, opts.engine, opts.device, &fa).with_context(|| a.display().to_string())?;
    let eb =
        open_engine(&mb, opts.engine, opts.device, &fb).with_context(|| b.display().to_string())?;
    let oa = ea.run(&feeds).with_context(|| a.display().to_string())?;
    let ob = eb.run(&feeds).with_context(|| b.display().to_string())?;
    println!(
        "engine {} on {}; inputs from seed {seed}, batch {}",
        ea.name(),
        ea.provider(),
        opts.batch
    );
    let results = compare_outputs(&oa, &ob, tol)?;
    for r in &results {
        println!(
            "{:<4} {}: shape {:?} max abs diff {:.3e}, max rel diff {:.3e}",
            if r.within { "ok" } else { "DIFF" },
            r.output,
            r.shape,
            r.max_abs,
            r.max_rel
        );
    }
    let all = results.iter().all(|r| r.within);
    println!(
        "{} (tolerance {tol:e}: |a − b| ≤ tol·(1 + |b|))",
        if all {
            "equal within tolerance"
        } else {
            "outputs differ"
        }
    );
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: Vec<f32>) -> HostTensor {
        HostTensor::f32(vec![data.len()], data)
    }

    #[test]
    fn comparison_reports_abs_and_rel_and_tolerance() {
        let a = vec![("y".to_owned(), t(vec![1.0, 2.0, 0.0]))];
        let b = vec![("y".to_owned(), t(vec![1.0, 2.5, 0.0]))];
        let r = compare_outputs(&a, &b, 1e-5).unwrap();
        assert_eq!(r[0].max_abs, 0.5);
        assert!((r[0].max_rel - 0.2).abs() < 1e-6);
        assert!(!r[0].within);
        assert!(compare_outputs(&a, &a, 0.0).unwrap()[0].within);
        assert!(compare_outputs(&a, &b, 0.2).unwrap()[0].within);
    }

    #[test]
    fn bad_input_specs_are_explained() {
        assert!(parse_input("x")
            .unwrap_err()
            .to_string()
            .contains("NAME=FILE.npy"));
        assert_eq!(
            parse_input("x=a.npy").unwrap(),
            ("x".to_owned(), PathBuf::from("a.npy"))
        );
    }
}
