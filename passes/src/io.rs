//! Reading and writing ONNX files.
//!
//! The model file is memory-mapped and decoded from a `Bytes` view of the mapping, so tensor payloads
//! (`raw_data`) stay slices of the file: a 1 GB model is never copied to be rewritten. External data is mapped
//! the same way. Writing streams the message into the destination in large chunks (no whole-model buffer) and
//! is atomic: a temporary file in the destination folder, renamed into place once complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use bytes::{buf::UninitSlice, Buf, BufMut, Bytes};
use prost::Message;

use crate::onnx::{
    tensor_proto::DataLocation, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
};
use crate::tensor::{dtype_name, element_size};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is empty: expected an ONNX model (a serialized ModelProto)")]
    Empty { path: PathBuf },
    #[error("{path} is not a valid ONNX model ({reason}); the file may be truncated or of another format")]
    Decode { path: PathBuf, reason: String },
    #[error("{path} has no graph: it decodes as protobuf but is not an ONNX model")]
    NoGraph { path: PathBuf },
    #[error("{path}: tensor '{tensor}' has unknown data type {data_type}")]
    UnknownDataType {
        path: PathBuf,
        tensor: String,
        data_type: i32,
    },
    #[error(
        "{path}: tensor '{tensor}' has external location '{location}', which {why}; external data must be a \
         relative path inside the model's folder"
    )]
    UnsafeLocation {
        path: PathBuf,
        tensor: String,
        location: String,
        why: &'static str,
    },
    #[error("{path}: tensor '{tensor}' is stored externally but names no 'location'")]
    MissingLocation { path: PathBuf, tensor: String },
    #[error("{path}: external data file '{file}' for tensor '{tensor}' cannot be read: {error}")]
    ExternalFile {
        path: PathBuf,
        tensor: String,
        file: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: tensor '{tensor}' reads bytes {offset}..{end} of '{file}', which has only {len} bytes; the \
         external data file is truncated or belongs to another model"
    )]
    ExternalRange {
        path: PathBuf,
        tensor: String,
        file: PathBuf,
        offset: u64,
        end: u64,
        len: u64,
    },
    #[error("{path}: tensor '{tensor}': bad external_data entry '{key}' = '{value}'")]
    ExternalEntry {
        path: PathBuf,
        tensor: String,
        key: String,
        value: String,
    },
    #[error("cannot write {path}: {error}; check that the folder exists and is writable")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Where a tensor's payload lived in the file it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOrigin {
    pub location: String,
    pub offset: u64,
    pub length: u64,
}

/// A decoded model whose external tensors have been resolved into `raw_data`.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: ModelProto,
    /// Tensors that were stored in external files, by name, with their origin.
    pub external: BTreeMap<String, ExternalOrigin>,
}

fn map_file(path: &Path) -> std::io::Result<Bytes> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is a folder, not a file",
        ));
    }
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only; like every mmap-based reader we assume the file is not truncated
    // by another process while the model is alive.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

/// Decodes a model from bytes (no external data resolution). `origin` names the source in errors.
pub fn decode_model(bytes: Bytes, origin: &Path) -> Result<ModelProto, IoError> {
    if bytes.is_empty() {
        return Err(IoError::Empty {
            path: origin.to_owned(),
        });
    }
    let model = ModelProto::decode(bytes).map_err(|e| IoError::Decode {
        path: origin.to_owned(),
        reason: e.to_string(),
    })?;
    if model.graph.is_none() {
        return Err(IoError::NoGraph {
            path: origin.to_owned(),
        });
    }
    Ok(model)
}

/// Memory-maps and decodes `path`, resolving external data relative to the model's folder.
pub fn load_model(path: &Path) -> Result<LoadedModel, IoError> {
    let bytes = map_file(path).map_err(|error| IoError::Read {
        path: path.to_owned(),
        error,
    })?;
    let mut model = decode_model(bytes, path)?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let mut resolver = ExternalResolver {
        model_path: path,
        base: &base,
        files: HashMap::new(),
    };
    let mut external = BTreeMap::new();
    let mut result = Ok(());
    for_each_tensor_mut(&mut model, &mut |t| {
        if result.is_err() {
            return;
        }
        result = check_data_type(t, path).and_then(|()| resolver.resolve(t, &mut external));
    });
    result?;
    Ok(LoadedModel { model, external })
}

