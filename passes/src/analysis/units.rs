//! Units (the layers Replacement Learning freezes) and stages (runs of interchangeable units).
//!
//! Block units: segment signatures are scanned left to right; at each position the period that repeats most
//! (smallest on a tie) merges that many consecutive segments into one unit, so a residual block that spans two
//! segments (body + Add, then ReLU; attention, then MLP) becomes one unit. Layer units: each parameterized op
//! with its trailing BatchNormalization or bias Add.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};

use crate::analysis::constants::constant_values;
use crate::analysis::params::{is_learnable, root_tensor, trace_param, ParamRef};
use crate::analysis::segments::{data_flow_nodes, segments};
use crate::analysis::signature::signature;
use crate::ir::Graph;
use crate::tensor::numel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Block,
    Layer,
}

impl std::fmt::Display for UnitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnitKind::Block => "block",
            UnitKind::Layer => "layer",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// Learned by gradient descent; replaced when its unit is frozen.
    Learnable,
    /// BatchNormalization running mean/variance: statistics, kept by every unit.
    Statistic,
}

#[derive(Debug, Clone)]
pub struct UnitParam {
    /// Position within the unit: (node ordinal, input slot). Equal-signature units match parameters by key.
    pub key: (usize, usize),
    pub consumer: NodeIndex,
    pub param: ParamRef,
    pub role: ParamRole,
    pub numel: u64,
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub index: usize,
    pub name: String,
    /// Nodes in topological order.
    pub nodes: Vec<NodeIndex>,
    pub signature: String,
    pub params: Vec<UnitParam>,
    /// The unit's output shape may differ from its input shape (strides, channel or width changes).
    pub changes_shape: bool,
}

impl Unit {
    pub fn learnable(&self) -> impl Iterator<Item = &UnitParam> {
        self.params
            .iter()
            .filter(|p| p.role == ParamRole::Learnable)
    }

