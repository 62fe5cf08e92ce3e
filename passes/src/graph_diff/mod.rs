//! Semantic diff of two ONNX models.
//!
//! [`diff_models`] compares two in-memory [`ModelProto`](crate::onnx::ModelProto)s and returns a
//! [`ModelDiff`]: a structured, deterministic description of what changed, printable as a text report
//! ([`Display`](std::fmt::Display)) or as JSON ([`ModelDiff::to_json`]). No file I/O is done here.
//!
//! Three parts: the model of a diff (`model`: the data types it is made of); the matching (`matching`:
//! how the parts of `a` and `b` are paired and what is compared, with `describe` for the compact renderings
//! of ONNX values that the model stores and `digest` for content hashes); and the renderings, `text` and
//! `json`, each on its own.
//!
//! What is compared, section by section:
//!
//! - **model**: `ir_version`, `producer_name`, `producer_version`, `domain`, `model_version` and the graph
//!   name. Unset proto2 fields compare equal to their default (`None` and `Some("")` are the same).
//! - **opsets**: `opset_import`, keyed by domain (`""` is shown as `ai.onnx`).
//! - **metadata**: `metadata_props` of the model and of the main graph, keyed by key. Values longer than
//!   [`INLINE_VALUE_MAX`] bytes (or containing control characters), and the values of the Replacement
//!   Learning contract's keys ([`crate::contract::PLAN_KEY`], [`crate::contract::MANIFEST_KEY`]) always,
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

mod describe;
mod digest;
mod json;
mod matching;
mod model;
mod text;

pub use describe::{dtype_name, INLINE_VALUE_MAX};
pub use matching::diff_models;
pub use model::{
    Changes, Counts, FieldChange, IoChange, IoDiff, IoEntry, MatchKind, MetaChange, MetaEntry,
    MetadataDiff, ModelDiff, NodeChange, NodeSummary, Opset, OpsetChange, OrderChange, OtherChange,
    Summary, TensorChange, TensorSummary, ValueSummary,
};

#[cfg(test)]
mod tests;
