//! SHA-256 digests: the content hash of tensors (the canonical form described in [`super`]'s module
//! documentation) and of messages compared as a whole.

use std::fmt::Write as _;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::TensorProto;

/// Number of hex digits of a SHA-256 shown in the text report (JSON carries the full hash).
const SHORT_HASH: usize = 8;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The leading hex digits of a hash, as the text report and compact renderings show it.
pub(super) fn short(hash: &str) -> &str {
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
pub(super) fn hash_tensor_data(t: &TensorProto) -> (String, Option<u64>) {
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

pub(super) fn hash_messages<M: Message>(items: &[M]) -> String {
    let mut h = Sha256::new();
    for m in items {
        h.update(m.encode_length_delimited_to_vec());
    }
    hex(&h.finalize())
}