    pub fn learnable_count(&self) -> u64 {
        self.learnable().map(|p| p.numel).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub index: usize,
    /// Indices into `LayerAnalysis::units`, consecutive, with equal signatures.
    pub units: Vec<usize>,
}

/// A parameter value read by more than one unit (or by nodes outside its unit): tied, never replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TiedParam {
    pub tensor: String,
    pub units: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LayerAnalysis {
    pub kind: UnitKind,
    pub segment_count: usize,
    pub units: Vec<Unit>,
    pub stages: Vec<Stage>,
    pub tied: Vec<TiedParam>,
    /// Learnable parameters of the whole model (elements), counted once per stored tensor.
    pub learnable_params: u64,
}

impl LayerAnalysis {
    /// Whether a parameter value of a unit is tied (shared) and must stay as it is.
    pub fn is_tied(&self, value: &str) -> bool {
        self.tied.iter().any(|t| t.tensor == value)
    }
}

/// Parameters read by `nodes`, keyed by position.
fn param_uses(g: &Graph, nodes: &[NodeIndex], constants: &HashSet<String>) -> Vec<UnitParam> {
    let mut out = Vec::new();
    for (ordinal, &index) in nodes.iter().enumerate() {
        let node = g.node(index);
        for (slot, input) in node.input.iter().enumerate() {
            if input.is_empty() || !constants.contains(input) {
                continue;
            }
            let Some(param) = trace_param(g, input) else {
                continue;
            };
            let Some(tensor) = root_tensor(g, &param) else {
                continue;
            };
            let statistic = node.op_type() == "BatchNormalization" && (slot == 3 || slot == 4);
            let role = if statistic {
                ParamRole::Statistic
            } else if is_learnable(tensor) {
                ParamRole::Learnable
            } else {
                continue;
            };
            out.push(UnitParam {
                key: (ordinal, slot),
                consumer: index,
                numel: numel(tensor),
                param,
                role,
            });
        }
    }
    out
}

/// Merges segments by their most repeated period. Returns ranges of segment indices.
///
/// `weighted[k]` says whether segment k reads parameters. A repetition can often be read in more than one
/// phase (stem ReLU, [body, ReLU] × n reads as [ReLU, body] × n, ReLU); when shifting the start by t segments
/// keeps the same number of repetitions, the phase whose units start with a weighted segment is taken, so
/// a residual block is (body + Add, ReLU) rather than (previous ReLU, body + Add).
pub fn group_by_period(signatures: &[String], weighted: &[bool]) -> Vec<Range<usize>> {
    let n = signatures.len();
    let mut groups = Vec::new();
    let mut i = 0;
    while i < n {
        let (mut best_p, mut best_reps) = (1, 1);
        for p in 1..=(n - i) / 2 {
            let reps = repetitions(signatures, i, p);
            if reps > best_reps {
                (best_p, best_reps) = (p, reps);
            }
        }
        if best_reps < 2 {
            groups.push(i..i + 1);
            i += 1;
            continue;
        }
        let shift = if weighted.get(i).copied().unwrap_or(true) {
            0
        } else {
            (1..best_p)
                .find(|&t| {
                    weighted.get(i + t).copied().unwrap_or(false)
                        && repetitions(signatures, i + t, best_p) >= best_reps
                })
                .unwrap_or(0)
        };
        for k in i..i + shift {
            groups.push(k..k + 1);
        }
        i += shift;
        for r in 0..best_reps {
            groups.push(i + r * best_p..i + (r + 1) * best_p);
        }
        i += best_p * best_reps;
    }
    groups
}

/// How many times `signatures[start..start + p]` repeats back to back from `start`.
fn repetitions(signatures: &[String], start: usize, p: usize) -> usize {
    let mut reps = 1;
    while start + (reps + 1) * p <= signatures.len()
        && (0..p).all(|k| signatures[start + k] == signatures[start + reps * p + k])
    {
        reps += 1;
    }
    reps
}

fn int_list(g: &Graph, index: NodeIndex, name: &str) -> Vec<i64> {
    g.node(index)
        .attribute
        .iter()
        .find(|a| a.name() == name)
        .map(|a| a.ints.clone())
        .unwrap_or_default()
}

/// Whether a node can change the shape of the data passing through it. Inside a block only strides count: a
/// block's inner layers change widths (bottlenecks, MLPs) and restore them, and a block whose output width
/// differs from its input width has parameter shapes unlike its neighbours' anyway.
fn node_changes_shape(g: &Graph, index: NodeIndex, params: &[UnitParam], kind: UnitKind) -> bool {
    let node = g.node(index);
    let weight = params
        .iter()
        .find(|p| p.consumer == index && p.key.1 == 1 && p.role == ParamRole::Learnable);
    match node.op_type() {
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" => {
            if int_list(g, index, "strides").iter().any(|&s| s != 1) {
                return true;
            }
            if kind == UnitKind::Block {
                return false;
            }
            let group = node
                .attribute
                .iter()
                .find(|a| a.name() == "group")
                .and_then(|a| a.i)
                .unwrap_or(1);
            weight.is_some_and(|w| {
                w.param.dims.len() >= 2 && w.param.dims[0] != w.param.dims[1] * group
            })
        }
        "MatMul" | "Gemm" if kind == UnitKind::Layer => weight.is_some_and(|w| {
            let d = &w.param.dims;
            d.len() >= 2 && d[d.len() - 1] != d[d.len() - 2]
        }),
        _ => false,
    }
}

