//! How ONNX values appear inside a diff: compact renderings of types and attribute values
//! (`float32[N,3,32,32]`, `[1,1]`, `<graph 4 nodes sha256:..>`) and tensor summaries. The diff model stores
//! these strings, so text and JSON show the same.

use prost::Message;

use super::digest::{hash_tensor_data, sha256_hex, short};
use super::model::TensorSummary;
use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::type_proto::Value as TypeValue;
use crate::onnx::{AttributeProto, GraphProto, SparseTensorProto, TensorProto, TypeProto};

/// Strings up to this many bytes are shown verbatim; longer ones as length and hash.
pub const INLINE_VALUE_MAX: usize = 64;
/// Lists (attribute values) longer than this are shown abbreviated, with a hash of the full list.
const LIST_PREVIEW: usize = 16;

/// Short dtype name (`float32`, `int64`, `bfloat16`, ...); unknown codes as `dtype(N)`.
pub fn dtype_name(code: i32) -> String {
    crate::tensor::dtype_name(code).map_or_else(|| format!("dtype({code})"), str::to_owned)
}

pub(super) fn render_dims(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
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

pub(super) fn render_type_opt(t: Option<&TypeProto>) -> String {
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
pub(super) fn render_attr(a: &AttributeProto) -> String {
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

/// The op as shown and counted: `Conv` for the default domain, `com.microsoft::FusedConv` otherwise.
pub(super) fn op_label(domain: &str, op_type: &str) -> String {
    match domain {
        "" | "ai.onnx" => op_type.to_owned(),
        d => format!("{d}::{op_type}"),
    }
}

/// Names as-is, the empty string as `""`.
pub(super) fn quote(s: &str) -> String {
    if s.is_empty() {
        "\"\"".to_owned()
    } else {
        s.to_owned()
    }
}

pub(super) fn summarize_tensor(t: &TensorProto) -> TensorSummary {
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
