//! The freezing plan: which units are frozen, and which neighbour tensors replace each of their parameters.
//!
//! Within each stage U_1..U_n (1-based), U_i is frozen for i = offset+k, offset+2k, … with i < n, so both
//! neighbours exist and neither is frozen itself.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::analysis::units::{LayerAnalysis, TiedParam, Unit, UnitKind};
use crate::contract::{scalar_name, Scalar};
use crate::ir::Graph;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub unit: UnitKind,
    pub every: usize,
    pub offset: usize,
    pub params_before: u64,
    pub params_after: u64,
    pub frozen: Vec<FrozenUnit>,
    /// Parameters shared between units: never replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tied: Vec<TiedParam>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenUnit {
    pub unit: String,
    /// 0-based stage index (as `inspect` lists stages).
    pub stage: usize,
    /// 1-based position of the unit within its stage.
    pub index: usize,
    pub a: String,
    pub b: String,
    pub params: Vec<ReplacedParam>,
    #[serde(skip)]
    pub dtype: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedParam {
    /// The value the frozen unit reads; after the rewrite an integration subgraph produces it.
    pub tensor: String,
    pub prev: String,
    pub next: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    pub unit: UnitKind,
    pub every: usize,
    pub offset: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("--every must be at least 2 (got {0}): freezing every unit would leave frozen units without learnable neighbours")]
    EveryTooSmall(usize),
    #[error("nothing to freeze: {reason}")]
    NothingFreezable { reason: String },
}

/// Units a plan would freeze, as (stage, 1-based index within the stage, unit index).
pub fn frozen_positions(
    analysis: &LayerAnalysis,
    every: usize,
    offset: usize,
) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    // offset + every past usize::MAX freezes nothing (and must not overflow: both come from the command line).
    let Some(first) = offset.checked_add(every).filter(|_| every >= 2) else {
        return out;
    };
    for stage in &analysis.stages {
        let n = stage.units.len();
        // i < n ≤ isize::MAX and every ≤ i, so `i += every` cannot overflow.
        let mut i = first;
        while i < n {
            out.push((stage.index, i, stage.units[i - 1]));
            i += every;
        }
    }
    out
}

fn nothing_reason(analysis: &LayerAnalysis, opts: &PlanOptions) -> String {
    let longest = analysis
        .stages
        .iter()
        .map(|s| s.units.len())
        .max()
        .unwrap_or(0);
    let mut reason = format!(
        "found {} {} units in {} stages; the longest stage has {} equal units, and freezing unit i of a stage \
         needs i = offset+k·every < n (offset {}, every {})",
        analysis.units.len(),
        analysis.kind,
        analysis.stages.len(),
        longest,
        opts.offset,
        opts.every
    );
    if analysis.kind == UnitKind::Block {
        reason.push_str(
            "; try `--unit layer` to freeze single layers (Conv/Gemm/MatMul) instead of blocks",
        );
    } else if opts.every > 2 || opts.offset > 0 {
        reason.push_str("; try a smaller --every or --offset");
    }
    reason
}

fn param_by_key(unit: &Unit) -> HashMap<(usize, usize), &crate::analysis::UnitParam> {
    unit.learnable().map(|p| (p.key, p)).collect()
}