/// The longest common prefix of `names`, cut back to a separator.
fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let mut len = first.len();
    for n in &names[1..] {
        len = len.min(
            first
                .bytes()
                .zip(n.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let prefix = &first[..len];
    if names.len() == 1 {
        return match prefix.rfind(['.', '/']) {
            Some(k) => prefix[..k].to_owned(),
            None => prefix.to_owned(),
        };
    }
    match prefix.rfind(['.', '/']) {
        Some(k) => prefix[..k].trim_end_matches(['.', '/']).to_owned(),
        None => String::new(),
    }
}

/// A unit is named after what its parameters share (`layer1.2`), else its nodes (`/layer1/layer1.2`), else
/// its position. Generated tensor names (`onnx::MatMul_123`, dynamo's `val_7` for transposed weights) carry no
/// module path and are left out.
fn unit_name(g: &Graph, nodes: &[NodeIndex], params: &[UnitParam], index: usize) -> String {
    let roots: Vec<&str> = params
        .iter()
        .filter(|p| p.role == ParamRole::Learnable)
        .map(|p| p.param.root.as_str())
        .filter(|name| name.contains('.') && !name.starts_with("onnx::"))
        .collect();
    let by_params = common_prefix(&roots);
    if !by_params.is_empty() && !by_params.starts_with("onnx::") {
        return by_params;
    }
    let node_names: Vec<&str> = nodes
        .iter()
        .map(|&n| g.node(n).name())
        .filter(|n| !n.is_empty())
        .collect();
    let by_nodes = common_prefix(&node_names);
    if !by_nodes.trim_matches('/').is_empty() {
        return by_nodes;
    }
    format!("unit{index}")
}

fn build_unit(
    g: &Graph,
    kind: UnitKind,
    index: usize,
    nodes: Vec<NodeIndex>,
    constants: &HashSet<String>,
) -> Unit {
    let params = param_uses(g, &nodes, constants);
    let changes_shape = nodes
        .iter()
        .any(|&n| node_changes_shape(g, n, &params, kind));
    let name = unit_name(g, &nodes, &params, index);
    let signature = signature(g, &nodes, constants);
    Unit {
        index,
        name,
        nodes,
        signature,
        params,
        changes_shape,
    }
}

/// Layer units: each Conv / ConvTranspose / Gemm / MatMul with a learnable constant weight, with its trailing
/// BatchNormalization or bias Add when that is the only reader of its output.
fn layer_groups(g: &Graph, flow: &[NodeIndex], constants: &HashSet<String>) -> Vec<Vec<NodeIndex>> {
    let consumers = g.consumers();
    let mut groups = Vec::new();
    for &index in flow {
        let node = g.node(index);
        if !matches!(node.op_type(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul") {
            continue;
        }
        let weight_is_param = node.input.get(1).is_some_and(|w| {
            constants.contains(w)
                && trace_param(g, w)
                    .and_then(|p| root_tensor(g, &p).map(is_learnable))
                    .unwrap_or(false)
        });
        if !weight_is_param {
            continue;
        }
        let mut group = vec![index];
        let mut tail = index;
        for _ in 0..2 {
            let out = &g.node(tail).output[0];
            let readers = consumers.get(out).map(Vec::as_slice).unwrap_or_default();
            let [(next, _)] = readers else { break };
            let next_node = g.node(*next);
            let follows = match next_node.op_type() {
                "BatchNormalization" => g.node(tail).op_type() != "BatchNormalization",
                "Add" => {
                    matches!(g.node(tail).op_type(), "MatMul")
                        && next_node
                            .input
                            .iter()
                            .any(|i| i != out && constants.contains(i))
                }
                _ => false,
            };
            if !follows {
                break;
            }
            group.push(*next);
            tail = *next;
        }
        groups.push(group);
    }
    groups
}

/// Finds units and stages.
pub fn discover_units(g: &Graph, kind: UnitKind) -> LayerAnalysis {
    let constants = constant_values(g);
    let flow = data_flow_nodes(g, &constants);
    let segs = segments(g, &constants);
    let groups: Vec<Vec<NodeIndex>> = match kind {
        UnitKind::Block => {
            let sigs: Vec<String> = segs
                .iter()
                .map(|s| signature(g, &s.nodes, &constants))
                .collect();
            let weighted: Vec<bool> = segs
                .iter()
                .map(|s| {
                    param_uses(g, &s.nodes, &constants)
                        .iter()
                        .any(|p| p.role == ParamRole::Learnable)
                })
                .collect();
            group_by_period(&sigs, &weighted)
                .into_iter()
                .map(|r| segs[r].iter().flat_map(|s| s.nodes.clone()).collect())
                .collect()
        }
        UnitKind::Layer => layer_groups(g, &flow, &constants),
    };
    let mut units: Vec<Unit> = groups
        .into_iter()
        .enumerate()
        .map(|(k, nodes)| build_unit(g, kind, k, nodes, &constants))
        .collect();
    dedupe_names(&mut units);

    let mut stages: Vec<Stage> = Vec::new();
    for u in &units {
        let extend = !u.changes_shape
            && stages.last().is_some_and(|s| {
                let last = &units[*s.units.last().expect("stages are non-empty")];
                !last.changes_shape && last.signature == u.signature
            });
        if extend {
            stages.last_mut().expect("checked").units.push(u.index);
        } else {
            stages.push(Stage {
                index: stages.len(),
                units: vec![u.index],
            });
        }
    }

    let tied = tied_params(g, &units);
    let everything = param_uses(g, &flow, &constants);
    let mut roots: BTreeMap<&str, u64> = BTreeMap::new();
    for p in everything.iter().filter(|p| p.role == ParamRole::Learnable) {
        roots.insert(&p.param.root, p.numel);
    }
    let learnable_params = roots.values().sum();
    LayerAnalysis {
        kind,
        segment_count: segs.len(),
        units,
        stages,
        tied,
        learnable_params,
    }
}

fn dedupe_names(units: &mut [Unit]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for u in units.iter() {
        *seen.entry(u.name.clone()).or_default() += 1;
    }
    let mut counter: HashMap<String, usize> = HashMap::new();
    for u in units.iter_mut() {
        if seen[&u.name] > 1 {
            let k = counter.entry(u.name.clone()).or_default();
            *k += 1;
            u.name = format!("{}#{}", u.name, k);
        }
    }
}

/// Parameter values read by anything outside their unit.
fn tied_params(g: &Graph, units: &[Unit]) -> Vec<TiedParam> {
    let consumers = g.consumers();
    let mut owner: HashMap<NodeIndex, usize> = HashMap::new();
    for u in units {
        for &n in &u.nodes {
            owner.insert(n, u.index);
        }
    }
    let mut tied: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in units {
        for p in u.learnable() {
            let readers = consumers
                .get(&p.param.value)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let others: Vec<String> = readers
                .iter()
                .filter(|(n, _)| owner.get(n) != Some(&u.index))
                .map(|(n, _)| {
                    owner
                        .get(n)
                        .map_or_else(|| "outside any unit".to_owned(), |&k| units[k].name.clone())
                })
                .collect();
            if !others.is_empty() {
                let entry = tied.entry(p.param.value.clone()).or_default();
                entry.push(u.name.clone());
                entry.extend(others);
            }
        }
    }
    tied.into_iter()
        .map(|(tensor, mut units)| {
            units.sort();
            units.dedup();
            TiedParam { tensor, units }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigs(s: &str) -> Vec<String> {
        s.chars().map(|c| c.to_string()).collect()
    }

    fn weights(s: &str) -> Vec<bool> {
        s.chars().map(|c| c != 'R').collect()
    }

    #[test]
    fn residual_blocks_group_as_body_then_relu() {
        // stem conv, bn, relu; 3 blocks; downsample block; 2 blocks. R = parameterless ReLU segment.
        let s = "CNRBRBRBRDRBRBR";
        let groups = group_by_period(&sigs(s), &weights(s));
        let text: Vec<&str> = groups.iter().map(|r| &s[r.clone()]).collect();
        assert_eq!(
            text,
            ["C", "N", "R", "BR", "BR", "BR", "D", "R", "BR", "BR"]
        );
    }

    #[test]
    fn smallest_period_wins_ties_and_singletons_stay_alone() {
        let w = |n| vec![true; n];
        assert_eq!(
            group_by_period(&sigs("AAAA"), &w(4)),
            vec![0..1, 1..2, 2..3, 3..4]
        );
        assert_eq!(
            group_by_period(&sigs("XABABABY"), &w(8)),
            vec![0..1, 1..3, 3..5, 5..7, 7..8]
        );
        assert_eq!(
            group_by_period(&sigs(""), &w(0)),
            Vec::<Range<usize>>::new()
        );
    }

    #[test]
    fn common_prefixes_cut_at_separators() {
        assert_eq!(
            common_prefix(&["layer1.2.conv1.weight", "layer1.2.bn1.weight"]),
            "layer1.2"
        );
        assert_eq!(common_prefix(&["layer1.2.conv1.weight"]), "layer1.2.conv1");
        assert_eq!(
            common_prefix(&["/layer1/layer1.1/conv1/Conv", "/layer1/layer1.1/Add"]),
            "/layer1/layer1.1"
        );
        assert_eq!(common_prefix(&["a", "b"]), "");
    }
}
