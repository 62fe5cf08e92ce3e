//! The model of a diff: the data types a [`ModelDiff`] is made of, serialized as they are for JSON.

use std::collections::BTreeMap;

use serde::Serialize;

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
    pub(super) fn plus(self, other: Counts) -> Counts {
        Counts {
            added: self.added + other.added,
            removed: self.removed + other.removed,
            changed: self.changed + other.changed,
        }
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
    pub(super) fn new(field: impl Into<String>, from: Option<String>, to: Option<String>) -> Self {
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
}
