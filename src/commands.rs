//! The commands behind the CLI: rewrite, inspect, diff, zoo, demo, bake. Errors carry what to do about them; the
//! binary turns results into exit codes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rl_passes::analysis::units::{discover_units, UnitKind};
use rl_passes::contract;
use rl_passes::graph_diff::diff_models;
use rl_passes::io::{load_model, save_model, write_atomically, SaveOptions};
use rl_passes::ir::Graph;
use rl_passes::pipeline::{plan_model, rewrite, RewriteOptions};

use crate::engine::{tract::TractEngine, Engine};
use crate::inputs::{input_facts, random_inputs};
use crate::reference::with_integrated_weights;
use crate::report::{inspect, rewrite_summary};

/// `<stem>.rl.onnx` beside the model.
pub fn default_output(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.rl.onnx"))
}

pub struct RewriteRequest {
    pub model: PathBuf,
    pub output: Option<PathBuf>,
    pub options: RewriteOptions,
    pub plan_json: Option<PathBuf>,
    pub dry_run: bool,
    pub fsync: bool,
}

pub fn rewrite_command(req: &RewriteRequest) -> Result<()> {
    let loaded = load_model(&req.model)?;
    let output = req
        .output
        .clone()
        .unwrap_or_else(|| default_output(&req.model));
    if req.dry_run {
        let planned = plan_model(loaded.model, &req.options)
            .with_context(|| format!("{}", req.model.display()))?;
        print!("{}", rewrite_summary(&planned.analysis, &planned.plan, 0));
        println!("dry run: nothing written");
        if let Some(path) = &req.plan_json {
            write_text(path, &planned.plan.to_json())?;
        }
        return Ok(());
    }
    let result =
        rewrite(loaded.model, &req.options).with_context(|| format!("{}", req.model.display()))?;
    let save = SaveOptions {
        durable: req.fsync,
        ..SaveOptions::like_input(&loaded.external, &result.model)
    };
    let saved = save_model(&result.model, &output, &save)?;
    if let Some(path) = &req.plan_json {
        write_text(path, &result.plan.to_json())?;
    }
    print!(
        "{}",
        rewrite_summary(&result.analysis, &result.plan, result.tensors_removed)
    );
    println!(
        "wrote {}{}",
        output.display(),
        if saved.durable {
            " (flushed to disk)"
        } else {
            ""
        }
    );
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, false, |w| w.write_all(format!("{text}\n").as_bytes()))?;
    Ok(())
}

pub fn inspect_command(model: &Path, unit: UnitKind, json: bool) -> Result<()> {
    let loaded = load_model(model)?;
    let graph =
        Graph::lift(loaded.model.clone()).with_context(|| format!("{}", model.display()))?;
    let analysis = discover_units(&graph, unit);
    let report = inspect(&loaded.model, &analysis);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", model.display());
        print!("{report}");
    }
    Ok(())
}

/// `rl-rewrite diff`: prints the diff; whether the models are equal.
pub fn diff_command(a: &Path, b: &Path, json: bool) -> Result<bool> {
    let (ma, mb) = (load_model(a)?, load_model(b)?);
    let diff = diff_models(&ma.model, &mb.model);
    if json {
        println!("{}", serde_json::to_string_pretty(&diff.to_json())?);
    } else {
        print!("{diff}");
    }
    Ok(diff.is_empty())
}

pub struct ZooRequest {
    pub name: String,
    pub output: PathBuf,
    pub classes: Option<usize>,
    pub image_size: Option<usize>,
    pub channels: Option<usize>,
    pub seed: u64,
}

pub fn zoo_command(req: &ZooRequest) -> Result<()> {
    let mut opts = rl_models::ZooOptions::for_model(&req.name)?;
    opts.classes = req.classes.unwrap_or(opts.classes);
    opts.image_size = req.image_size.unwrap_or(opts.image_size);
    opts.channels = req.channels.unwrap_or(opts.channels);
    opts.seed = req.seed;
    let model = rl_models::build(&req.name, &opts)?;
    save_model(
        &model,
        &req.output,
        &SaveOptions::like_input(&Default::default(), &model),
    )?;
    let count = rl_models::parameter_count(&model);
    println!(
        "wrote {} ({}, {} classes, {}×{}×{} input, {} learnable parameters)",
        req.output.display(),
        req.name,
        opts.classes,
        opts.channels,
        opts.image_size,
        opts.image_size,
        count.learnable
    );
    Ok(())
}

