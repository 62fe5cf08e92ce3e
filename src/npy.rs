//! NumPy `.npy` files (format version 1.0/2.0/3.0): float32 and int64 tensors in and out of `rl-rewrite run`.

use std::path::Path;

use crate::engine::{HostTensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Serializes a float32 or int64 tensor as a version-1.0 `.npy` file.
pub fn to_npy(t: &HostTensor) -> Vec<u8> {
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let descr = match t.data {
        TensorData::F32(_) => "<f4",
        TensorData::I64(_) => "<i8",
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline is padded to a multiple of 64.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 8 * t.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &t.data {
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Reads a C-ordered `.npy` array: float32 and float64 as float32, int32 and int64 as int64.
pub fn read_npy(path: &Path) -> Result<HostTensor, NpyError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| NpyError::Read {
        path: name.clone(),
        error,
    })?;
    parse_npy(&bytes).map_err(|message| NpyError::Format {
        path: name,
        message,
    })
}

pub fn parse_npy(bytes: &[u8]) -> Result<HostTensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic); save arrays with numpy.save".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(header_start..header_start + header_len)
        .ok_or_else(|| {
            format!(
                "header runs past the end of the file ({} bytes)",
                bytes.len()
            )
        })?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text".to_string())?;
    let descr = field(header, "descr")
        .ok_or("header has no 'descr'")?
        .trim_matches(['\'', '"']);
    if field(header, "fortran_order") != Some("False") {
        return Err(
            "Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray".into(),
        );
    }
    let shape_text = field(header, "shape").ok_or("header has no 'shape'")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape {shape_text}")))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let payload = &bytes[header_start + header_len..];
    let size = match descr {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        other => {
            return Err(format!(
                "dtype {other} is not supported (use float32, float64, int32 or int64)"
            ))
        }
    };
    if payload.len() < n * size {
        return Err(format!(
            "holds {} bytes of data, but shape {shape_text} of {descr} needs {}",
            payload.len(),
            n * size
        ));
    }
    let chunks = payload[..n * size].chunks_exact(size);
    let data = match descr {
        "<f4" => TensorData::F32(
            chunks
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        "<f8" => TensorData::F32(
            chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        "<i4" => TensorData::I64(
            chunks
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
        ),
        _ => TensorData::I64(
            chunks
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
    };
    Ok(HostTensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let t = HostTensor::f32(vec![2, 3], vec![0.5, -1.0, 2.0, 3.0, 4.0, 5.5]);
        let bytes = to_npy(&t);
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0);
        assert_eq!(parse_npy(&bytes).unwrap(), t);
        let v = HostTensor::f32(vec![4], vec![1.0; 4]);
        assert_eq!(parse_npy(&to_npy(&v)).unwrap(), v);
        let labels = HostTensor::i64(vec![3], vec![7, -1, 1 << 40]);
        assert_eq!(parse_npy(&to_npy(&labels)).unwrap(), labels);
    }

    #[test]
    fn reads_what_numpy_writes() {
        // numpy.save(f, numpy.arange(3, dtype=numpy.int64)) header
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
        let padded = format!(
            "{header}{}\n",
            " ".repeat((64 - (10 + header.len() + 1) % 64) % 64)
        );
        bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        bytes.extend_from_slice(padded.as_bytes());
        for v in 0i64..3 {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            parse_npy(&bytes).unwrap(),
            HostTensor::i64(vec![3], vec![0, 1, 2])
        );
    }

    #[test]
    fn bad_files_are_explained() {
        assert!(parse_npy(b"hello").unwrap_err().contains("bad magic"));
        let mut t = to_npy(&HostTensor::f32(vec![4], vec![0.0; 4]));
        t.truncate(t.len() - 4);
        assert!(parse_npy(&t).unwrap_err().contains("needs 16"));
    }
}