fn check_data_type(t: &TensorProto, path: &Path) -> Result<(), IoError> {
    let dt = t.data_type();
    if element_size(dt).is_none() && dtype_name(dt).is_none() {
        return Err(IoError::UnknownDataType {
            path: path.to_owned(),
            tensor: t.name().to_owned(),
            data_type: dt,
        });
    }
    Ok(())
}

struct ExternalResolver<'a> {
    model_path: &'a Path,
    base: &'a Path,
    files: HashMap<PathBuf, Bytes>,
}

/// Rejects locations that could read or write outside the model's folder.
pub fn check_location(location: &str) -> Result<(), &'static str> {
    let p = Path::new(location);
    if p.is_absolute()
        || location.starts_with('/')
        || location.starts_with('\\')
        || location.contains(':')
    {
        return Err("is an absolute path");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir))
        || location.split('\\').any(|c| c == "..")
    {
        return Err("escapes the model's folder with '..'");
    }
    if location.is_empty() {
        return Err("is empty");
    }
    Ok(())
}

impl ExternalResolver<'_> {
    fn resolve(
        &mut self,
        t: &mut TensorProto,
        external: &mut BTreeMap<String, ExternalOrigin>,
    ) -> Result<(), IoError> {
        if t.data_location() != DataLocation::External {
            return Ok(());
        }
        let name = t.name().to_owned();
        let (mut location, mut offset, mut length) = (None, 0u64, None);
        for e in &t.external_data {
            let bad = || IoError::ExternalEntry {
                path: self.model_path.to_owned(),
                tensor: name.clone(),
                key: e.key().to_owned(),
                value: e.value().to_owned(),
            };
            match e.key() {
                "location" => location = Some(e.value().to_owned()),
                "offset" => offset = e.value().parse().map_err(|_| bad())?,
                "length" => length = Some(e.value().parse::<u64>().map_err(|_| bad())?),
                _ => {}
            }
        }
        let location = location.ok_or_else(|| IoError::MissingLocation {
            path: self.model_path.to_owned(),
            tensor: name.clone(),
        })?;
        check_location(&location).map_err(|why| IoError::UnsafeLocation {
            path: self.model_path.to_owned(),
            tensor: name.clone(),
            location: location.clone(),
            why,
        })?;
        let file = self.base.join(&location);
        if !self.files.contains_key(&file) {
            let bytes = map_file(&file).map_err(|error| IoError::ExternalFile {
                path: self.model_path.to_owned(),
                tensor: name.clone(),
                file: file.clone(),
                error,
            })?;
            self.files.insert(file.clone(), bytes);
        }
        let data = &self.files[&file];
        let len = data.len() as u64;
        let end = match length {
            Some(l) => offset.saturating_add(l),
            None => len,
        };
        if offset > len || end > len {
            return Err(IoError::ExternalRange {
                path: self.model_path.to_owned(),
                tensor: name,
                file,
                offset,
                end,
                len,
            });
        }
        t.raw_data = Some(data.slice(offset as usize..end as usize));
        t.data_location = None;
        t.external_data.clear();
        external.insert(
            name,
            ExternalOrigin {
                location,
                offset,
                length: end - offset,
            },
        );
        Ok(())
    }
}

/// Visits every tensor stored in the model: initializers, tensor attributes, subgraphs, functions.
pub fn for_each_tensor_mut(model: &mut ModelProto, f: &mut dyn FnMut(&mut TensorProto)) {
    fn graph(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
        for t in &mut g.initializer {
            f(t);
        }
        for s in &mut g.sparse_initializer {
            if let Some(v) = &mut s.values {
                f(v);
            }
            if let Some(i) = &mut s.indices {
                f(i);
            }
        }
        for n in &mut g.node {
            for a in &mut n.attribute {
                if let Some(t) = &mut a.t {
                    f(t);
                }
                for t in &mut a.tensors {
                    f(t);
                }
                if let Some(sg) = &mut a.g {
                    graph(sg, f);
                }
                for sg in &mut a.graphs {
                    graph(sg, f);
                }
            }
        }
    }
    if let Some(g) = &mut model.graph {
        graph(g, f);
    }
}