/// Largest output difference between two models on the same seeded inputs, computed with tract.
pub fn tract_max_diff(
    a: &rl_passes::onnx::ModelProto,
    b: &rl_passes::onnx::ModelProto,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let facts = input_facts(a, batch)?;
    let inputs = random_inputs(&facts, seed);
    let ea = TractEngine::new(a, &facts)?;
    let eb = TractEngine::new(b, &facts)?;
    let (oa, ob) = (ea.run(&inputs)?, eb.run(&inputs)?);
    let per_output = crate::execute::compare_outputs(&oa, &ob, 0.0)?;
    Ok(per_output.iter().map(|c| c.max_abs).fold(0.0, f64::max))
}

/// `rl-rewrite demo`: zoo, rewrite, plan, diff and an equivalence check; whether the rewrite was exact.
pub fn demo_command(out_dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let original_path = out_dir.join("resnet32.onnx");
    let rewritten_path = out_dir.join("resnet32.rl.onnx");
    let plan_path = out_dir.join("resnet32.plan.json");
    println!(
        "== 1. building resnet32 from the zoo → {}",
        original_path.display()
    );
    zoo_command(&ZooRequest {
        name: "resnet32".into(),
        output: original_path.clone(),
        classes: None,
        image_size: None,
        channels: None,
        seed: 0,
    })?;
    println!("\n== 2. rl-rewrite {} --every 2", original_path.display());
    let options = RewriteOptions::default();
    rewrite_command(&RewriteRequest {
        model: original_path.clone(),
        output: Some(rewritten_path.clone()),
        options,
        plan_json: Some(plan_path.clone()),
        dry_run: false,
        fsync: false,
    })?;
    println!("\n== 3. plan ({})", plan_path.display());
    print!("{}", std::fs::read_to_string(&plan_path)?);
    println!("\n== 4. rl-rewrite diff");
    diff_command(&original_path, &rewritten_path, false)?;
    println!("\n== 5. equivalence with tract (seeded random inputs, batch 4)");
    let original = load_model(&original_path)?.model;
    let rewritten = load_model(&rewritten_path)?.model;
    let plan =
        contract::require_plan(&rewritten).with_context(|| rewritten_path.display().to_string())?;
    let reference = with_integrated_weights(
        &original,
        &plan,
        options.init_a as f32,
        options.init_b as f32,
    )?;
    let diff = tract_max_diff(&rewritten, &reference, 4, 7)?;
    println!("max |rewritten − original with θ = 0.5·prev + 0.5·next| = {diff:.3e}");
    if diff > 1e-5 {
        println!("FAILED: the rewrite is not equivalent (tolerance 1e-5)");
        return Ok(false);
    }
    println!("OK: equivalent within 1e-5");
    Ok(true)
}

/// `rl-rewrite bake`: folds the integration subgraphs of a rewritten (possibly trained) model into stored
/// tensors, giving a plain inference model with the original structure.
pub fn bake_command(model: &Path, output: &Path) -> Result<()> {
    use rl_passes::pass::{Changed, Pass};
    let loaded = load_model(model)?;
    let mut graph = Graph::lift(loaded.model).with_context(|| model.display().to_string())?;
    let before = graph.node_count();
    let mut bake = rl_passes::passes::BakeIntegrations;
    if bake
        .run(&mut graph)
        .with_context(|| model.display().to_string())?
        == Changed::No
    {
        anyhow::bail!(
            "{} carries no Replacement Learning plan (metadata '{}'): nothing to bake",
            model.display(),
            contract::PLAN_KEY
        );
    }
    let baked = graph.lower()?;
    save_model(
        &baked,
        output,
        &SaveOptions::like_input(&loaded.external, &baked),
    )?;
    println!(
        "baked {} integration nodes into stored tensors; wrote {}",
        before - graph.node_count(),
        output.display()
    );
    Ok(())
}
