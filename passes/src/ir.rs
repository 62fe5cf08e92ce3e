//! The graph IR: ONNX nodes on a petgraph `StableDiGraph`, values by name.
//!
//! Nodes keep their `NodeProto` whole (attributes, metadata, device configurations) so nothing is lost on the
//! way back. Edges are derived from value names and carry (output slot, input slot): ONNX input order matters
//! and `Mul(x, x)` needs two parallel edges. Initializers are values, not nodes of computation. Lowering
//! orders nodes topologically, breaking ties by insertion order, so the same graph always lowers to the same
//! bytes and an untouched graph keeps its original node order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use indexmap::IndexMap;
use petgraph::stable_graph::StableDiGraph;

/// The index of a node in a [`Graph`].
pub use petgraph::stable_graph::NodeIndex;
use petgraph::Direction;

use crate::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

/// Input slot used for values a node reads implicitly, through a subgraph attribute (If/Loop/Scan bodies).
pub const IMPLICIT_INPUT: usize = usize::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Index into the producer's `output` list.
    pub from_slot: usize,
    /// Index into the consumer's `input` list, or [`IMPLICIT_INPUT`].
    pub to_slot: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("value '{value}' is produced twice: by {first} and by {second}; every value needs exactly one producer")]
    DuplicateName {
        value: String,
        first: String,
        second: String,
    },
    #[error("node {node} reads '{value}', which no node, initializer or graph input produces")]
    Dangling { node: String, value: String },
    #[error("graph output '{value}' is produced by nothing")]
    DanglingOutput { value: String },
    #[error("the graph has a cycle through node {node}; ONNX graphs must be acyclic")]
    Cycle { node: String },
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    Node(NodeIndex, usize),
    Initializer,
    GraphInput,
}

#[derive(Debug, Clone)]
pub struct Graph {
    /// Model-level fields (opsets, metadata, functions, …) with `graph` cleared.
    pub model: ModelProto,
    /// Graph-level fields (name, inputs, outputs, value_info, metadata, …) with nodes and initializers cleared.
    pub proto: GraphProto,
    pub dag: StableDiGraph<NodeProto, Edge>,
    pub initializers: IndexMap<String, TensorProto>,
    producers: HashMap<String, (NodeIndex, usize)>,
    /// Values removed by edits; their value_info is dropped on lowering unless something produces them again.
    removed: HashSet<String>,
}

/// How a node is named in messages: its name, or its position and op type when unnamed.
pub fn node_label(node: &NodeProto, index: NodeIndex) -> String {
    if node.name().is_empty() {
        format!("#{} ({})", index.index(), node.op_type())
    } else {
        format!("'{}' ({})", node.name(), node.op_type())
    }
}

/// Names a subgraph reads from its enclosing scope.
fn captured_names(g: &GraphProto, out: &mut Vec<String>) {
    let mut local: HashSet<&str> = HashSet::new();
    local.extend(g.input.iter().map(|v| v.name()));
    local.extend(g.initializer.iter().map(|t| t.name()));
    for n in &g.node {
        local.extend(n.output.iter().map(String::as_str));
    }
    for n in &g.node {
        for i in n
            .input
            .iter()
            .filter(|i| !i.is_empty() && !local.contains(i.as_str()))
        {
            out.push(i.clone());
        }
        for a in &n.attribute {
            let mut inner = Vec::new();
            for sg in a.g.iter().map(|b| b.as_ref()).chain(&a.graphs) {
                captured_names(sg, &mut inner);
            }
            out.extend(inner.into_iter().filter(|i| !local.contains(i.as_str())));
        }
    }
    for o in &g.output {
        if !local.contains(o.name()) {
            out.push(o.name().to_owned());
        }
    }
}

