//! The rewrite pipeline: lift → discover units → plan → replace frozen units → lower.

use crate::analysis::units::{discover_units, LayerAnalysis, UnitKind};
use crate::ir::{Graph, GraphError};
use crate::onnx::ModelProto;
use crate::pass::{Driver, PassError};
use crate::passes::ReplaceFrozenUnits;
use crate::plan::{make_plan, Plan, PlanError, PlanOptions};

#[derive(Debug, Clone, Copy)]
pub struct RewriteOptions {
    pub unit: UnitKind,
    pub every: usize,
    pub offset: usize,
    pub init_a: f64,
    pub init_b: f64,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            unit: UnitKind::Block,
            every: 2,
            offset: 0,
            init_a: 0.5,
            init_b: 0.5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error("{0}")]
    Option(String),
}

pub struct Planned {
    pub graph: Graph,
    pub analysis: LayerAnalysis,
    pub plan: Plan,
}

/// Lifts the model and plans the rewrite without changing anything.
pub fn plan_model(model: ModelProto, opts: &RewriteOptions) -> Result<Planned, RewriteError> {
    if opts.every < 2 {
        return Err(PlanError::EveryTooSmall(opts.every).into());
    }
    for (flag, value) in [("--init-a", opts.init_a), ("--init-b", opts.init_b)] {
        if !value.is_finite() {
            return Err(RewriteError::Option(format!(
                "{flag} must be a finite number (got {value})"
            )));
        }
    }
    let graph = Graph::lift(model)?;
    let analysis = discover_units(&graph, opts.unit);
    let plan = make_plan(
        &graph,
        &analysis,
        &PlanOptions {
            unit: opts.unit,
            every: opts.every,
            offset: opts.offset,
        },
    )?;
    Ok(Planned {
        graph,
        analysis,
        plan,
    })
}

pub struct Rewritten {
    pub model: ModelProto,
    pub analysis: LayerAnalysis,
    pub plan: Plan,
    /// Initializers the rewrite removed.
    pub tensors_removed: usize,
}

/// Plans and applies the rewrite.
pub fn rewrite(model: ModelProto, opts: &RewriteOptions) -> Result<Rewritten, RewriteError> {
    let Planned {
        mut graph,
        analysis,
        plan,
    } = plan_model(model, opts)?;
    let before = graph.initializers().len();
    let mut replace = ReplaceFrozenUnits {
        plan: plan.clone(),
        init_a: opts.init_a,
        init_b: opts.init_b,
    };
    Driver::new().run(&mut graph, &mut replace)?;
    let added = 2 * plan.frozen.len();
    let tensors_removed = (before + added).saturating_sub(graph.initializers().len());
    let model = graph.lower()?;
    Ok(Rewritten {
        model,
        analysis,
        plan,
        tensors_removed,
    })
}