/// How tensors are laid out when saving.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Tensors (by name) to store in the external data file beside the model.
    pub external: Vec<String>,
    /// Store every tensor of at least this many bytes externally as well.
    pub external_threshold: Option<usize>,
    /// fsync the written files before renaming them into place, so they survive a power loss. The rename is
    /// atomic either way: readers never see a half-written file.
    pub durable: bool,
}

/// A model whose encoding would pass protobuf's 2 GB limit must keep its large tensors external.
pub const PROTOBUF_LIMIT: usize = 2 * 1024 * 1024 * 1024 - 1;

impl SaveOptions {
    /// Keeps tensors external when the input had them, and externalizes large tensors when the output would
    /// not fit in one protobuf message.
    pub fn like_input(
        loaded_external: &BTreeMap<String, ExternalOrigin>,
        model: &ModelProto,
    ) -> Self {
        let external_threshold = (model.encoded_len() > PROTOBUF_LIMIT).then_some(1024);
        SaveOptions {
            external: loaded_external.keys().cloned().collect(),
            external_threshold,
            durable: false,
        }
    }
}

/// The external data file written beside `path`: `<file name>.data`.
pub fn external_data_name(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    format!("{stem}.data")
}

/// External payloads start on page boundaries, as the reference implementation's writer lays them out.
const EXTERNAL_ALIGNMENT: u64 = 4096;

/// What [`save_model`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The external data file (when tensors went there), then the model.
    pub files: Vec<PathBuf>,
    /// Whether each file and its folder entry were flushed to disk ([`SaveOptions::durable`]).
    pub durable: bool,
}

/// Writes `model` to `path` atomically. Tensors chosen by `opts` go to `<path>.data` (also atomically), which is
/// in place before the model that refers to it.
pub fn save_model(model: &ModelProto, path: &Path, opts: &SaveOptions) -> Result<Saved, IoError> {
    let wanted: std::collections::HashSet<&str> =
        opts.external.iter().map(String::as_str).collect();
    let is_external = |t: &TensorProto| {
        t.raw_data.as_ref().is_some_and(|d| {
            wanted.contains(t.name()) || opts.external_threshold.is_some_and(|min| d.len() >= min)
        })
    };
    // Cloning is cheap: tensor payloads are shared `Bytes`, not copied.
    let mut model = model.clone();
    let data_name = external_data_name(path);
    let mut payloads = Vec::new();
    let mut end = 0u64;
    for_each_tensor_mut(&mut model, &mut |t| {
        if !is_external(t) {
            return;
        }
        let data = t.raw_data.take().unwrap_or_default();
        let offset = end.next_multiple_of(EXTERNAL_ALIGNMENT);
        end = offset + data.len() as u64;
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            StringStringEntryProto::new("location", data_name.clone()),
            StringStringEntryProto::new("offset", offset.to_string()),
            StringStringEntryProto::new("length", data.len().to_string()),
        ];
        payloads.push((offset, data));
    });
    let mut files = Vec::new();
    if !payloads.is_empty() {
        let data_path = parent_dir(path).join(&data_name);
        write_atomically(&data_path, opts.durable, |w| {
            let mut written = 0u64;
            for (offset, data) in &payloads {
                w.write_all(&vec![0u8; (offset - written) as usize])?;
                w.write_all(data)?;
                written = offset + data.len() as u64;
            }
            Ok(())
        })?;
        files.push(data_path);
    }
    write_atomically(path, opts.durable, |w| encode_streaming(&model, w))?;
    files.push(path.to_owned());
    Ok(Saved {
        files,
        durable: opts.durable,
    })
}

