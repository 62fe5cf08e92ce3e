//! Semantic diff of two ONNX models.
//!
//! [`diff_models`] compares two in-memory [`ModelProto`]s and returns a [`ModelDiff`]: a structured,
//! deterministic description of what changed, printable as a text report ([`fmt::Display`]) or as JSON
//! ([`ModelDiff::to_json`]). No file I/O is done here.
//!
//! What is compared, section by section:
//!
//! - **model**: `ir_version`, `producer_name`, `producer_version`, `domain`, `model_version` and the graph
//!   name. Unset proto2 fields compare equal to their default (`None` and `Some("")` are the same).
//! - **opsets**: `opset_import`, keyed by domain (`""` is shown as `ai.onnx`).
//! - **metadata**: `metadata_props` of the model and of the main graph, keyed by key. Values longer than
//!   [`INLINE_VALUE_MAX`] bytes (or containing control characters), and the value of [`PLAN_KEY`] always,
//!   are shown only as length and short SHA-256.
//! - **inputs / outputs**: keyed by name; the rendered type (`float32[N,3,32,32]`) is compared, and a change
//!   of the positional order of the names is reported.
//! - **initializers**: `graph.initializer`, keyed by name; dtype, shape and a content hash are compared.
//! - **nodes**: top-level graph nodes, matched first by name (when the name is non-empty and unique on both
//!   sides), then the remaining nodes are matched by position among the unmatched nodes with the same
//!   `op_type`, in graph order. Matched pairs are compared on name, domain, op_type, overload, inputs,
//!   outputs and attributes. Nodes of subgraphs are not matched individually; a changed subgraph shows as a
//!   changed graph attribute.
//! - **op histogram**: per-op_type count delta over the top-level nodes.
//! - **other**: `graph.value_info`, `graph.sparse_initializer`, `graph.quantization_annotation`,
//!   `functions`, `training_info` and `configuration` are compared as whole lists (count and hash of
//!   their encoding), so that [`ModelDiff::is_empty`] does not miss them.
//!
//! `doc_string` fields are ignored everywhere: they carry no semantics.
//!
//! # Content hash of tensors
//!
//! The content hash is SHA-256 over a canonical form of the tensor's data, independent of dtype and shape
//! (those are compared separately):
//!
//! - `raw_data` bytes when present and non-empty (ONNX stores them little-endian);
//! - otherwise the typed field matching the dtype, each element encoded little-endian at the dtype's
//!   storage width (`float_data` as f32, `int32_data` narrowed to 2 bytes for float16/bfloat16/(u)int16
//!   and to 1 byte for 8-bit, bool and packed 4/2-bit types, `uint64_data` narrowed to 4 bytes for
//!   uint32, ...). Thus a tensor stored in `float_data` hashes like the same tensor stored in `raw_data`.
//!   Strings are encoded as u64-LE length followed by the bytes. An undefined/unknown dtype hashes all
//!   typed fields, each with a tag;
//! - for tensors with `data_location = EXTERNAL` the payload is not loaded: the hash covers the
//!   `external_data` entries (`location`, `offset`, `length`, ... as sorted `key=value` lines, with a
//!   domain-separation prefix). Two external tensors therefore compare equal when they point at the same
//!   bytes of the same file, not when the file contents are equal. The size shown is the `length` entry.
//!
//! # Determinism
//!
//! Every list is ordered deterministically: keyed sections (metadata, opsets, inputs/outputs,
//! initializers, node attributes) by key; nodes by graph order (added nodes by their index in `b`, removed
//! nodes by their index in `a`, changed nodes by their index in `b`). The same inputs give byte-identical
//! text and JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::type_proto::Value as TypeValue;
use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, SparseTensorProto, StringStringEntryProto,
    TensorProto, TypeProto, ValueInfoProto,
};

/// Metadata key holding the Replacement Learning plan (JSON); its value is never shown inline.
pub const PLAN_KEY: &str = "replacement_learning.plan";
/// Metadata values up to this many bytes are shown verbatim; longer ones as length and hash.
pub const INLINE_VALUE_MAX: usize = 64;
/// Number of hex digits of a SHA-256 shown in the text report (JSON carries the full hash).
const SHORT_HASH: usize = 8;
/// Lists (attribute values) longer than this are shown abbreviated, with a hash of the full list.
const LIST_PREVIEW: usize = 16;

// ---------------------------------------------------------------------------------------------------------
// Diff data model
// ---------------------------------------------------------------------------------------------------------

/// Added, removed and changed items of one keyed section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changes<A, C> {
    pub added: Vec<A>,
    pub removed: Vec<A>,
    pub changed: Vec<C>,
}

impl<A, C> Default for Changes<A, C> {
    fn default() -> Self {
        Self {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
        }
    }
}

impl<A, C> Changes<A, C> {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            added: self.added.len(),
            removed: self.removed.len(),
            changed: self.changed.len(),
        }
    }
}

/// Number of added, removed and changed items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl Counts {
    fn plus(self, other: Counts) -> Counts {
        Counts {
            added: self.added + other.added,
            removed: self.removed + other.removed,
            changed: self.changed + other.changed,
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} -{} ~{}", self.added, self.removed, self.changed)
    }
}

/// A scalar field that differs; `None` means absent on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl FieldChange {
    fn new(field: impl Into<String>, from: Option<String>, to: Option<String>) -> Self {
        Self {
            field: field.into(),
            from,
            to,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpsetChange {
    pub domain: String,
    pub from: i64,
    pub to: i64,
}

/// A metadata value: always its byte length and SHA-256, and the value itself when short and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueSummary {
    pub len: usize,
    pub sha256: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaEntry {
    pub key: String,
    pub value: ValueSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaChange {
    pub key: String,
    pub from: ValueSummary,
    pub to: ValueSummary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetadataDiff {
    pub model: Changes<MetaEntry, MetaChange>,
    pub graph: Changes<MetaEntry, MetaChange>,
}

impl MetadataDiff {
    pub fn is_empty(&self) -> bool {
        self.model.is_empty() && self.graph.is_empty()
    }
}

/// A graph input or output: its name and rendered type (`float32[N,3,32,32]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IoEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IoChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// The positional order of the names differs (full name lists of both sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderChange {
    pub from: Vec<String>,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IoDiff {
    pub added: Vec<IoEntry>,
    pub removed: Vec<IoEntry>,
    pub changed: Vec<IoChange>,
    pub order: Option<OrderChange>,
}

impl IoDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.order.is_none()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            added: self.added.len(),
            removed: self.removed.len(),
            changed: self.changed.len(),
        }
    }
}

/// Dtype, shape, content hash and payload size of a tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub dtype: String,
    pub dims: Vec<i64>,
    /// Full hex SHA-256 of the canonical data form (see the module documentation).
    pub sha256: String,
    /// Payload size in bytes; for external tensors the `length` entry, if any.
    pub bytes: Option<u64>,
    pub external: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorChange {
    pub name: String,
    pub from: TensorSummary,
    pub to: TensorSummary,
    /// Which aspects differ: any of `dtype`, `shape`, `content`, `location`.
    pub what: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    /// Position in its graph's node list.
    pub index: usize,
    pub name: String,
    pub domain: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Attribute name → compact rendering of its value.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    Name,
    Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeChange {
    pub a_index: usize,
    pub b_index: usize,
    /// Name on side `b` (or `a` if `b`'s is empty); may be empty.
    pub name: String,
    pub domain: String,
    pub op_type: String,
    pub matched_by: MatchKind,
    /// `name`, `domain`, `op_type`, `overload`, `input[i]`, `output[i]`, `attr NAME`.
    pub details: Vec<FieldChange>,
}

/// A model part compared only as a whole (count and hash of its encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherChange {
    pub field: String,
    pub from_count: usize,
    pub to_count: usize,
    pub from_sha256: String,
    pub to_sha256: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub nodes: Counts,
    pub initializers: Counts,
    pub inputs: Counts,
    pub outputs: Counts,
    /// Model and graph metadata together.
    pub metadata: Counts,
    pub opsets: Counts,
}

/// Semantic difference between two models, from `a` to `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDiff {
    /// Model header fields and the graph name.
    pub model: Vec<FieldChange>,
    pub opsets: Changes<Opset, OpsetChange>,
    pub metadata: MetadataDiff,
    pub inputs: IoDiff,
    pub outputs: IoDiff,
    pub initializers: Changes<TensorSummary, TensorChange>,
    pub nodes: Changes<NodeSummary, NodeChange>,
    /// Op → count in `b` minus count in `a`, nonzero entries only.
    pub histogram: BTreeMap<String, i64>,
    pub other: Vec<OtherChange>,
    pub summary: Summary,
}

