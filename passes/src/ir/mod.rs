//! The graph IR: ONNX nodes on a petgraph `StableDiGraph`, values by name.
//!
//! Nodes keep their `NodeProto` whole (attributes, metadata, device configurations) so nothing is lost on the
//! way back. Edges are derived from value names and carry (output slot, input slot): ONNX input order matters
//! and `Mul(x, x)` needs two parallel edges. Initializers are values, not nodes of computation. Lowering
//! orders nodes topologically, breaking ties by insertion order, so the same graph always lowers to the same
//! bytes and an untouched graph keeps its original node order.
//!
//! # Invariants, kept by every edit
//! The petgraph is private: passes read through accessors and change nodes only through the operations below
//! ([`Graph::add_nodes`], [`Graph::remove_node`], [`Graph::set_input`], [`Graph::replace_all_uses`],
//! [`Graph::update_node`], initializer adds and removes). Each operation keeps three derived structures
//! right at once, touching only the nodes and values it edits: the producer of every value, the readers of
//! every value (explicit inputs, and implicit ones read by subgraph attributes), and the edges between them.
//! So no pass can forget to re-derive the edges, and adding a node costs its own degree, not a pass over
//! the graph: a new node is wired to its producers and to the readers already waiting for its outputs.
//!
//! A read may dangle *between* edits (a node replaced by removing it and adding another that writes the
//! same value); [`Graph::validate`] reports what still dangles, and the pass driver ([`crate::pass`]) runs it
//! after every pass, as does [`Graph::lower`].
//!
//! Passes edit through these methods rather than returning a patch (tract's `ModelPatch`) for the driver
//! to apply: the passes here decide from an analysis of the whole graph and then make a handful of local
//! edits, where a patch would only buffer the same calls and add a second vocabulary for them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

use indexmap::IndexMap;
use petgraph::stable_graph::StableDiGraph;

/// The index of a node in a [`Graph`].
pub use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
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
    #[error("node {node} reads '{value}' inside a subgraph; its uses cannot be replaced")]
    ReadBySubgraph { node: String, value: String },
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
    /// No derived state depends on them: graph inputs and outputs are looked up here when needed.
    pub proto: GraphProto,
    dag: StableDiGraph<NodeProto, Edge>,
    initializers: IndexMap<String, TensorProto>,
    /// Value → the node and output slot writing it.
    producers: HashMap<String, (NodeIndex, usize)>,
    /// Value → every (node, input slot) reading it, [`IMPLICIT_INPUT`] for reads from inside subgraphs. Readers
    /// are kept even while their value has no producer, so that the node which produces it later is wired to
    /// them without a scan.
    readers: HashMap<String, BTreeSet<(NodeIndex, usize)>>,
    /// Implicit inputs of the nodes that have subgraph attributes (walking subgraphs is not free).
    implicit: HashMap<NodeIndex, Vec<String>>,
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

/// Every value a node reads, with its input slot ([`IMPLICIT_INPUT`] for reads of its subgraphs).
fn reads<'a>(
    node: &'a NodeProto,
    implicit: &'a [String],
) -> impl Iterator<Item = (usize, &'a str)> {
    node.input
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(slot, v)| (slot, v.as_str()))
        .chain(implicit.iter().map(|v| (IMPLICIT_INPUT, v.as_str())))
}