/// The folder a file is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Runs `write` against a temporary file in `path`'s folder and renames it to `path` once it succeeded. When
/// `durable`, the file is flushed to disk before the rename and the folder after it, so that the new name
/// survives a power loss too.
pub fn write_atomically(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), IoError> {
    let werr = |error| IoError::Write {
        path: path.to_owned(),
        error,
    };
    let tmp = tempfile::NamedTempFile::new_in(parent_dir(path)).map_err(werr)?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp);
    write(&mut out).map_err(werr)?;
    let tmp = out.into_inner().map_err(|e| werr(e.into_error()))?;
    finish(&tmp, durable).map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    if durable {
        sync_folder(&parent_dir(path)).map_err(werr)?;
    }
    Ok(())
}

/// Flushes a folder's entries (a rename into it) to disk.
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    // Elsewhere a folder cannot be opened as a file; the rename is as durable as the platform makes it.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Gives a finished temporary file the permissions of an ordinary new file (temporary files are created
/// private) and, when `durable`, flushes it to disk.
fn finish(tmp: &tempfile::NamedTempFile, durable: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    if durable {
        tmp.as_file().sync_all()?;
    }
    Ok(())
}

/// Encodes `model` into `out` without materialising the whole encoding: large byte fields are written
/// straight through, the rest goes through a small staging buffer.
pub fn encode_streaming(model: &ModelProto, out: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = StreamingBuf {
        out,
        staged: Vec::with_capacity(STAGE),
        error: None,
    };
    model.encode_raw(&mut buf);
    buf.flush()?;
    match buf.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

const STAGE: usize = 256 * 1024;

struct StreamingBuf<'w> {
    out: &'w mut dyn Write,
    staged: Vec<u8>,
    error: Option<std::io::Error>,
}

impl StreamingBuf<'_> {
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.write_all(&self.staged)?;
        self.staged.clear();
        Ok(())
    }

    fn flush_or_record(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
        self.staged.clear();
    }
}

// SAFETY: `chunk_mut` hands out the spare capacity of `staged`; `advance_mut` only ever commits bytes
// the caller initialised in that spare capacity.
unsafe impl BufMut for StreamingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.staged.len()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.staged.len() + cnt;
        assert!(len <= self.staged.capacity());
        // SAFETY: guaranteed by the caller per `BufMut::advance_mut`.
        unsafe { self.staged.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.staged.len() == self.staged.capacity() {
            self.flush_or_record();
        }
        UninitSlice::uninit(self.staged.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.staged.len() + src.len() <= self.staged.capacity() {
            self.staged.extend_from_slice(src);
            return;
        }
        self.flush_or_record();
        if src.len() >= STAGE {
            if self.error.is_none() {
                if let Err(e) = self.out.write_all(src) {
                    self.error = Some(e);
                }
            }
        } else {
            self.staged.extend_from_slice(src);
        }
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_outside_the_folder_are_rejected() {
        assert!(check_location("weights.bin").is_ok());
        assert!(check_location("sub/weights.bin").is_ok());
        assert_eq!(check_location("/etc/passwd"), Err("is an absolute path"));
        assert_eq!(
            check_location("../secret.bin"),
            Err("escapes the model's folder with '..'")
        );
        assert_eq!(
            check_location("a/../../b"),
            Err("escapes the model's folder with '..'")
        );
        assert!(check_location("C:\\x").is_err());
    }

    #[test]
    fn streaming_encoding_equals_prost_encoding() {
        let big = Bytes::from((0..3 * STAGE).map(|i| i as u8).collect::<Vec<_>>());
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                name: Some("g".into()),
                initializer: vec![
                    TensorProto {
                        name: Some("small".into()),
                        raw_data: Some(Bytes::from_static(&[1, 2, 3])),
                        ..Default::default()
                    },
                    TensorProto {
                        name: Some("big".into()),
                        data_type: Some(2),
                        raw_data: Some(big),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut streamed = Vec::new();
        encode_streaming(&model, &mut streamed).unwrap();
        assert_eq!(streamed, model.encode_to_vec());
    }
}