/// Plans which units to freeze. Tied parameters stay with their unit; a unit none of whose parameters can be
/// replaced is not frozen.
pub fn make_plan(
    g: &Graph,
    analysis: &LayerAnalysis,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    if opts.every < 2 {
        return Err(PlanError::EveryTooSmall(opts.every));
    }
    let consumers = g.consumers();
    let mut frozen = Vec::new();
    let mut removed_numel = 0u64;
    let mut taken_names: HashSet<String> = HashSet::new();
    for (stage, index, u) in frozen_positions(analysis, opts.every, opts.offset) {
        let unit = &analysis.units[u];
        let prev = param_by_key(&analysis.units[u - 1]);
        let next = param_by_key(&analysis.units[u + 1]);
        let mut params = Vec::new();
        let mut dtype = None;
        for p in unit.learnable() {
            if analysis.is_tied(&p.param.value) {
                continue;
            }
            let (Some(pp), Some(np)) = (prev.get(&p.key), next.get(&p.key)) else {
                continue;
            };
            if pp.param.dims != p.param.dims || np.param.dims != p.param.dims {
                continue;
            }
            if *dtype.get_or_insert(p.param.dtype) != p.param.dtype {
                continue;
            }
            // The stored tensor disappears when nothing but this parameter's chain reads it.
            let chain_nodes: HashSet<_> = p
                .param
                .chain
                .iter()
                .chain(&p.param.constant_node)
                .copied()
                .collect();
            let root_readers = consumers
                .get(&p.param.root)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let root_freed = p.param.root == p.param.value
                || root_readers.iter().all(|(n, _)| chain_nodes.contains(n))
                    && !g.proto.output.iter().any(|o| o.name() == p.param.root);
            if root_freed {
                removed_numel += p.numel;
            }
            params.push(ReplacedParam {
                tensor: p.param.value.clone(),
                prev: pp.param.value.clone(),
                next: np.param.value.clone(),
                shape: p.param.dims.clone(),
            });
        }
        let Some(dtype) = dtype.filter(|_| !params.is_empty()) else {
            continue;
        };
        let mut fresh = |which: Scalar| {
            let base = scalar_name(&unit.name, which);
            let name = if taken_names.contains(&base) {
                g.fresh_name(&format!("{base}.{stage}"))
            } else {
                g.fresh_name(&base)
            };
            taken_names.insert(name.clone());
            name
        };
        let (a, b) = (fresh(Scalar::A), fresh(Scalar::B));
        frozen.push(FrozenUnit {
            unit: unit.name.clone(),
            stage,
            index,
            a,
            b,
            params,
            dtype,
        });
    }
    if frozen.is_empty() {
        return Err(PlanError::NothingFreezable {
            reason: nothing_reason(analysis, opts),
        });
    }
    let params_before = analysis.learnable_params;
    let params_after = params_before - removed_numel + 2 * frozen.len() as u64;
    Ok(Plan {
        version: 1,
        unit: opts.unit,
        every: opts.every,
        offset: opts.offset,
        params_before,
        params_after,
        frozen,
        tied: analysis.tied.clone(),
    })
}

impl Plan {
    /// Pretty JSON with number lists (shapes) kept on one line.
    pub fn to_json(&self) -> String {
        compact_number_lists(&serde_json::to_string_pretty(self).expect("plans serialize"))
    }

    pub fn replaced_tensor_count(&self) -> usize {
        self.frozen.iter().map(|f| f.params.len()).sum()
    }
}

/// Puts JSON arrays that hold only numbers on one line: `[\n  16,\n  3\n]` → `[16, 3]`.
fn compact_number_lists(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_whitespace() || ",-.".contains(c)) =>
            {
                let items: Vec<&str> = after[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                out.push('[');
                out.push_str(&items.join(", "));
                out.push(']');
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_lists_are_compacted_and_other_lists_kept() {
        let pretty = "{\n  \"shape\": [\n    16,\n    3\n  ],\n  \"empty\": [],\n  \"names\": [\n    \"a\"\n  ]\n}";
        let compact = compact_number_lists(pretty);
        assert!(compact.contains("\"shape\": [16, 3]"), "{compact}");
        assert!(compact.contains("\"empty\": []"));
        assert!(compact.contains("\"names\": [\n    \"a\"\n  ]"));
        let v: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(v["shape"], serde_json::json!([16, 3]));
    }

    #[test]
    fn every_below_two_is_rejected() {
        let g = crate::ir::Graph::lift(crate::onnx::ModelProto {
            graph: Some(Default::default()),
            ..Default::default()
        })
        .unwrap();
        let analysis = crate::analysis::discover_units(&g, UnitKind::Block);
        for every in [0, 1] {
            let err = make_plan(
                &g,
                &analysis,
                &PlanOptions {
                    unit: UnitKind::Block,
                    every,
                    offset: 0,
                },
            )
            .unwrap_err();
            assert_eq!(err, PlanError::EveryTooSmall(every));
        }
    }
}
