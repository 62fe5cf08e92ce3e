//! What the commands print: the rewrite summary and the `inspect` report (text and JSON).

use std::collections::BTreeMap;
use std::fmt::Write;

use rl_passes::analysis::signature::short_id;
use rl_passes::analysis::units::{LayerAnalysis, TiedParam};
use rl_passes::onnx::{
    tensor_shape_proto::dimension::Value as Dim, type_proto::Value as Type, ModelProto,
    ValueInfoProto,
};
use rl_passes::plan::{frozen_positions, Plan};
use rl_passes::tensor::dtype_name;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct IoInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UnitInfo {
    pub index: usize,
    pub name: String,
    pub signature: String,
    pub nodes: usize,
    pub learnable_params: u64,
    pub changes_shape: bool,
}

#[derive(Debug, Serialize)]
pub struct StageInfo {
    pub index: usize,
    pub signature: String,
    pub units: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    pub ops: BTreeMap<String, usize>,
    pub initializers: usize,
    pub learnable_params: u64,
    pub unit: String,
    pub segments: usize,
    pub units: Vec<UnitInfo>,
    pub stages: Vec<StageInfo>,
    pub tied: Vec<TiedParam>,
    /// Units `--every 2` would freeze.
    pub every_2_freezes: Vec<String>,
}

fn io_info(v: &ValueInfoProto) -> IoInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Type::TensorType(t)) => (
            dtype_name(t.elem_type()).unwrap_or("?").to_owned(),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some(_) => ("non-tensor".into(), Vec::new()),
        None => ("?".into(), Vec::new()),
    };
    IoInfo {
        name: v.name().to_owned(),
        dtype,
        shape,
    }
}

pub fn inspect(model: &ModelProto, analysis: &LayerAnalysis) -> Inspection {
    let g = model.graph.as_ref().expect("models carry a graph");
    let mut ops = BTreeMap::new();
    for n in &g.node {
        *ops.entry(n.op_type().to_owned()).or_insert(0) += 1;
    }
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let units: Vec<UnitInfo> = analysis
        .units
        .iter()
        .map(|u| UnitInfo {
            index: u.index,
            name: u.name.clone(),
            signature: short_id(&u.signature),
            nodes: u.nodes.len(),
            learnable_params: u.learnable_count(),
            changes_shape: u.changes_shape,
        })
        .collect();
    let stages = analysis
        .stages
        .iter()
        .map(|s| StageInfo {
            index: s.index,
            signature: short_id(&analysis.units[s.units[0]].signature),
            units: s
                .units
                .iter()
                .map(|&u| analysis.units[u].name.clone())
                .collect(),
        })
        .collect();
    Inspection {
        ir_version: model.ir_version(),
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_owned(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| (display_domain(o.domain()).to_owned(), o.version()))
            .collect(),
        inputs: g
            .input
            .iter()
            .filter(|i| !inits.contains(i.name()))
            .map(io_info)
            .collect(),
        outputs: g.output.iter().map(io_info).collect(),
        ops,
        initializers: g.initializer.len(),
        learnable_params: analysis.learnable_params,
        unit: analysis.kind.to_string(),
        segments: analysis.segment_count,
        units,
        stages,
        tied: analysis.tied.clone(),
        every_2_freezes: frozen_positions(analysis, 2, 0)
            .into_iter()
            .map(|(_, _, u)| analysis.units[u].name.clone())
            .collect(),
    }
}

fn display_domain(d: &str) -> &str {
    if d.is_empty() {
        "ai.onnx"
    } else {
        d
    }
}

fn shape_text(io: &IoInfo) -> String {
    format!("{} {}[{}]", io.name, io.dtype, io.shape.join(","))
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ir_version {}, producer {}",
            self.ir_version,
            if self.producer.is_empty() {
                "?"
            } else {
                &self.producer
            }
        )?;
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|(d, v)| format!("{d} {v}"))
            .collect();
        writeln!(f, "opsets: {}", opsets.join(", "))?;
        for i in &self.inputs {
            writeln!(f, "input:  {}", shape_text(i))?;
        }
        for o in &self.outputs {
            writeln!(f, "output: {}", shape_text(o))?;
        }
        let ops: Vec<String> = self.ops.iter().map(|(o, n)| format!("{o} {n}")).collect();
        writeln!(f, "ops: {}", ops.join(", "))?;
        writeln!(
            f,
            "parameters: {} learnable in {} initializers",
            self.learnable_params, self.initializers
        )?;
        writeln!(
            f,
            "{} segments → {} {} units in {} stages:",
            self.segments,
            self.units.len(),
            self.unit,
            self.stages.len()
        )?;
        for s in &self.stages {
            let first = &self
                .units
                .iter()
                .find(|u| u.name == s.units[0])
                .expect("stage units exist");
            let names = if s.units.len() > 4 {
                format!(
                    "{}, {}, …, {}",
                    s.units[0],
                    s.units[1],
                    s.units[s.units.len() - 1]
                )
            } else {
                s.units.join(", ")
            };
            let mut line = String::new();
            let _ = write!(
                line,
                "  stage {:>2}: {} × [{}] {} params/unit",
                s.index,
                s.units.len(),
                s.signature,
                first.learnable_params
            );
            if first.changes_shape {
                line.push_str(", changes shape");
            }
            writeln!(f, "{line}: {names}")?;
        }
        for t in &self.tied {
            writeln!(
                f,
                "tied (never replaced): {} shared by {}",
                t.tensor,
                t.units.join(", ")
            )?;
        }
        if self.every_2_freezes.is_empty() {
            writeln!(f, "--every 2 would freeze nothing")
        } else {
            writeln!(
                f,
                "--every 2 would freeze {} units: {}",
                self.every_2_freezes.len(),
                self.every_2_freezes.join(", ")
            )
        }
    }
}

/// The short summary printed after a rewrite.
pub fn rewrite_summary(analysis: &LayerAnalysis, plan: &Plan, tensors_removed: usize) -> String {
    let mut s = String::new();
    let stages_with_repeats = analysis.stages.iter().filter(|s| s.units.len() > 1).count();
    let _ = writeln!(
        s,
        "found {} {} units in {} stages ({} with repeated units)",
        analysis.units.len(),
        analysis.kind,
        analysis.stages.len(),
        stages_with_repeats
    );
    let names: Vec<&str> = plan.frozen.iter().map(|f| f.unit.as_str()).collect();
    let _ = writeln!(
        s,
        "froze {} units (every {}, offset {}): {}",
        plan.frozen.len(),
        plan.every,
        plan.offset,
        names.join(", ")
    );
    let delta = plan.params_before as f64 - plan.params_after as f64;
    let pct = if plan.params_before > 0 {
        100.0 * delta / plan.params_before as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "learnable parameters: {} → {} (−{}, −{:.1}%)",
        plan.params_before,
        plan.params_after,
        plan.params_before - plan.params_after,
        pct
    );
    let _ = writeln!(
        s,
        "tensors removed: {} ({} replaced by integration subgraphs, {} scalars added)",
        tensors_removed,
        plan.replaced_tensor_count(),
        2 * plan.frozen.len()
    );
    if !plan.tied.is_empty() {
        let _ = writeln!(
            s,
            "tied parameters kept: {}",
            plan.tied
                .iter()
                .map(|t| t.tensor.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}