impl ModelDiff {
    /// True when no difference was found.
    pub fn is_empty(&self) -> bool {
        self.model.is_empty()
            && self.opsets.is_empty()
            && self.metadata.is_empty()
            && self.inputs.is_empty()
            && self.outputs.is_empty()
            && self.initializers.is_empty()
            && self.nodes.is_empty()
            && self.histogram.is_empty()
            && self.other.is_empty()
    }

    /// The diff as JSON: the serialized sections plus `"equal": bool`. Object keys are sorted.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("equal".to_owned(), serde_json::Value::Bool(self.is_empty()));
        }
        value
    }
}

// ---------------------------------------------------------------------------------------------------------
// Diff computation
// ---------------------------------------------------------------------------------------------------------

/// Compares `a` (before) with `b` (after).
pub fn diff_models(a: &ModelProto, b: &ModelProto) -> ModelDiff {
    let empty = GraphProto::default();
    let ga = a.graph.as_ref().unwrap_or(&empty);
    let gb = b.graph.as_ref().unwrap_or(&empty);

    let model = diff_header(a, b, ga, gb);
    let opsets = diff_opsets(a, b);
    let metadata = MetadataDiff {
        model: diff_metadata(&a.metadata_props, &b.metadata_props),
        graph: diff_metadata(&ga.metadata_props, &gb.metadata_props),
    };
    let inputs = diff_io(&ga.input, &gb.input);
    let outputs = diff_io(&ga.output, &gb.output);
    let initializers = diff_initializers(&ga.initializer, &gb.initializer);
    let nodes = diff_nodes(&ga.node, &gb.node);
    let histogram = histogram_delta(&ga.node, &gb.node);

    let mut other = Vec::new();
    other_change(
        &mut other,
        "graph.value_info",
        &ga.value_info,
        &gb.value_info,
    );
    other_change(
        &mut other,
        "graph.sparse_initializer",
        &ga.sparse_initializer,
        &gb.sparse_initializer,
    );
    other_change(
        &mut other,
        "graph.quantization_annotation",
        &ga.quantization_annotation,
        &gb.quantization_annotation,
    );
    other_change(&mut other, "functions", &a.functions, &b.functions);
    other_change(
        &mut other,
        "training_info",
        &a.training_info,
        &b.training_info,
    );
    other_change(
        &mut other,
        "configuration",
        &a.configuration,
        &b.configuration,
    );

    let summary = Summary {
        nodes: nodes.counts(),
        initializers: initializers.counts(),
        inputs: inputs.counts(),
        outputs: outputs.counts(),
        metadata: metadata.model.counts().plus(metadata.graph.counts()),
        opsets: opsets.counts(),
    };

    ModelDiff {
        model,
        opsets,
        metadata,
        inputs,
        outputs,
        initializers,
        nodes,
        histogram,
        other,
        summary,
    }
}

fn diff_header(
    a: &ModelProto,
    b: &ModelProto,
    ga: &GraphProto,
    gb: &GraphProto,
) -> Vec<FieldChange> {
    let pairs = [
        (
            "ir_version",
            a.ir_version().to_string(),
            b.ir_version().to_string(),
        ),
        (
            "producer_name",
            quote(a.producer_name()),
            quote(b.producer_name()),
        ),
        (
            "producer_version",
            quote(a.producer_version()),
            quote(b.producer_version()),
        ),
        ("domain", quote(a.domain()), quote(b.domain())),
        (
            "model_version",
            a.model_version().to_string(),
            b.model_version().to_string(),
        ),
        ("graph.name", quote(ga.name()), quote(gb.name())),
    ];
    pairs
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(field, x, y)| FieldChange::new(field, Some(x), Some(y)))
        .collect()
}

