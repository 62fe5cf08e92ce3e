//! Reading bytes at offsets from a dataset file: a buffered file handle (the big sets, never loaded whole) or an
//! in-memory copy (small gzipped files, decompressed once).

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::DataError;

/// Big enough for several CIFAR records or one STL-10 image per refill.
const BUFFER: usize = 64 * 1024;

/// A file read at byte offsets through one buffered handle. Sequential reads do not seek; a jump within the
/// buffer keeps it (`seek_relative`).
pub(crate) struct RecordFile {
    path: PathBuf,
    reader: BufReader<File>,
    /// Where the reader stands; `None` after a failed read (the next read seeks from the start).
    pos: Option<u64>,
    len: u64,
}

impl RecordFile {
    /// Opens `path`; a missing file is reported by the caller, which knows what was expected.
    pub(crate) fn open(path: &Path) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(RecordFile {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(BUFFER, file),
            pos: Some(0),
            len,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file when it was opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from byte `offset`; a file shorter than that is [`DataError::Truncated`] at its end.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DataError> {
        let io = |source| DataError::Io {
            path: self.path.clone(),
            source,
        };
        let seek = match self.pos {
            Some(p) if p == offset => Ok(()),
            Some(p) => match i64::try_from(offset as i128 - p as i128) {
                Ok(delta) => self.reader.seek_relative(delta),
                Err(_) => self.reader.seek(SeekFrom::Start(offset)).map(|_| ()),
            },
            None => self.reader.seek(SeekFrom::Start(offset)).map(|_| ()),
        };
        if let Err(e) = seek {
            self.pos = None;
            return Err(io(e));
        }
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.pos = Some(offset + buf.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.pos = None;
                if e.kind() == ErrorKind::UnexpectedEof {
                    // The file shrank after it was checked at open.
                    let end = self
                        .reader
                        .get_ref()
                        .metadata()
                        .map(|m| m.len())
                        .unwrap_or(self.len);
                    Err(DataError::Truncated {
                        path: self.path.clone(),
                        offset: end,
                        what: format!("needed {} bytes from byte offset {offset}", buf.len()),
                    })
                } else {
                    Err(io(e))
                }
            }
        }
    }
}

/// Bytes of a file, read at offsets: from disk, or from memory for a decompressed gzip file.
pub(crate) enum ByteSource {
    File(RecordFile),
    /// `data` is the decompressed content of the gzip file `path`.
    Memory {
        path: PathBuf,
        data: Vec<u8>,
    },
}

impl ByteSource {
    /// Opens `path`; a name ending in `.gz` is decompressed into memory (the caller uses this only for small
    /// files such as MNIST).
    pub(crate) fn open(path: &Path) -> Result<Self, DataError> {
        if path.extension().is_some_and(|e| e == "gz") {
            let file = File::open(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut data = Vec::new();
            let mut dec = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            if let Err(e) = dec.read_to_end(&mut data) {
                return Err(DataError::Corrupt {
                    path: path.to_path_buf(),
                    offset: data.len() as u64,
                    what: format!(
                        "gzip stream broken after {} decompressed bytes: {e}",
                        data.len()
                    ),
                });
            }
            Ok(ByteSource::Memory {
                path: path.to_path_buf(),
                data,
            })
        } else {
            Ok(ByteSource::File(RecordFile::open(path)?))
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            ByteSource::File(f) => f.path(),
            ByteSource::Memory { path, .. } => path,
        }
    }

    /// Whether offsets refer to decompressed content (for messages).
    pub(crate) fn decompressed(&self) -> bool {
        matches!(self, ByteSource::Memory { .. })
    }

    /// Length of the (decompressed) content.
    pub(crate) fn len(&self) -> u64 {
        match self {
            ByteSource::File(f) => f.len(),
            ByteSource::Memory { data, .. } => data.len() as u64,
        }
    }

    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DataError> {
        match self {
            ByteSource::File(f) => f.read_at(offset, buf),
            ByteSource::Memory { path, data } => {
                let end = usize::try_from(offset)
                    .ok()
                    .and_then(|o| o.checked_add(buf.len()).map(|e| (o, e)))
                    .filter(|&(_, e)| e <= data.len());
                match end {
                    Some((o, e)) => {
                        buf.copy_from_slice(&data[o..e]);
                        Ok(())
                    }
                    None => Err(DataError::Truncated {
                        path: path.clone(),
                        offset: data.len() as u64,
                        what: format!(
                            "needed {} bytes from decompressed byte offset {offset}",
                            buf.len()
                        ),
                    }),
                }
            }
        }
    }
}

/// Number of whole `record`-byte records after a `header` in a file of `len` bytes; a partial last record is
/// [`DataError::Truncated`] naming where the file ended.
pub(crate) fn count_records(
    path: &Path,
    len: u64,
    header: u64,
    record: u64,
) -> Result<usize, DataError> {
    let body = len
        .checked_sub(header)
        .ok_or_else(|| DataError::Truncated {
            path: path.to_path_buf(),
            offset: len,
            what: format!("the header is {header} bytes"),
        })?;
    let (n, rest) = (body / record, body % record);
    if rest != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: len,
            what: format!(
                "record {n} starts at byte offset {} and needs {record} bytes, but only {rest} are there",
                header + n * record
            ),
        });
    }
    usize::try_from(n).map_err(|_| DataError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        what: format!("{n} records do not fit in memory addresses"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn record_file_reads_sequentially_and_at_random() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let mut f = RecordFile::open(&p).unwrap();
        assert_eq!(f.len(), 200_000);
        let mut buf = [0u8; 100];
        for off in [0u64, 100, 200, 150_000, 50, 199_900, 70_000, 0] {
            f.read_at(off, &mut buf).unwrap();
            assert_eq!(&buf[..], &bytes[off as usize..off as usize + 100], "{off}");
        }
        let e = f.read_at(199_950, &mut buf).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    offset: 200_000,
                    ..
                }
            ),
            "{e}"
        );
        // Recovers after a failed read.
        f.read_at(10, &mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[10..110]);
    }

    #[test]
    fn gzip_is_decompressed_and_a_broken_stream_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[7u8; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        std::fs::write(&p, &gz).unwrap();
        let mut s = ByteSource::open(&p).unwrap();
        assert!(s.decompressed());
        assert_eq!(s.len(), 1000);
        let mut b = [0u8; 4];
        s.read_at(996, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        let e = s.read_at(998, &mut b).unwrap_err().to_string();
        assert!(e.contains("file ended at byte offset 1000"), "{e}");

        std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
        let e = ByteSource::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("f.gz") && e.contains("gzip stream broken"),
            "{e}"
        );
    }

    #[test]
    fn partial_record_is_reported_with_offsets() {
        let p = Path::new("x.bin");
        assert_eq!(count_records(p, 16 + 30, 16, 10).unwrap(), 3);
        let e = count_records(p, 16 + 34, 16, 10).unwrap_err().to_string();
        assert_eq!(
            e,
            "x.bin: file ended at byte offset 50: record 3 starts at byte offset 46 and needs 10 bytes, but only 4 are there"
        );
        let e = count_records(p, 5, 16, 10).unwrap_err().to_string();
        assert!(e.contains("byte offset 5"), "{e}");
    }
}
