//! Single-entry single-exit segments of the data-flow graph, cut at the dominators of the output.
//!
//! Constants are set aside first (see [`super::constants`]); on the remaining data flow a virtual source feeds
//! the graph inputs and a virtual sink collects the graph outputs. Every dominator of the sink is a cut: all data
//! passes through it. The nodes between two consecutive cuts, with the later cut, form one segment.

use std::collections::{HashMap, HashSet};

use petgraph::algo::dominators::simple_fast;
use petgraph::graph::DiGraph;
use petgraph::stable_graph::NodeIndex;

use crate::analysis::constants::is_constant_node;
use crate::ir::Graph;

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Data-flow nodes of the segment in topological order; the last one is the exit (a cut).
    pub nodes: Vec<NodeIndex>,
}

impl Segment {
    pub fn exit(&self) -> NodeIndex {
        *self.nodes.last().expect("segments are never empty")
    }
}

/// The data-flow nodes (those not computed from constants alone) in topological order.
pub fn data_flow_nodes(g: &Graph, constants: &HashSet<String>) -> Vec<NodeIndex> {
    g.topological_order()
        .unwrap_or_default()
        .into_iter()
        .filter(|&i| !is_constant_node(g, i, constants))
        .collect()
}

/// The chain of cut nodes (dominators of the output), in order from input to output.
pub fn cut_chain(g: &Graph, flow: &[NodeIndex]) -> Vec<NodeIndex> {
    let mut dg: DiGraph<Option<NodeIndex>, ()> = DiGraph::new();
    let source = dg.add_node(None);
    let sink = dg.add_node(None);
    let mut local = HashMap::new();
    for &n in flow {
        local.insert(n, dg.add_node(Some(n)));
    }
    let data_inputs: HashSet<String> = g.data_inputs().into_iter().collect();
    let outputs: HashSet<&str> = g.proto.output.iter().map(|o| o.name()).collect();
    for &n in flow {
        let node = g.node(n);
        if node.input.iter().any(|i| data_inputs.contains(i))
            || g.predecessors(n).iter().all(|p| !local.contains_key(p))
        {
            dg.add_edge(source, local[&n], ());
        }
        for p in g.predecessors(n) {
            if let Some(&lp) = local.get(&p) {
                dg.add_edge(lp, local[&n], ());
            }
        }
        if node.output.iter().any(|o| outputs.contains(o.as_str())) {
            dg.add_edge(local[&n], sink, ());
        }
    }
    let dom = simple_fast(&dg, source);
    let mut chain: Vec<NodeIndex> = match dom.dominators(sink) {
        Some(it) => it.filter_map(|d| dg[d]).collect(),
        None => Vec::new(),
    };
    chain.reverse();
    chain
}

/// Splits the data flow into segments between consecutive cuts.
pub fn segments(g: &Graph, constants: &HashSet<String>) -> Vec<Segment> {
    let flow = data_flow_nodes(g, constants);
    let chain = cut_chain(g, &flow);
    if chain.is_empty() {
        return if flow.is_empty() {
            Vec::new()
        } else {
            vec![Segment { nodes: flow }]
        };
    }
    let cut_position: HashMap<NodeIndex, usize> =
        chain.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let in_flow: HashSet<NodeIndex> = flow.iter().copied().collect();
    // Each node belongs to the segment of the first cut it reaches; walk backwards so successors are known.
    let mut segment_of: HashMap<NodeIndex, usize> = HashMap::new();
    for &n in flow.iter().rev() {
        let seg = match cut_position.get(&n) {
            Some(&k) => Some(k),
            None => g
                .successors(n)
                .iter()
                .filter(|s| in_flow.contains(s))
                .filter_map(|s| segment_of.get(s).copied())
                .min(),
        };
        if let Some(k) = seg {
            segment_of.insert(n, k);
        }
    }
    // Nodes that reach no cut (side branches ending in no graph output) join the segment of the cut before them.
    let mut last_cut = 0;
    for &n in &flow {
        match segment_of.get(&n) {
            Some(&k) if cut_position.contains_key(&n) => last_cut = (k + 1).min(chain.len() - 1),
            Some(_) => {}
            None => {
                segment_of.insert(n, last_cut);
            }
        }
    }
    let mut out = vec![Vec::new(); chain.len()];
    for &n in &flow {
        out[segment_of[&n]].push(n);
    }
    // Keep every segment's exit last even when a side branch was placed after it in topological order.
    for (k, nodes) in out.iter_mut().enumerate() {
        if let Some(pos) = nodes.iter().position(|&n| n == chain[k]) {
            let exit = nodes.remove(pos);
            nodes.push(exit);
        }
    }
    out.into_iter()
        .filter(|s| !s.is_empty())
        .map(|nodes| Segment { nodes })
        .collect()
}