fn diff_opsets(a: &ModelProto, b: &ModelProto) -> Changes<Opset, OpsetChange> {
    let map = |m: &ModelProto| -> BTreeMap<String, i64> {
        m.opset_import
            .iter()
            .map(|o| (o.domain().to_owned(), o.version()))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (domain, &va) in &ma {
        match mb.get(domain) {
            None => out.removed.push(Opset {
                domain: domain.clone(),
                version: va,
            }),
            Some(&vb) if vb != va => out.changed.push(OpsetChange {
                domain: domain.clone(),
                from: va,
                to: vb,
            }),
            Some(_) => {}
        }
    }
    for (domain, &vb) in &mb {
        if !ma.contains_key(domain) {
            out.added.push(Opset {
                domain: domain.clone(),
                version: vb,
            });
        }
    }
    out
}

fn summarize_value(key: &str, value: &str) -> ValueSummary {
    let shown =
        key != PLAN_KEY && value.len() <= INLINE_VALUE_MAX && !value.chars().any(char::is_control);
    ValueSummary {
        len: value.len(),
        sha256: sha256_hex(value.as_bytes()),
        value: shown.then(|| value.to_owned()),
    }
}

fn diff_metadata(
    a: &[StringStringEntryProto],
    b: &[StringStringEntryProto],
) -> Changes<MetaEntry, MetaChange> {
    let map = |props: &[StringStringEntryProto]| -> BTreeMap<String, String> {
        props
            .iter()
            .map(|p| (p.key().to_owned(), p.value().to_owned()))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (key, va) in &ma {
        match mb.get(key) {
            None => out.removed.push(MetaEntry {
                key: key.clone(),
                value: summarize_value(key, va),
            }),
            Some(vb) if vb != va => out.changed.push(MetaChange {
                key: key.clone(),
                from: summarize_value(key, va),
                to: summarize_value(key, vb),
            }),
            Some(_) => {}
        }
    }
    for (key, vb) in &mb {
        if !ma.contains_key(key) {
            out.added.push(MetaEntry {
                key: key.clone(),
                value: summarize_value(key, vb),
            });
        }
    }
    out
}

fn diff_io(a: &[ValueInfoProto], b: &[ValueInfoProto]) -> IoDiff {
    let map = |vis: &[ValueInfoProto]| -> BTreeMap<String, String> {
        vis.iter()
            .map(|v| (v.name().to_owned(), render_type_opt(v.r#type.as_ref())))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = IoDiff::default();
    for (name, ta) in &ma {
        match mb.get(name) {
            None => out.removed.push(IoEntry {
                name: name.clone(),
                ty: ta.clone(),
            }),
            Some(tb) if tb != ta => out.changed.push(IoChange {
                name: name.clone(),
                from: ta.clone(),
                to: tb.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, tb) in &mb {
        if !ma.contains_key(name) {
            out.added.push(IoEntry {
                name: name.clone(),
                ty: tb.clone(),
            });
        }
    }
    // Order: compare the relative order of the names present on both sides.
    let common_a: Vec<&str> = a
        .iter()
        .map(|v| v.name())
        .filter(|n| mb.contains_key(*n))
        .collect();
    let common_b: Vec<&str> = b
        .iter()
        .map(|v| v.name())
        .filter(|n| ma.contains_key(*n))
        .collect();
    if common_a != common_b {
        out.order = Some(OrderChange {
            from: a.iter().map(|v| v.name().to_owned()).collect(),
            to: b.iter().map(|v| v.name().to_owned()).collect(),
        });
    }
    out
}

fn diff_initializers(a: &[TensorProto], b: &[TensorProto]) -> Changes<TensorSummary, TensorChange> {
    let map = |ts: &[TensorProto]| -> BTreeMap<String, TensorSummary> {
        ts.iter()
            .map(|t| (t.name().to_owned(), summarize_tensor(t)))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (name, sa) in &ma {
        match mb.get(name) {
            None => out.removed.push(sa.clone()),
            Some(sb) => {
                let mut what = Vec::new();
                if sa.dtype != sb.dtype {
                    what.push("dtype".to_owned());
                }
                if sa.dims != sb.dims {
                    what.push("shape".to_owned());
                }
                if sa.external != sb.external {
                    what.push("location".to_owned());
                }
                if sa.sha256 != sb.sha256 {
                    what.push("content".to_owned());
                }
                if !what.is_empty() {
                    out.changed.push(TensorChange {
                        name: name.clone(),
                        from: sa.clone(),
                        to: sb.clone(),
                        what,
                    });
                }
            }
        }
    }
    for (name, sb) in &mb {
        if !ma.contains_key(name) {
            out.added.push(sb.clone());
        }
    }
    out
}

/// Matches nodes of `a` to nodes of `b`: by unique non-empty name first, then by position among the
/// unmatched nodes of the same op_type. Returns `(a_index, b_index, kind)` pairs.
fn match_nodes(a: &[NodeProto], b: &[NodeProto]) -> Vec<(usize, usize, MatchKind)> {
    fn unique_names(nodes: &[NodeProto]) -> HashMap<&str, usize> {
        let mut count: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if !n.name().is_empty() {
                count.entry(n.name()).or_insert((0, i)).0 += 1;
            }
        }
        count
            .into_iter()
            .filter(|(_, (c, _))| *c == 1)
            .map(|(name, (_, i))| (name, i))
            .collect()
    }
    let (ua, ub) = (unique_names(a), unique_names(b));
    let mut pairs = Vec::new();
    let mut matched_a = vec![false; a.len()];
    let mut matched_b = vec![false; b.len()];
    for (i, n) in a.iter().enumerate() {
        if ua.get(n.name()) != Some(&i) {
            continue;
        }
        if let Some(&j) = ub.get(n.name()) {
            pairs.push((i, j, MatchKind::Name));
            matched_a[i] = true;
            matched_b[j] = true;
        }
    }
    let mut queue_b: HashMap<&str, std::collections::VecDeque<usize>> = HashMap::new();
    for (j, n) in b.iter().enumerate() {
        if !matched_b[j] {
            queue_b.entry(n.op_type()).or_default().push_back(j);
        }
    }
    for (i, n) in a.iter().enumerate() {
        if matched_a[i] {
            continue;
        }
        if let Some(j) = queue_b.get_mut(n.op_type()).and_then(|q| q.pop_front()) {
            pairs.push((i, j, MatchKind::Position));
        }
    }
    pairs
}

fn diff_nodes(a: &[NodeProto], b: &[NodeProto]) -> Changes<NodeSummary, NodeChange> {
    let pairs = match_nodes(a, b);
    let mut matched_a = vec![false; a.len()];
    let mut matched_b = vec![false; b.len()];
    let mut out = Changes::default();
    for &(i, j, kind) in &pairs {
        matched_a[i] = true;
        matched_b[j] = true;
        let details = node_details(&a[i], &b[j]);
        if !details.is_empty() {
            let name = if b[j].name().is_empty() {
                a[i].name()
            } else {
                b[j].name()
            };
            out.changed.push(NodeChange {
                a_index: i,
                b_index: j,
                name: name.to_owned(),
                domain: b[j].domain().to_owned(),
                op_type: b[j].op_type().to_owned(),
                matched_by: kind,
                details,
            });
        }
    }
    out.changed.sort_by_key(|c| (c.b_index, c.a_index));
    out.removed = (0..a.len())
        .filter(|&i| !matched_a[i])
        .map(|i| summarize_node(i, &a[i]))
        .collect();
    out.added = (0..b.len())
        .filter(|&j| !matched_b[j])
        .map(|j| summarize_node(j, &b[j]))
        .collect();
    out
}

fn summarize_node(index: usize, n: &NodeProto) -> NodeSummary {
    NodeSummary {
        index,
        name: n.name().to_owned(),
        domain: n.domain().to_owned(),
        op_type: n.op_type().to_owned(),
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attributes: n
            .attribute
            .iter()
            .map(|at| (at.name().to_owned(), render_attr(at)))
            .collect(),
    }
}

fn node_details(a: &NodeProto, b: &NodeProto) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let scalar = |out: &mut Vec<FieldChange>, field: &str, x: &str, y: &str| {
        if x != y {
            out.push(FieldChange::new(field, Some(quote(x)), Some(quote(y))));
        }
    };
    scalar(&mut out, "name", a.name(), b.name());
    scalar(&mut out, "domain", a.domain(), b.domain());
    scalar(&mut out, "op_type", a.op_type(), b.op_type());
    scalar(&mut out, "overload", a.overload(), b.overload());
    positional(&mut out, "input", &a.input, &b.input);
    positional(&mut out, "output", &a.output, &b.output);

    let attrs = |n: &NodeProto| -> BTreeMap<String, AttributeProto> {
        n.attribute
            .iter()
            .map(|at| {
                let mut at = at.clone();
                at.doc_string = None;
                (at.name().to_owned(), at)
            })
            .collect()
    };
    let (ma, mb) = (attrs(a), attrs(b));
    let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    for name in names {
        let field = format!("attr {name}");
        match (ma.get(name), mb.get(name)) {
            (Some(x), None) => out.push(FieldChange::new(field, Some(render_attr(x)), None)),
            (None, Some(y)) => out.push(FieldChange::new(field, None, Some(render_attr(y)))),
            (Some(x), Some(y)) => {
                if x.encode_to_vec() != y.encode_to_vec() {
                    out.push(FieldChange::new(
                        field,
                        Some(render_attr(x)),
                        Some(render_attr(y)),
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn positional(out: &mut Vec<FieldChange>, what: &str, a: &[String], b: &[String]) {
    for k in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(FieldChange::new(
                format!("{what}[{k}]"),
                x.map(|s| quote(s)),
                y.map(|s| quote(s)),
            ));
        }
    }
}

fn op_key(n: &NodeProto) -> String {
    match n.domain() {
        "" | "ai.onnx" => n.op_type().to_owned(),
        d => format!("{d}::{}", n.op_type()),
    }
}

fn histogram_delta(a: &[NodeProto], b: &[NodeProto]) -> BTreeMap<String, i64> {
    let mut delta: BTreeMap<String, i64> = BTreeMap::new();
    for n in a {
        *delta.entry(op_key(n)).or_default() -= 1;
    }
    for n in b {
        *delta.entry(op_key(n)).or_default() += 1;
    }
    delta.retain(|_, d| *d != 0);
    delta
}

fn hash_messages<M: Message>(items: &[M]) -> String {
    let mut h = Sha256::new();
    for m in items {
        h.update(m.encode_length_delimited_to_vec());
    }
    hex(&h.finalize())
}

fn other_change<M: Message>(out: &mut Vec<OtherChange>, field: &str, a: &[M], b: &[M]) {
    if a.is_empty() && b.is_empty() {
        return;
    }
    let (ha, hb) = (hash_messages(a), hash_messages(b));
    if ha != hb {
        out.push(OtherChange {
            field: field.to_owned(),
            from_count: a.len(),
            to_count: b.len(),
            from_sha256: ha,
            to_sha256: hb,
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor hashing and rendering
// ---------------------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(SHORT_HASH)]
}

/// Feeds a hasher through a small buffer and counts the bytes.
struct HashWriter {
    hasher: Sha256,
    buf: Vec<u8>,
    len: u64,
}

impl HashWriter {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(1 << 14),
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        if bytes.len() >= self.buf.capacity() {
            self.hasher.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn finish(mut self) -> (String, u64) {
        self.hasher.update(&self.buf);
        (hex(&self.hasher.finalize()), self.len)
    }
}

/// Content hash (hex) and canonical byte size of a tensor's data; see the module documentation.
fn hash_tensor_data(t: &TensorProto) -> (String, Option<u64>) {
    if t.data_location == Some(DataLocation::External as i32) {
        let mut entries: Vec<(&str, &str)> = t
            .external_data
            .iter()
            .map(|e| (e.key(), e.value()))
            .collect();
        entries.sort_unstable();
        let mut w = HashWriter::new();
        w.put(b"onnx-external-data\0");
        for (k, v) in &entries {
            w.put(k.as_bytes());
            w.put(b"=");
            w.put(v.as_bytes());
            w.put(b"\n");
        }
        let length = entries
            .iter()
            .find(|(k, _)| *k == "length")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        return (w.finish().0, length);
    }
    let mut w = HashWriter::new();
    match &t.raw_data {
        Some(raw) if !raw.is_empty() => w.put(raw),
        _ => hash_typed_fields(&mut w, t),
    }
    let (hash, len) = w.finish();
    (hash, Some(len))
}

fn hash_typed_fields(w: &mut HashWriter, t: &TensorProto) {
    use DataType as D;
    match DataType::try_from(t.data_type()) {
        Ok(D::Float | D::Complex64) => t.float_data.iter().for_each(|v| w.put(&v.to_le_bytes())),
        Ok(D::Double | D::Complex128) => t.double_data.iter().for_each(|v| w.put(&v.to_le_bytes())),
        Ok(D::Int64) => t.int64_data.iter().for_each(|v| w.put(&v.to_le_bytes())),
        Ok(D::Uint64) => t.uint64_data.iter().for_each(|v| w.put(&v.to_le_bytes())),
        Ok(D::Uint32) => t
            .uint64_data
            .iter()
            .for_each(|&v| w.put(&(v as u32).to_le_bytes())),
        Ok(D::Int32) => t.int32_data.iter().for_each(|v| w.put(&v.to_le_bytes())),
        Ok(D::Int16 | D::Uint16 | D::Float16 | D::Bfloat16) => t
            .int32_data
            .iter()
            .for_each(|&v| w.put(&(v as u16).to_le_bytes())),
        Ok(
            D::Int8
            | D::Uint8
            | D::Bool
            | D::Float8e4m3fn
            | D::Float8e4m3fnuz
            | D::Float8e5m2
            | D::Float8e5m2fnuz
            | D::Float8e8m0
            | D::Uint4
            | D::Int4
            | D::Float4e2m1
            | D::Uint2
            | D::Int2,
        ) => t.int32_data.iter().for_each(|&v| w.put(&[v as u8])),
        Ok(D::String) => {
            for s in &t.string_data {
                w.put(&(s.len() as u64).to_le_bytes());
                w.put(s);
            }
        }
        Ok(D::Undefined) | Err(_) => {
            // Unknown dtype: hash every typed field, tagged, so that any difference shows.
            w.put(b"f");
            t.float_data.iter().for_each(|v| w.put(&v.to_le_bytes()));
            w.put(b"i");
            t.int32_data.iter().for_each(|v| w.put(&v.to_le_bytes()));
            w.put(b"s");
            for s in &t.string_data {
                w.put(&(s.len() as u64).to_le_bytes());
                w.put(s);
            }
            w.put(b"l");
            t.int64_data.iter().for_each(|v| w.put(&v.to_le_bytes()));
            w.put(b"d");
            t.double_data.iter().for_each(|v| w.put(&v.to_le_bytes()));
            w.put(b"u");
            t.uint64_data.iter().for_each(|v| w.put(&v.to_le_bytes()));
        }
    }
}

fn summarize_tensor(t: &TensorProto) -> TensorSummary {
    let (sha256, bytes) = hash_tensor_data(t);
    TensorSummary {
        name: t.name().to_owned(),
        dtype: dtype_name(t.data_type()),
        dims: t.dims.clone(),
        sha256,
        bytes,
        external: t.data_location == Some(DataLocation::External as i32),
    }
}

/// Short dtype name (`float32`, `int64`, `bfloat16`, ...); unknown codes as `dtype(N)`.
pub fn dtype_name(code: i32) -> String {
    crate::tensor::dtype_name(code).map_or_else(|| format!("dtype({code})"), str::to_owned)
}

fn render_dims(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// `1.2 KiB` style size.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl TensorSummary {
    /// `float32[16,3,3,3] sha256:abcd1234 (1.7 KiB)`, without the name.
    fn body(&self) -> String {
        let size = match (self.external, self.bytes) {
            (false, Some(n)) => human_bytes(n),
            (false, None) => "? B".to_owned(),
            (true, Some(n)) => format!("external, {}", human_bytes(n)),
            (true, None) => "external".to_owned(),
        };
        format!(
            "{}{} sha256:{} ({size})",
            self.dtype,
            render_dims(&self.dims),
            short(&self.sha256)
        )
    }
}

fn render_shape_dim(d: &crate::onnx::tensor_shape_proto::Dimension) -> String {
    match &d.value {
        Some(DimValue::DimValue(v)) => v.to_string(),
        Some(DimValue::DimParam(p)) if !p.is_empty() => p.clone(),
        _ => "?".to_owned(),
    }
}

fn render_tensor_type(elem: i32, shape: Option<&crate::onnx::TensorShapeProto>) -> String {
    match shape {
        Some(s) => {
            let dims: Vec<String> = s.dim.iter().map(render_shape_dim).collect();
            format!("{}[{}]", dtype_name(elem), dims.join(","))
        }
        None => format!("{}[*]", dtype_name(elem)),
    }
}

fn render_type_opt(t: Option<&TypeProto>) -> String {
    t.map(render_type).unwrap_or_else(|| "?".to_owned())
}

/// `float32[N,3,32,32]` for tensors (`[*]`: unranked, `?`: unknown dim); `seq(..)`, `map(..)`, ...
fn render_type(t: &TypeProto) -> String {
    match &t.value {
        Some(TypeValue::TensorType(tt)) => render_tensor_type(tt.elem_type(), tt.shape.as_ref()),
        Some(TypeValue::SparseTensorType(st)) => {
            format!(
                "sparse {}",
                render_tensor_type(st.elem_type(), st.shape.as_ref())
            )
        }
        Some(TypeValue::SequenceType(s)) => {
            format!("seq({})", render_type_opt(s.elem_type.as_deref()))
        }
        Some(TypeValue::OptionalType(o)) => {
            format!("optional({})", render_type_opt(o.elem_type.as_deref()))
        }
        Some(TypeValue::MapType(m)) => format!(
            "map({},{})",
            dtype_name(m.key_type()),
            render_type_opt(m.value_type.as_deref())
        ),
        Some(TypeValue::OpaqueType(o)) => format!("opaque({}.{})", o.domain(), o.name()),
        None => "?".to_owned(),
    }
}

fn render_tensor_value(t: &TensorProto) -> String {
    let s = summarize_tensor(t);
    format!(
        "tensor {}{} sha256:{}",
        s.dtype,
        render_dims(&s.dims),
        short(&s.sha256)
    )
}

fn render_sparse(s: &SparseTensorProto) -> String {
    let dtype = s
        .values
        .as_ref()
        .map(|v| dtype_name(v.data_type()))
        .unwrap_or_else(|| "?".to_owned());
    let nnz = s
        .values
        .as_ref()
        .and_then(|v| v.dims.first().copied())
        .unwrap_or(0);
    format!(
        "sparse {dtype}{} nnz={nnz} sha256:{}",
        render_dims(&s.dims),
        short(&sha256_hex(&s.encode_to_vec()))
    )
}

fn render_graph(g: &GraphProto) -> String {
    format!(
        "<graph {} nodes sha256:{}>",
        g.node.len(),
        short(&sha256_hex(&g.encode_to_vec()))
    )
}

fn render_f32(v: f32) -> String {
    format!("{v:?}")
}

fn render_str(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.len() <= INLINE_VALUE_MAX => format!("{s:?}"),
        _ => format!(
            "<string {} B sha256:{}>",
            bytes.len(),
            short(&sha256_hex(bytes))
        ),
    }
}

fn render_list(items: Vec<String>) -> String {
    if items.len() <= LIST_PREVIEW {
        return format!("[{}]", items.join(","));
    }
    let hash = sha256_hex(items.join(",").as_bytes());
    format!(
        "[{},... +{} more; {} items sha256:{}]",
        items[..LIST_PREVIEW / 2].join(","),
        items.len() - LIST_PREVIEW / 2,
        items.len(),
        short(&hash)
    )
}

fn infer_attr_type(a: &AttributeProto) -> AttributeType {
    use AttributeType as T;
    if a.g.is_some() {
        T::Graph
    } else if a.t.is_some() {
        T::Tensor
    } else if a.sparse_tensor.is_some() {
        T::SparseTensor
    } else if a.tp.is_some() {
        T::TypeProto
    } else if a.s.is_some() {
        T::String
    } else if a.i.is_some() {
        T::Int
    } else if a.f.is_some() {
        T::Float
    } else if !a.floats.is_empty() {
        T::Floats
    } else if !a.ints.is_empty() {
        T::Ints
    } else if !a.strings.is_empty() {
        T::Strings
    } else if !a.tensors.is_empty() {
        T::Tensors
    } else if !a.graphs.is_empty() {
        T::Graphs
    } else if !a.sparse_tensors.is_empty() {
        T::SparseTensors
    } else if !a.type_protos.is_empty() {
        T::TypeProtos
    } else {
        T::Undefined
    }
}

/// Compact rendering of an attribute value: `1.0`, `[1,1]`, `"NOTSET"`, `tensor float32[3] sha256:..`,
/// `<graph 4 nodes sha256:..>`, `@ref` for a function attribute reference.
fn render_attr(a: &AttributeProto) -> String {
    use AttributeType as T;
    if let Some(r) = a.ref_attr_name.as_deref().filter(|r| !r.is_empty()) {
        return format!("@{r}");
    }
    let ty = a
        .r#type
        .and_then(|t| AttributeType::try_from(t).ok())
        .filter(|t| *t != T::Undefined)
        .unwrap_or_else(|| infer_attr_type(a));
    match ty {
        T::Float => render_f32(a.f()),
        T::Int => a.i().to_string(),
        T::String => render_str(a.s()),
        T::Tensor => {
            a.t.as_ref()
                .map_or_else(|| "<tensor ?>".to_owned(), render_tensor_value)
        }
        T::Graph => {
            a.g.as_deref()
                .map_or_else(|| "<graph ?>".to_owned(), render_graph)
        }
        T::SparseTensor => a
            .sparse_tensor
            .as_ref()
            .map_or_else(|| "<sparse ?>".to_owned(), render_sparse),
        T::TypeProto => render_type_opt(a.tp.as_ref()),
        T::Floats => render_list(a.floats.iter().map(|&v| render_f32(v)).collect()),
        T::Ints => render_list(a.ints.iter().map(i64::to_string).collect()),
        T::Strings => render_list(a.strings.iter().map(|s| render_str(s)).collect()),
        T::Tensors => render_list(a.tensors.iter().map(render_tensor_value).collect()),
        T::Graphs => render_list(a.graphs.iter().map(render_graph).collect()),
        T::SparseTensors => render_list(a.sparse_tensors.iter().map(render_sparse).collect()),
        T::TypeProtos => render_list(a.type_protos.iter().map(render_type).collect()),
        T::Undefined => "<undefined>".to_owned(),
    }
}

/// Names as-is, the empty string as `""`.
fn quote(s: &str) -> String {
    if s.is_empty() {
        "\"\"".to_owned()
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Text report
// ---------------------------------------------------------------------------------------------------------

fn domain_label(domain: &str) -> &str {
    if domain.is_empty() {
        "ai.onnx"
    } else {
        domain
    }
}

fn render_value_summary(v: &ValueSummary) -> String {
    match &v.value {
        Some(s) => format!("{s:?}"),
        None => format!("({} bytes, sha256:{})", v.len, short(&v.sha256)),
    }
}

fn node_op(domain: &str, op_type: &str) -> String {
    match domain {
        "" | "ai.onnx" => op_type.to_owned(),
        d => format!("{d}::{op_type}"),
    }
}

fn node_ident(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("#{index}")
    } else {
        name.to_owned()
    }
}

fn node_line(n: &NodeSummary) -> String {
    let inputs: Vec<String> = n.inputs.iter().map(|s| quote(s)).collect();
    let outputs: Vec<String> = n.outputs.iter().map(|s| quote(s)).collect();
    let mut line = format!(
        "{} {} ({}) -> ({})",
        node_op(&n.domain, &n.op_type),
        node_ident(&n.name, n.index),
        inputs.join(", "),
        outputs.join(", ")
    );
    if !n.attributes.is_empty() {
        let attrs: Vec<String> = n
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(line, " {{{}}}", attrs.join(", "));
    }
    line
}

fn opt_or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

fn section(f: &mut fmt::Formatter<'_>, title: &str, lines: &[String]) -> fmt::Result {
    if lines.is_empty() {
        writeln!(f, "{title}: unchanged")
    } else {
        writeln!(f, "{title}:")?;
        lines.iter().try_for_each(|l| writeln!(f, "  {l}"))
    }
}

fn metadata_lines(c: &Changes<MetaEntry, MetaChange>) -> Vec<String> {
    let entry = |e: &MetaEntry| match &e.value.value {
        Some(_) => format!("{}: {}", e.key, render_value_summary(&e.value)),
        None => format!("{} {}", e.key, render_value_summary(&e.value)),
    };
    let mut lines = Vec::new();
    lines.extend(c.added.iter().map(|e| format!("+ {}", entry(e))));
    lines.extend(c.removed.iter().map(|e| format!("- {}", entry(e))));
    lines.extend(c.changed.iter().map(|ch| {
        format!(
            "~ {}: {} -> {}",
            ch.key,
            render_value_summary(&ch.from),
            render_value_summary(&ch.to)
        )
    }));
    lines
}

fn io_lines(d: &IoDiff) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(d.added.iter().map(|e| format!("+ {}: {}", e.name, e.ty)));
    lines.extend(d.removed.iter().map(|e| format!("- {}: {}", e.name, e.ty)));
    lines.extend(
        d.changed
            .iter()
            .map(|c| format!("~ {}: {} -> {}", c.name, c.from, c.to)),
    );
    if let Some(o) = &d.order {
        lines.push(format!(
            "order: [{}] -> [{}]",
            o.from.join(", "),
            o.to.join(", ")
        ));
    }
    lines
}

impl fmt::Display for ModelDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}",
            if self.is_empty() {
                "models are equal"
            } else {
                "models differ"
            }
        )?;

        let model: Vec<String> = self
            .model
            .iter()
            .map(|c| {
                format!(
                    "~ {}: {} -> {}",
                    c.field,
                    opt_or_none(&c.from),
                    opt_or_none(&c.to)
                )
            })
            .collect();
        section(f, "model", &model)?;

        let mut opsets = Vec::new();
        opsets.extend(
            self.opsets
                .added
                .iter()
                .map(|o| format!("+ {} {}", domain_label(&o.domain), o.version)),
        );
        opsets.extend(
            self.opsets
                .removed
                .iter()
                .map(|o| format!("- {} {}", domain_label(&o.domain), o.version)),
        );
        opsets.extend(
            self.opsets
                .changed
                .iter()
                .map(|o| format!("~ {} {} -> {}", domain_label(&o.domain), o.from, o.to)),
        );
        section(f, "opsets", &opsets)?;

        section(f, "metadata", &metadata_lines(&self.metadata.model))?;
        section(f, "graph metadata", &metadata_lines(&self.metadata.graph))?;
        section(f, "inputs", &io_lines(&self.inputs))?;
        section(f, "outputs", &io_lines(&self.outputs))?;

        let mut inits = Vec::new();
        let init = &self.initializers;
        inits.extend(
            init.added
                .iter()
                .map(|t| format!("+ {}: {}", t.name, t.body())),
        );
        inits.extend(
            init.removed
                .iter()
                .map(|t| format!("- {}: {}", t.name, t.body())),
        );
        inits.extend(init.changed.iter().map(|c| {
            format!(
                "~ {}: {} -> {} [{}]",
                c.name,
                c.from.body(),
                c.to.body(),
                c.what.join(", ")
            )
        }));
        section(f, "initializers", &inits)?;

        let mut nodes = Vec::new();
        nodes.extend(
            self.nodes
                .added
                .iter()
                .map(|n| format!("+ {}", node_line(n))),
        );
        nodes.extend(
            self.nodes
                .removed
                .iter()
                .map(|n| format!("- {}", node_line(n))),
        );
        for c in &self.nodes.changed {
            let by = match c.matched_by {
                MatchKind::Name => "",
                MatchKind::Position => " (matched by position)",
            };
            nodes.push(format!(
                "~ {} {}{by}",
                node_op(&c.domain, &c.op_type),
                node_ident(&c.name, c.b_index)
            ));
            nodes.extend(c.details.iter().map(|d| {
                format!(
                    "  {}: {} -> {}",
                    d.field,
                    opt_or_none(&d.from),
                    opt_or_none(&d.to)
                )
            }));
        }
        section(f, "nodes", &nodes)?;

        let other: Vec<String> = self
            .other
            .iter()
            .map(|o| {
                format!(
                    "~ {}: {} entries sha256:{} -> {} entries sha256:{}",
                    o.field,
                    o.from_count,
                    short(&o.from_sha256),
                    o.to_count,
                    short(&o.to_sha256)
                )
            })
            .collect();
        section(f, "other", &other)?;

        if self.histogram.is_empty() {
            writeln!(f, "op histogram: unchanged")?;
        } else {
            let items: Vec<String> = self
                .histogram
                .iter()
                .map(|(op, d)| format!("{op} {d:+}"))
                .collect();
            writeln!(f, "op histogram: {}", items.join(", "))?;
        }

        let s = &self.summary;
        writeln!(
            f,
            "summary: nodes {}; initializers {}; inputs {}; outputs {}; metadata {}; opsets {}",
            s.nodes, s.initializers, s.inputs, s.outputs, s.metadata, s.opsets
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor_shape_proto::Dimension;
    use crate::onnx::{type_proto, OperatorSetIdProto, TensorShapeProto};

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: (!name.is_empty()).then(|| name.to_owned()),
            op_type: Some(op.to_owned()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn float_attr(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_owned()),
            f: Some(v),
            r#type: Some(AttributeType::Float as i32),
            ..Default::default()
        }
    }

    fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_owned()),
            ints: v.to_vec(),
            r#type: Some(AttributeType::Ints as i32),
            ..Default::default()
        }
    }

    fn tensor_f32(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.to_owned()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            float_data: vals.to_vec(),
            ..Default::default()
        }
    }

    fn tensor_f32_raw(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorProto {
            name: Some(name.to_owned()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw.into()),
            ..Default::default()
        }
    }

    fn value_info(name: &str, dims: &[&str]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(v) => DimValue::DimValue(v),
                    Err(_) => DimValue::DimParam(d.to_string()),
                }),
                denotation: None,
            })
            .collect();
        ValueInfoProto {
            name: Some(name.to_owned()),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                denotation: None,
            }),
            ..Default::default()
        }
    }

    /// x -> Conv(w) -> Relu -> Add(bias) -> y
    fn base_model() -> ModelProto {
        let mut conv = node("conv1", "Conv", &["x", "w"], &["c"]);
        conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
        let mut leaky = node("leaky", "LeakyRelu", &["c"], &["r"]);
        leaky.attribute.push(float_attr("alpha", 1.0));
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("pytorch".to_owned()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(GraphProto {
                name: Some("main".to_owned()),
                node: vec![conv, leaky, node("add", "Add", &["r", "bias"], &["y"])],
                initializer: vec![
                    tensor_f32("w", &[2, 3, 1, 1], &[0.5; 6]),
                    tensor_f32("bias", &[2, 1, 1], &[0.0, 1.0]),
                ],
                input: vec![value_info("x", &["N", "3", "32", "32"])],
                output: vec![value_info("y", &["N", "2", "32", "32"])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
        m.graph.as_mut().unwrap()
    }

    #[test]
    fn identical_models_are_equal() {
        let a = base_model();
        let d = diff_models(&a, &a.clone());
        assert!(d.is_empty());
        let text = d.to_string();
        assert!(text.starts_with("models are equal\n"), "{text}");
        assert!(text.contains("nodes: unchanged"));
        assert!(text.contains("op histogram: unchanged"));
        assert_eq!(d.to_json()["equal"], serde_json::Value::Bool(true));
        assert_eq!(d.summary, Summary::default());
    }

    #[test]
    fn renamed_node_is_matched_by_position() {
        let a = base_model();
        let mut b = a.clone();
        graph_mut(&mut b).node[0].name = Some("conv1_renamed".to_owned());
        let d = diff_models(&a, &b);
        assert!(d.nodes.added.is_empty() && d.nodes.removed.is_empty());
        assert_eq!(d.nodes.changed.len(), 1);
        let c = &d.nodes.changed[0];
        assert_eq!(c.matched_by, MatchKind::Position);
        assert_eq!(
            c.details,
            vec![FieldChange::new(
                "name",
                Some("conv1".to_owned()),
                Some("conv1_renamed".to_owned())
            )]
        );
        let text = d.to_string();
        assert!(
            text.contains("~ Conv conv1_renamed (matched by position)\n"),
            "{text}"
        );
        assert!(
            text.contains("    name: conv1 -> conv1_renamed\n"),
            "{text}"
        );
    }

    #[test]
    fn added_removed_and_changed_nodes() {
        let a = base_model();
        let mut b = a.clone();
        let g = graph_mut(&mut b);
        // Changed: the Conv's weight input and the LeakyRelu's alpha.
        g.node[0].input[1] = "w2".to_owned();
        g.node[1].attribute[0] = float_attr("alpha", 2.0);
        // Removed: the Add; added: a Mul and a Sub.
        g.node.remove(2);
        g.node.push(node("rl.mul_a", "Mul", &["r", "rl.a"], &["m"]));
        g.node.push(node("rl.sub", "Sub", &["m", "bias"], &["y"]));
        let d = diff_models(&a, &b);

        let added: Vec<&str> = d.nodes.added.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(added, ["rl.mul_a", "rl.sub"]);
        let removed: Vec<&str> = d.nodes.removed.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(removed, ["add"]);
        assert_eq!(d.nodes.changed.len(), 2);
        assert!(d
            .nodes
            .changed
            .iter()
            .all(|c| c.matched_by == MatchKind::Name));

        let text = d.to_string();
        assert!(
            text.contains("  + Mul rl.mul_a (r, rl.a) -> (m)\n"),
            "{text}"
        );
        assert!(text.contains("  - Add add (r, bias) -> (y)\n"), "{text}");
        assert!(
            text.contains("  ~ Conv conv1\n    input[1]: w -> w2\n"),
            "{text}"
        );
        assert!(
            text.contains("  ~ LeakyRelu leaky\n    attr alpha: 1.0 -> 2.0\n"),
            "{text}"
        );
        assert!(
            text.contains("op histogram: Add -1, Mul +1, Sub +1\n"),
            "{text}"
        );
        assert!(text.contains("summary: nodes +2 -1 ~2;"), "{text}");

        let json = d.to_json();
        assert_eq!(json["equal"], false);
        assert_eq!(json["histogram"]["Mul"], 1);
        assert_eq!(
            json["nodes"]["changed"][0]["details"][0]["field"],
            "input[1]"
        );
    }

    #[test]
    fn op_type_and_extra_inputs_of_named_node() {
        let a = base_model();
        let mut b = a.clone();
        let n = &mut graph_mut(&mut b).node[2];
        n.op_type = Some("Sum".to_owned());
        n.input.push("extra".to_owned());
        n.domain = Some("com.example".to_owned());
        let d = diff_models(&a, &b);
        assert_eq!(d.nodes.changed.len(), 1);
        let fields: Vec<&str> = d.nodes.changed[0]
            .details
            .iter()
            .map(|c| c.field.as_str())
            .collect();
        assert_eq!(fields, ["domain", "op_type", "input[2]"]);
        let text = d.to_string();
        assert!(text.contains("~ com.example::Sum add\n"), "{text}");
        assert!(text.contains("    domain: \"\" -> com.example\n"), "{text}");
        assert!(text.contains("    input[2]: (none) -> extra\n"), "{text}");
    }

    #[test]
    fn initializer_content_change_is_detected_by_hash() {
        let a = base_model();
        let mut b = a.clone();
        graph_mut(&mut b).initializer[0] =
            tensor_f32("w", &[2, 3, 1, 1], &[0.5, 0.5, 0.5, 0.5, 0.5, 0.25]);
        let d = diff_models(&a, &b);
        assert_eq!(d.initializers.changed.len(), 1);
        let c = &d.initializers.changed[0];
        assert_eq!(c.what, ["content"]);
        assert_ne!(c.from.sha256, c.to.sha256);
        assert_eq!(c.from.bytes, Some(24));
        let text = d.to_string();
        assert!(
            text.contains(&format!(
                "  ~ w: float32[2,3,1,1] sha256:{} (24 B) -> float32[2,3,1,1] sha256:{} (24 B) [content]\n",
                &c.from.sha256[..8],
                &c.to.sha256[..8]
            )),
            "{text}"
        );

        // Same values stored in raw_data instead of float_data: same canonical content.
        let mut c2 = a.clone();
        graph_mut(&mut c2).initializer[0] = tensor_f32_raw("w", &[2, 3, 1, 1], &[0.5; 6]);
        assert!(diff_models(&a, &c2).is_empty());

        // Reshape only.
        let mut r = a.clone();
        graph_mut(&mut r).initializer[0].dims = vec![6];
        assert_eq!(diff_models(&a, &r).initializers.changed[0].what, ["shape"]);
    }

    #[test]
    fn initializers_added_and_removed() {
        let a = base_model();
        let mut b = a.clone();
        let g = graph_mut(&mut b);
        g.initializer.remove(0);
        g.initializer.push(tensor_f32("rl.a", &[], &[1.0]));
        let d = diff_models(&a, &b);
        assert_eq!(
            d.summary.initializers,
            Counts {
                added: 1,
                removed: 1,
                changed: 0
            }
        );
        let text = d.to_string();
        let h = sha256_hex(&1.0f32.to_le_bytes());
        assert!(
            text.contains(&format!("  + rl.a: float32[] sha256:{} (4 B)\n", &h[..8])),
            "{text}"
        );
        assert!(text.contains("  - w: float32[2,3,1,1] sha256:"), "{text}");
    }

    #[test]
    fn external_tensors_hash_their_location() {
        let ext = |offset: &str| TensorProto {
            name: Some("big".to_owned()),
            dims: vec![1024],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                StringStringEntryProto::new("location", "weights.bin"),
                StringStringEntryProto::new("offset", offset),
                StringStringEntryProto::new("length", "4096"),
            ],
            ..Default::default()
        };
        let (h0, len) = hash_tensor_data(&ext("0"));
        assert_eq!(len, Some(4096));
        assert_eq!(h0, hash_tensor_data(&ext("0")).0);
        assert_ne!(h0, hash_tensor_data(&ext("4096")).0);
        assert_eq!(
            summarize_tensor(&ext("0")).body(),
            format!("float32[1024] sha256:{} (external, 4.0 KiB)", &h0[..8])
        );
    }

    #[test]
    fn diff_is_deterministic() {
        let a = base_model();
        let mut b = a.clone();
        let g = graph_mut(&mut b);
        g.node.push(node("", "Mul", &["y", "s"], &["z"]));
        g.node.push(node("", "Mul", &["z", "s"], &["z2"]));
        g.initializer.push(tensor_f32("s", &[1], &[2.0]));
        g.initializer.push(tensor_f32("t", &[1], &[3.0]));
        b.metadata_props
            .push(StringStringEntryProto::new("k2", "v"));
        b.metadata_props
            .push(StringStringEntryProto::new("k1", "v"));
        let d1 = diff_models(&a, &b);
        let d2 = diff_models(&a, &b);
        assert_eq!(d1, d2);
        assert_eq!(d1.to_string(), d2.to_string());
        assert_eq!(d1.to_json().to_string(), d2.to_json().to_string());
        let keys: Vec<&str> = d1
            .metadata
            .model
            .added
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
    }

    #[test]
    fn unnamed_nodes_match_by_position_within_op_type() {
        let mut a = base_model();
        graph_mut(&mut a).node = vec![
            node("", "Relu", &["x"], &["r0"]),
            node("", "Add", &["r0", "x"], &["a0"]),
            node("", "Relu", &["a0"], &["r1"]),
        ];
        let mut b = a.clone();
        let g = graph_mut(&mut b);
        g.node[2].input[0] = "r0".to_owned(); // second Relu changed
        g.node.insert(0, node("", "Mul", &["x", "x"], &["sq"])); // shifts all positions
        g.node.push(node("", "Relu", &["r1"], &["r2"])); // third Relu added
        let d = diff_models(&a, &b);
        assert_eq!(d.nodes.changed.len(), 1);
        let c = &d.nodes.changed[0];
        assert_eq!(
            (c.a_index, c.b_index, c.matched_by),
            (2, 3, MatchKind::Position)
        );
        assert_eq!(
            c.details,
            vec![FieldChange::new(
                "input[0]",
                Some("a0".into()),
                Some("r0".into())
            )]
        );
        let added: Vec<(usize, &str)> = d
            .nodes
            .added
            .iter()
            .map(|n| (n.index, n.op_type.as_str()))
            .collect();
        assert_eq!(added, [(0, "Mul"), (4, "Relu")]);
        assert!(d.nodes.removed.is_empty());
        let text = d.to_string();
        assert!(text.contains("  + Relu #4 (r1) -> (r2)\n"), "{text}");
        assert!(
            text.contains("  ~ Relu #3 (matched by position)\n    input[0]: a0 -> r0\n"),
            "{text}"
        );
    }

    #[test]
    fn metadata_key_added_and_plan_hidden() {
        let a = base_model();
        let mut b = a.clone();
        let plan = format!("{{\"layers\":[{}]}}", "\"layer1.0.conv1\",".repeat(20));
        b.metadata_props
            .push(StringStringEntryProto::new(PLAN_KEY, plan.clone()));
        b.metadata_props
            .push(StringStringEntryProto::new("short", "yes"));
        graph_mut(&mut b)
            .metadata_props
            .push(StringStringEntryProto::new("g", "1"));
        let d = diff_models(&a, &b);
        assert_eq!(d.metadata.model.added.len(), 2);
        assert_eq!(
            d.summary.metadata,
            Counts {
                added: 3,
                removed: 0,
                changed: 0
            }
        );
        let text = d.to_string();
        let h = sha256_hex(plan.as_bytes());
        assert!(
            text.contains(&format!(
                "  + {PLAN_KEY} ({} bytes, sha256:{})\n",
                plan.len(),
                &h[..8]
            )),
            "{text}"
        );
        assert!(!text.contains("layer1.0.conv1"));
        assert!(text.contains("  + short: \"yes\"\n"), "{text}");
        assert!(text.contains("graph metadata:\n  + g: \"1\"\n"), "{text}");
        assert_eq!(
            d.to_json()["metadata"]["model"]["added"][0]["value"]["value"],
            serde_json::Value::Null
        );

        // A changed plan shows lengths and hashes only.
        let mut c = b.clone();
        c.metadata_props[0] = StringStringEntryProto::new(PLAN_KEY, "{}");
        let text = diff_models(&b, &c).to_string();
        assert!(
            text.contains(&format!("  ~ {PLAN_KEY}: ({} bytes, sha256:", plan.len())),
            "{text}"
        );
    }

    #[test]
    fn header_opsets_and_io() {
        let a = base_model();
        let mut b = a.clone();
        b.ir_version = Some(9);
        b.producer_name = Some("rl-rewrite".to_owned());
        b.opset_import[0].version = Some(18);
        b.opset_import.push(OperatorSetIdProto {
            domain: Some("com.microsoft".to_owned()),
            version: Some(1),
        });
        let g = graph_mut(&mut b);
        g.input[0] = value_info("x", &["N", "3", "64", "64"]);
        g.output.push(value_info("aux", &["N"]));
        let d = diff_models(&a, &b);
        let text = d.to_string();
        assert!(
            text.contains(
                "model:\n  ~ ir_version: 8 -> 9\n  ~ producer_name: pytorch -> rl-rewrite\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("opsets:\n  + com.microsoft 1\n  ~ ai.onnx 17 -> 18\n"),
            "{text}"
        );
        assert!(
            text.contains("inputs:\n  ~ x: float32[N,3,32,32] -> float32[N,3,64,64]\n"),
            "{text}"
        );
        assert!(text.contains("outputs:\n  + aux: float32[N]\n"), "{text}");
        assert!(d.outputs.order.is_none());
    }

    #[test]
    fn attribute_rendering() {
        let g = GraphProto {
            node: vec![node("", "Relu", &["a"], &["b"])],
            ..Default::default()
        };
        let at = AttributeProto {
            name: Some("body".to_owned()),
            g: Some(Box::new(g)),
            ..Default::default()
        };
        assert!(render_attr(&at).starts_with("<graph 1 nodes sha256:"));
        let long = ints_attr("big", &(0..40).collect::<Vec<_>>());
        assert!(render_attr(&long).starts_with("[0,1,2,3,4,5,6,7,... +32 more; 40 items sha256:"));
        let s = AttributeProto {
            name: Some("mode".to_owned()),
            s: Some(b"NOTSET".to_vec()),
            ..Default::default()
        };
        assert_eq!(render_attr(&s), "\"NOTSET\"");
        assert_eq!(human_bytes(1234), "1.2 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn full_report_golden() {
        let a = base_model();
        let mut b = a.clone();
        b.producer_name = Some("rl-rewrite".to_owned());
        let plan = format!("{{\"layers\":[{}]}}", "\"layer1.0.conv1\",".repeat(20));
        b.metadata_props
            .push(StringStringEntryProto::new(PLAN_KEY, plan));
        let g = graph_mut(&mut b);
        g.initializer.remove(0);
        g.initializer.push(tensor_f32("rl.layer1.a", &[], &[1.0]));
        g.initializer
            .push(tensor_f32("bias", &[2, 1, 1], &[0.0, 2.0]));
        g.initializer.remove(0);
        g.node[0].input[1] = "rl.w".to_owned();
        g.node[1].attribute[0] = float_attr("alpha", 0.01);
        let mut mul = node(
            "rl.conv1.weight.mul_a",
            "Mul",
            &["rl.layer1.a", "w0"],
            &["rl.w"],
        );
        mul.attribute.push(ints_attr("dummy", &[1, 2]));
        g.node.insert(0, mul);
        g.node.push(node("", "Identity", &["y"], &["y2"]));
        let d = diff_models(&a, &b);
        assert_eq!(d.to_string(), GOLDEN);
        assert_eq!(d.to_json()["summary"]["initializers"]["changed"], 1);
    }

    const GOLDEN: &str = "\
models differ
model:
  ~ producer_name: pytorch -> rl-rewrite
opsets: unchanged
metadata:
  + replacement_learning.plan (353 bytes, sha256:a76a3a8f)
graph metadata: unchanged
inputs: unchanged
outputs: unchanged
initializers:
  + rl.layer1.a: float32[] sha256:e00e5eb9 (4 B)
  - w: float32[2,3,1,1] sha256:9ba54d57 (24 B)
  ~ bias: float32[2,1,1] sha256:22b6f43b (8 B) -> float32[2,1,1] sha256:3f710ac0 (8 B) [content]
nodes:
  + Mul rl.conv1.weight.mul_a (rl.layer1.a, w0) -> (rl.w) {dummy=[1,2]}
  + Identity #4 (y) -> (y2)
  ~ Conv conv1
    input[1]: w -> rl.w
  ~ LeakyRelu leaky
    attr alpha: 1.0 -> 0.01
other: unchanged
op histogram: Identity +1, Mul +1
summary: nodes +2 -0 ~2; initializers +1 -1 ~1; inputs +0 -0 ~0; outputs +0 -0 ~0; metadata +1 -0 ~0; opsets +0 -0 ~0
";
}