/// Names a node's subgraph attributes read from the enclosing scope, sorted and deduplicated.
pub(crate) fn implicit_inputs(node: &NodeProto) -> Vec<String> {
    let mut out = Vec::new();
    for a in &node.attribute {
        for sg in a.g.iter().map(|b| b.as_ref()).chain(&a.graphs) {
            captured_names(sg, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Graph {
    /// Builds the IR from a model, checking names and acyclicity.
    pub fn lift(mut model: ModelProto) -> Result<Graph, GraphError> {
        let mut proto = model.graph.take().ok_or(GraphError::NoGraph)?;
        let nodes = std::mem::take(&mut proto.node);
        let mut initializers = IndexMap::with_capacity(proto.initializer.len());
        for t in std::mem::take(&mut proto.initializer) {
            initializers.insert(t.name().to_owned(), t);
        }
        let mut g = Graph {
            model,
            proto,
            dag: StableDiGraph::default(),
            initializers,
            producers: HashMap::new(),
            removed: HashSet::new(),
        };
        for node in nodes {
            g.insert_node(node)?;
        }
        g.relink()?;
        g.topological_order()?;
        Ok(g)
    }

    fn insert_node(&mut self, node: NodeProto) -> Result<NodeIndex, GraphError> {
        let outputs = node.output.clone();
        let index = self.dag.add_node(node);
        for (slot, out) in outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            let clash = if let Some(&(other, _)) = self.producers.get(out) {
                Some(node_label(&self.dag[other], other))
            } else if self.initializers.contains_key(out) {
                Some("an initializer".to_owned())
            } else if self.proto.input.iter().any(|i| i.name() == out) {
                Some("a graph input".to_owned())
            } else {
                None
            };
            if let Some(first) = clash {
                let second = node_label(&self.dag[index], index);
                self.dag.remove_node(index);
                return Err(GraphError::DuplicateName {
                    value: out.clone(),
                    first,
                    second,
                });
            }
            self.producers.insert(out.clone(), (index, slot));
        }
        Ok(index)
    }

    /// Adds a node and wires it. Its outputs must be new names.
    pub fn add_node(&mut self, node: NodeProto) -> Result<NodeIndex, GraphError> {
        Ok(self.add_nodes([node])?[0])
    }

    /// Adds nodes that may read each other's outputs, then wires them all at once.
    pub fn add_nodes(
        &mut self,
        nodes: impl IntoIterator<Item = NodeProto>,
    ) -> Result<Vec<NodeIndex>, GraphError> {
        let mut added = Vec::new();
        for node in nodes {
            match self.insert_node(node) {
                Ok(index) => added.push(index),
                Err(e) => {
                    for index in added {
                        self.remove_node(index);
                    }
                    return Err(e);
                }
            }
        }
        self.relink()?;
        Ok(added)
    }

    /// Removes a node; values it produced no longer exist.
    pub fn remove_node(&mut self, index: NodeIndex) -> Option<NodeProto> {
        let node = self.dag.remove_node(index)?;
        for out in &node.output {
            if self.producers.get(out).is_some_and(|&(i, _)| i == index) {
                self.producers.remove(out);
                self.removed.insert(out.clone());
            }
        }
        Some(node)
    }

    /// Adds an initializer (replacing one of the same name).
    pub fn add_initializer(&mut self, tensor: TensorProto) {
        self.initializers.insert(tensor.name().to_owned(), tensor);
    }

    /// Removes an initializer and, for models that list initializers as inputs, the matching graph input.
    pub fn remove_initializer(&mut self, name: &str) -> Option<TensorProto> {
        let t = self.initializers.shift_remove(name)?;
        self.removed.insert(name.to_owned());
        self.proto.input.retain(|i| i.name() != name);
        Some(t)
    }

    /// Removes `nodes` and the initializers named in `initializers`, then relinks; whether anything was removed.
    /// The end of a cleanup pass that first decides what is redundant, then takes it all out at once.
    pub fn prune(
        &mut self,
        nodes: Vec<NodeIndex>,
        initializers: Vec<String>,
    ) -> Result<bool, GraphError> {
        let changed = !nodes.is_empty() || !initializers.is_empty();
        for i in nodes {
            self.remove_node(i);
        }
        for name in initializers {
            self.remove_initializer(&name);
        }
        self.relink()?;
        Ok(changed)
    }

    /// Recomputes edges from value names and checks that every input has a producer.
    pub fn relink(&mut self) -> Result<(), GraphError> {
        self.dag.clear_edges();
        let indices: Vec<NodeIndex> = self.dag.node_indices().collect();
        for index in indices {
            let node = &self.dag[index];
            let mut wires = Vec::new();
            let explicit = node.input.iter().enumerate().filter(|(_, i)| !i.is_empty());
            let implicit = implicit_inputs(node);
            let all = explicit
                .map(|(slot, v)| (slot, v.clone()))
                .chain(implicit.into_iter().map(|v| (IMPLICIT_INPUT, v)));
            for (slot, value) in all {
                match self.producer(&value) {
                    Some(Producer::Node(from, from_slot)) => wires.push((
                        from,
                        Edge {
                            from_slot,
                            to_slot: slot,
                        },
                    )),
                    Some(_) => {}
                    None => {
                        return Err(GraphError::Dangling {
                            node: node_label(node, index),
                            value,
                        });
                    }
                }
            }
            for (from, edge) in wires {
                self.dag.add_edge(from, index, edge);
            }
        }
        for out in &self.proto.output {
            if self.producer(out.name()).is_none() {
                return Err(GraphError::DanglingOutput {
                    value: out.name().to_owned(),
                });
            }
        }
        Ok(())
    }

    pub fn producer(&self, value: &str) -> Option<Producer> {
        if let Some(&(n, s)) = self.producers.get(value) {
            Some(Producer::Node(n, s))
        } else if self.initializers.contains_key(value) {
            Some(Producer::Initializer)
        } else if self.proto.input.iter().any(|i| i.name() == value) {
            Some(Producer::GraphInput)
        } else {
            None
        }
    }

    /// The node producing `value`, if a node does.
    pub fn producer_node(&self, value: &str) -> Option<NodeIndex> {
        self.producers.get(value).map(|&(n, _)| n)
    }

    /// Every (node, input slot) reading each value, in node-index order.
    pub fn consumers(&self) -> HashMap<String, Vec<(NodeIndex, usize)>> {
        let mut map: HashMap<String, Vec<(NodeIndex, usize)>> = HashMap::new();
        for index in self.dag.node_indices() {
            for (slot, v) in self.dag[index]
                .input
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
            {
                map.entry(v.clone()).or_default().push((index, slot));
            }
        }
        map
    }

    /// Node predecessors through data edges (explicit and implicit), deduplicated.
    pub fn predecessors(&self, index: NodeIndex) -> Vec<NodeIndex> {
        self.neighbours(index, Direction::Incoming)
    }

    /// Node successors through data edges, deduplicated.
    pub fn successors(&self, index: NodeIndex) -> Vec<NodeIndex> {
        self.neighbours(index, Direction::Outgoing)
    }

    fn neighbours(&self, index: NodeIndex, direction: Direction) -> Vec<NodeIndex> {
        let mut n: Vec<NodeIndex> = self.dag.neighbors_directed(index, direction).collect();
        n.sort();
        n.dedup();
        n
    }

    /// Topological order, ties broken by insertion order (deterministic).
    pub fn topological_order(&self) -> Result<Vec<NodeIndex>, GraphError> {
        let mut indegree: HashMap<NodeIndex, usize> = HashMap::new();
        for index in self.dag.node_indices() {
            indegree.insert(index, self.predecessors(index).len());
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&i, _)| Reverse(i))
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(Reverse(index)) = ready.pop() {
            order.push(index);
            for s in self.successors(index) {
                let d = indegree.get_mut(&s).expect("successor is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(s));
                }
            }
        }
        if order.len() != indegree.len() {
            let done: HashSet<NodeIndex> = order.iter().copied().collect();
            let stuck = self
                .dag
                .node_indices()
                .find(|i| !done.contains(i))
                .expect("some node is left");
            return Err(GraphError::Cycle {
                node: node_label(&self.dag[stuck], stuck),
            });
        }
        Ok(order)
    }

    /// Builds the model back: nodes in topological order, initializers in insertion order, value_info of
    /// values that edits removed dropped (value_info of values that never existed is kept as it came).
    pub fn lower(&self) -> Result<ModelProto, GraphError> {
        let order = self.topological_order()?;
        let mut graph = self.proto.clone();
        graph.node = order.iter().map(|&i| self.dag[i].clone()).collect();
        graph.initializer = self.initializers.values().cloned().collect();
        graph
            .value_info
            .retain(|v| !self.removed.contains(v.name()) || self.producer(v.name()).is_some());
        let mut model = self.model.clone();
        model.graph = Some(graph);
        Ok(model)
    }

    /// Value info (type and shape) of a value, from inputs, outputs or value_info.
    pub fn value_info(&self, value: &str) -> Option<&ValueInfoProto> {
        self.proto
            .input
            .iter()
            .chain(&self.proto.output)
            .chain(&self.proto.value_info)
            .find(|v| v.name() == value)
    }

    /// Names of the graph inputs that are data (not initializers listed as inputs).
    pub fn data_inputs(&self) -> Vec<String> {
        self.proto
            .input
            .iter()
            .map(|i| i.name().to_owned())
            .filter(|n| !self.initializers.contains_key(n))
            .collect()
    }

    /// Makes the model import operator set `domain` (at `version`) unless it already imports it.
    pub fn import_domain(&mut self, domain: &str, version: i64) {
        if !self.model.opset_import.iter().any(|o| o.domain() == domain) {
            self.model.opset_import.push(OperatorSetIdProto {
                domain: Some(domain.to_owned()),
                version: Some(version),
            });
        }
    }

    /// A value name not yet used in the graph, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if self.producer(base).is_none() && !self.node_names().contains(base) {
            return base.to_owned();
        }
        (1..)
            .map(|k| format!("{base}.{k}"))
            .find(|n| self.producer(n).is_none())
            .expect("unbounded")
    }

    fn node_names(&self) -> HashSet<&str> {
        self.dag.node_weights().map(|n| n.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphProto;

    pub(crate) fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                node: nodes,
                input: vec![vi("x")],
                output: vec![vi("y")],
                initializer: vec![crate::tensor::f32_tensor("w", &[1], &[2.0])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lift_lower_keeps_order_and_parallel_edges() {
        let m = model(vec![
            node("Mul", "sq", &["x", "x"], &["t"]),
            node("Mul", "scale", &["t", "w"], &["y"]),
        ]);
        let g = Graph::lift(m.clone()).unwrap();
        assert_eq!(g.dag.edge_count(), 1);
        let sq = g.producer_node("t").unwrap();
        assert_eq!(g.dag.edges_directed(sq, Direction::Outgoing).count(), 1);
        assert_eq!(g.lower().unwrap(), m);
    }

    #[test]
    fn unsorted_input_is_sorted_on_lowering() {
        let m = model(vec![
            node("Relu", "b", &["t"], &["y"]),
            node("Relu", "a", &["x"], &["t"]),
        ]);
        let lowered = Graph::lift(m).unwrap().lower().unwrap();
        let names: Vec<_> = lowered
            .graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn cycles_are_reported_with_a_node() {
        let m = model(vec![
            node("Add", "a", &["x", "u"], &["t"]),
            node("Relu", "b", &["t"], &["u"]),
            node("Relu", "c", &["t"], &["y"]),
        ]);
        assert!(matches!(Graph::lift(m), Err(GraphError::Cycle { .. })));
    }

    #[test]
    fn dangling_and_duplicate_names_are_reported() {
        let m = model(vec![node("Relu", "a", &["nothing"], &["y"])]);
        assert_eq!(
            Graph::lift(m).unwrap_err(),
            GraphError::Dangling {
                node: "'a' (Relu)".into(),
                value: "nothing".into()
            }
        );
        let m = model(vec![
            node("Relu", "a", &["x"], &["y"]),
            node("Relu", "b", &["x"], &["y"]),
        ]);
        assert!(
            matches!(Graph::lift(m), Err(GraphError::DuplicateName { value, .. }) if value == "y")
        );
        let m = model(vec![
            node("Relu", "a", &["x"], &["w"]),
            node("Relu", "b", &["w"], &["y"]),
        ]);
        assert!(
            matches!(Graph::lift(m), Err(GraphError::DuplicateName { value, .. }) if value == "w")
        );
    }

    #[test]
    fn new_nodes_are_placed_before_their_first_consumer() {
        let m = model(vec![
            node("Relu", "a", &["x"], &["t"]),
            node("Mul", "b", &["t", "w2"], &["y"]),
        ]);
        let mut gp = m.clone();
        gp.graph
            .as_mut()
            .unwrap()
            .initializer
            .push(crate::tensor::f32_tensor("w2", &[1], &[1.0]));
        let mut g = Graph::lift(gp).unwrap();
        g.remove_initializer("w2");
        g.add_node(node("Identity", "make_w2", &["w"], &["w2"]))
            .unwrap();
        let lowered = g.lower().unwrap();
        let names: Vec<_> = lowered
            .graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "make_w2", "b"]);
    }
}