fn forget_reader(
    readers: &mut HashMap<String, BTreeSet<(NodeIndex, usize)>>,
    value: &str,
    index: NodeIndex,
    slot: usize,
) {
    if let Some(r) = readers.get_mut(value) {
        r.remove(&(index, slot));
        if r.is_empty() {
            readers.remove(value);
        }
    }
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
            readers: HashMap::new(),
            implicit: HashMap::new(),
            removed: HashSet::new(),
        };
        let mut added = Vec::with_capacity(nodes.len());
        for node in nodes {
            added.push(g.insert_node(node)?);
        }
        for &index in &added {
            g.register_reads(index);
        }
        for &index in &added {
            g.link_inputs(index);
        }
        g.validate()?;
        g.topological_order()?;
        Ok(g)
    }

    /// Adds a node's weight and registers its outputs (not its reads, not its edges).
    fn insert_node(&mut self, node: NodeProto) -> Result<NodeIndex, GraphError> {
        let index = self.dag.add_node(node);
        let outputs = self.dag[index].output.clone();
        for (slot, out) in outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            if let Some(first) = self.clash(out, None) {
                let second = node_label(&self.dag[index], index);
                for o in &outputs[..slot] {
                    self.producers.remove(o);
                }
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

    /// What already produces `value`, other than node `except`, in words.
    fn clash(&self, value: &str, except: Option<NodeIndex>) -> Option<String> {
        if let Some(&(other, _)) = self
            .producers
            .get(value)
            .filter(|(i, _)| Some(*i) != except)
        {
            Some(node_label(&self.dag[other], other))
        } else if self.initializers.contains_key(value) {
            Some("an initializer".to_owned())
        } else if self.proto.input.iter().any(|i| i.name() == value) {
            Some("a graph input".to_owned())
        } else {
            None
        }
    }

    /// Records what node `index` reads in the reader map (and caches its implicit inputs).
    fn register_reads(&mut self, index: NodeIndex) {
        let node = &self.dag[index];
        let has_subgraphs = node
            .attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty());
        if has_subgraphs {
            self.implicit.insert(index, implicit_inputs(node));
        }
        let implicit = self.implicit.get(&index).map_or(&[][..], Vec::as_slice);
        for (slot, value) in reads(&self.dag[index], implicit) {
            self.readers
                .entry(value.to_owned())
                .or_default()
                .insert((index, slot));
        }
    }

    /// Removes what node `index` reads from the reader map.
    fn unregister_reads(&mut self, index: NodeIndex) {
        let implicit = self.implicit.remove(&index).unwrap_or_default();
        for (slot, value) in reads(&self.dag[index], &implicit) {
            forget_reader(&mut self.readers, value, index, slot);
        }
    }

    /// Adds the edges into node `index` from the nodes producing what it reads.
    fn link_inputs(&mut self, index: NodeIndex) {
        let implicit = self.implicit.get(&index).map_or(&[][..], Vec::as_slice);
        let wires: Vec<(NodeIndex, Edge)> = reads(&self.dag[index], implicit)
            .filter_map(|(to_slot, value)| {
                let &(from, from_slot) = self.producers.get(value)?;
                Some((from, Edge { from_slot, to_slot }))
            })
            .collect();
        for (from, edge) in wires {
            self.dag.add_edge(from, index, edge);
        }
    }

    /// Adds the edges out of node `index` to the readers of its outputs, except readers in `skip`.
    fn link_outputs(&mut self, index: NodeIndex, skip: &HashSet<NodeIndex>) {
        let mut wires = Vec::new();
        for (from_slot, out) in self.dag[index].output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            for &(reader, to_slot) in self.readers.get(out).into_iter().flatten() {
                if !skip.contains(&reader) {
                    wires.push((reader, Edge { from_slot, to_slot }));
                }
            }
        }
        for (to, edge) in wires {
            self.dag.add_edge(index, to, edge);
        }
    }

    /// The first value node `index` reads that nothing produces.
    fn first_dangling(&self, index: NodeIndex) -> Option<GraphError> {
        let node = &self.dag[index];
        let implicit = self.implicit.get(&index).map_or(&[][..], Vec::as_slice);
        reads(node, implicit)
            .find(|(_, v)| self.producer(v).is_none())
            .map(|(_, v)| GraphError::Dangling {
                node: node_label(node, index),
                value: v.to_owned(),
            })
    }

    /// Adds a node and wires it. Its outputs must be new names; what it reads must exist.
    pub fn add_node(&mut self, node: NodeProto) -> Result<NodeIndex, GraphError> {
        Ok(self.add_nodes([node])?[0])
    }

    /// Adds nodes that may read each other's outputs, and wires them: to the producers of what they read and
    /// to the nodes already reading their outputs. Nothing else is touched. On an error (an output that
    /// already exists, an input that nothing produces) the graph is left as it was.
    pub fn add_nodes(
        &mut self,
        nodes: impl IntoIterator<Item = NodeProto>,
    ) -> Result<Vec<NodeIndex>, GraphError> {
        let mut added = Vec::new();
        for node in nodes {
            match self.insert_node(node) {
                Ok(index) => added.push(index),
                Err(e) => {
                    self.discard(&added);
                    return Err(e);
                }
            }
        }
        for &index in &added {
            self.register_reads(index);
        }
        if let Some(e) = added.iter().find_map(|&i| self.first_dangling(i)) {
            for &index in &added {
                self.unregister_reads(index);
            }
            self.discard(&added);
            return Err(e);
        }
        let new: HashSet<NodeIndex> = added.iter().copied().collect();
        for &index in &added {
            self.link_inputs(index);
            self.link_outputs(index, &new);
        }
        Ok(added)
    }

    /// Takes back nodes just inserted (outputs registered, reads not, no edges): as if never added.
    fn discard(&mut self, added: &[NodeIndex]) {
        for &index in added.iter().rev() {
            for out in &self.dag[index].output {
                self.producers.remove(out);
            }
            self.dag.remove_node(index);
        }
    }

    /// Removes a node and its edges; values it produced no longer exist (their readers dangle until another
    /// producer is added or they are rewired).
    pub fn remove_node(&mut self, index: NodeIndex) -> Option<NodeProto> {
        self.dag.node_weight(index)?;
        self.unregister_reads(index);
        let node = self.dag.remove_node(index)?;
        for out in &node.output {
            if self.producers.get(out).is_some_and(|&(i, _)| i == index) {
                self.producers.remove(out);
                self.removed.insert(out.clone());
            }
        }
        Some(node)
    }

    /// Makes input `slot` of node `index` read `value`, which must exist.
    pub fn set_input(
        &mut self,
        index: NodeIndex,
        slot: usize,
        value: &str,
    ) -> Result<(), GraphError> {
        let old = self.dag[index].input[slot].clone();
        if old == value {
            return Ok(());
        }
        if !value.is_empty() && self.producer(value).is_none() {
            return Err(GraphError::Dangling {
                node: node_label(&self.dag[index], index),
                value: value.to_owned(),
            });
        }
        forget_reader(&mut self.readers, &old, index, slot);
        let stale = self
            .dag
            .edges_directed(index, Direction::Incoming)
            .find(|e| e.weight().to_slot == slot)
            .map(|e| e.id());
        if let Some(e) = stale {
            self.dag.remove_edge(e);
        }
        self.dag[index].input[slot] = value.to_owned();
        if value.is_empty() {
            return Ok(());
        }
        self.readers
            .entry(value.to_owned())
            .or_default()
            .insert((index, slot));
        if let Some(&(from, from_slot)) = self.producers.get(value) {
            self.dag.add_edge(
                from,
                index,
                Edge {
                    from_slot,
                    to_slot: slot,
                },
            );
        }
        Ok(())
    }

    /// Makes every node input reading `old` read `new` instead; returns how many inputs changed. Graph outputs
    /// are not inputs: a graph output named `old` stays. Fails, changing nothing, when a subgraph reads `old`
    /// (its body would have to be rewritten) or when `new` does not exist.
    pub fn replace_all_uses(&mut self, old: &str, new: &str) -> Result<usize, GraphError> {
        let uses: Vec<(NodeIndex, usize)> = self.readers(old).collect();
        if let Some(&(i, _)) = uses.iter().find(|(_, s)| *s == IMPLICIT_INPUT) {
            return Err(GraphError::ReadBySubgraph {
                node: node_label(&self.dag[i], i),
                value: old.to_owned(),
            });
        }
        if let (Some(&(i, _)), None) = (uses.first(), self.producer(new)) {
            return Err(GraphError::Dangling {
                node: node_label(&self.dag[i], i),
                value: new.to_owned(),
            });
        }
        for &(i, slot) in &uses {
            self.set_input(i, slot, new)?;
        }
        Ok(uses.len())
    }

    /// Edits node `index` in place (attributes, inputs, outputs) and rewires it. The edited node's new outputs
    /// must be new names and what it reads must exist; otherwise the node is left as it was. Outputs it no
    /// longer writes no longer exist.
    pub fn update_node<R>(
        &mut self,
        index: NodeIndex,
        edit: impl FnOnce(&mut NodeProto) -> R,
    ) -> Result<R, GraphError> {
        let mut node = self.dag[index].clone();
        let result = edit(&mut node);
        for (k, out) in node
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
        {
            let twice = node.output[..k]
                .contains(out)
                .then(|| node_label(&node, index));
            if let Some(first) = twice.or_else(|| self.clash(out, Some(index))) {
                return Err(GraphError::DuplicateName {
                    value: out.clone(),
                    first,
                    second: node_label(&node, index),
                });
            }
        }
        let implicit = implicit_inputs(&node);
        if let Some((_, v)) = reads(&node, &implicit).find(|(_, v)| self.producer(v).is_none()) {
            return Err(GraphError::Dangling {
                node: node_label(&node, index),
                value: v.to_owned(),
            });
        }
        self.unregister_reads(index);
        let edges: Vec<_> = self
            .dag
            .edges_directed(index, Direction::Incoming)
            .chain(self.dag.edges_directed(index, Direction::Outgoing))
            .map(|e| e.id())
            .collect();
        for e in edges {
            self.dag.remove_edge(e);
        }
        let old = std::mem::replace(&mut self.dag[index], node);
        for out in old.output.iter().filter(|o| !o.is_empty()) {
            self.producers.remove(out);
            if !self.dag[index].output.contains(out) {
                self.removed.insert(out.clone());
            }
        }
        for (slot, out) in self.dag[index].output.iter().enumerate() {
            if !out.is_empty() {
                self.producers.insert(out.clone(), (index, slot));
            }
        }
        self.register_reads(index);
        self.link_inputs(index);
        self.link_outputs(index, &HashSet::from([index]));
        Ok(result)
    }

    /// Sets an attribute of node `index`, replacing one of the same name.
    pub fn set_attribute(
        &mut self,
        index: NodeIndex,
        attribute: AttributeProto,
    ) -> Result<(), GraphError> {
        self.update_node(index, |n| {
            n.attribute.retain(|a| a.name() != attribute.name());
            n.attribute.push(attribute);
        })
    }

    /// Adds an initializer (replacing one of the same name). Its name must not be a node's output
    /// ([`Graph::validate`] reports it); initializers have no edges.
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

    /// Removes `nodes` and the initializers named in `initializers`; whether anything was removed. The end of a
    /// cleanup pass that first decides what is redundant, then takes it all out at once.
    pub fn prune(&mut self, nodes: Vec<NodeIndex>, initializers: Vec<String>) -> bool {
        let changed = !nodes.is_empty() || !initializers.is_empty();
        for i in nodes {
            self.remove_node(i);
        }
        for name in initializers {
            self.remove_initializer(&name);
        }
        changed
    }

    /// Checks that every value a node reads and every graph output has a producer, and that no initializer
    /// shares its name with a node output. Nodes are checked in index order, so the same graph always
    /// reports the same fault.
    pub fn validate(&self) -> Result<(), GraphError> {
        for index in self.dag.node_indices() {
            if let Some(e) = self.first_dangling(index) {
                return Err(e);
            }
        }
        for out in &self.proto.output {
            if self.producer(out.name()).is_none() {
                return Err(GraphError::DanglingOutput {
                    value: out.name().to_owned(),
                });
            }
        }
        if let Some((name, &(i, _))) = self
            .initializers
            .keys()
            .find_map(|k| self.producers.get(k).map(|p| (k, p)))
        {
            return Err(GraphError::DuplicateName {
                value: name.clone(),
                first: node_label(&self.dag[i], i),
                second: "an initializer".to_owned(),
            });
        }
        Ok(())
    }

    /// The node at `index`. Panics when there is none, like indexing.
    pub fn node(&self, index: NodeIndex) -> &NodeProto {
        &self.dag[index]
    }

    /// Every node with its index, in index (insertion) order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &NodeProto)> {
        self.dag.node_indices().map(move |i| (i, &self.dag[i]))
    }

    /// The nodes of the default ONNX domain with op type `op`, in index order.
    pub fn nodes_with_op<'a>(
        &'a self,
        op: &'a str,
    ) -> impl Iterator<Item = (NodeIndex, &'a NodeProto)> + 'a {
        self.nodes()
            .filter(move |(_, n)| n.op_type() == op && matches!(n.domain(), "" | "ai.onnx"))
    }

    /// The indices of [`Graph::nodes_with_op`], collected (for passes that change the graph while visiting them).
    pub fn indices_of_op(&self, op: &str) -> Vec<NodeIndex> {
        self.nodes_with_op(op).map(|(i, _)| i).collect()
    }

    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.dag.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// The petgraph, read-only, for graph algorithms.
    pub fn dag(&self) -> &StableDiGraph<NodeProto, Edge> {
        &self.dag
    }

    /// Initializers by name, in insertion order.
    pub fn initializers(&self) -> &IndexMap<String, TensorProto> {
        &self.initializers
    }

    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.initializers.get(name)
    }

    /// Values the subgraphs of node `index` read from the graph (sorted; empty for nodes without subgraphs).
    pub fn implicit_inputs(&self, index: NodeIndex) -> &[String] {
        self.implicit.get(&index).map_or(&[][..], Vec::as_slice)
    }

    /// Every (node, input slot) reading `value`, in node-index order; [`IMPLICIT_INPUT`] marks reads from
    /// inside a subgraph.
    pub fn readers(&self, value: &str) -> impl Iterator<Item = (NodeIndex, usize)> + '_ {
        self.readers.get(value).into_iter().flatten().copied()
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

    /// Every (node, input slot) reading each value through an explicit input, in node-index order.
    pub fn consumers(&self) -> HashMap<String, Vec<(NodeIndex, usize)>> {
        self.readers
            .iter()
            .filter_map(|(v, r)| {
                let explicit: Vec<_> = r
                    .iter()
                    .copied()
                    .filter(|&(_, s)| s != IMPLICIT_INPUT)
                    .collect();
                (!explicit.is_empty()).then(|| (v.clone(), explicit))
            })
            .collect()
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

    /// Builds the model back (after [`Graph::validate`]): nodes in topological order, initializers in insertion order, value_info of
    /// values that edits removed dropped (value_info of values that never existed is kept as it came).
    pub fn lower(&self) -> Result<ModelProto, GraphError> {
        self.validate()?;
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
mod tests;
