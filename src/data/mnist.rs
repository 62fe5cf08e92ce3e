//! MNIST in the IDX format, gzipped or not: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
//! `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]` (the `…-images.idx3-ubyte` spelling too).
//!
//! Images: big-endian u32 magic 2051, count, rows, columns, then `count·rows·columns` bytes. Labels: magic 2049,
//! count, then one byte per image. An uncompressed image file is read from disk as needed; a gzipped one is
//! decompressed once into memory (gzip has no random access, and MNIST is small: 47 MB for the 60 000 training
//! images). Labels are read whole and checked at open.

use std::path::{Path, PathBuf};

use super::records::ByteSource;
use super::{resolve_dir, DataError, Normalization, Source, Split};

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
const CLASSES: usize = 10;
const EXPECTED: &str =
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
                        t10k-labels-idx1-ubyte (IDX format, each optionally .gz)";

pub(crate) fn normalization() -> Normalization {
    Normalization {
        mean: vec![0.1307],
        std: vec![0.3081],
    }
}

pub(crate) struct Mnist {
    images: ByteSource,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    buf: Vec<u8>,
}

/// The first existing spelling of an IDX file in `folder`.
fn find(folder: &Path, names: &[String]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|n| [folder.join(n), folder.join(format!("{n}.gz"))])
        .find(|p| p.is_file())
}

/// `prefix-kind-idxN-ubyte` and `prefix-kind.idxN-ubyte`.
fn spellings(prefix: &str, kind: &str, idx: u8) -> Vec<String> {
    vec![
        format!("{prefix}-{kind}-idx{idx}-ubyte"),
        format!("{prefix}-{kind}.idx{idx}-ubyte"),
    ]
}

/// Reads the big-endian u32 fields of a header.
fn header<const N: usize>(src: &mut ByteSource, what: &str) -> Result<[u32; N], DataError> {
    let mut b = vec![0u8; 4 * N];
    src.read_at(0, &mut b).map_err(|_| DataError::Truncated {
        path: src.path().to_path_buf(),
        offset: src.len(),
        what: format!("the {what} header is {} bytes", 4 * N),
    })?;
    let mut out = [0u32; N];
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(out)
}

fn check_magic(src: &ByteSource, found: u32, expected: u32) -> Result<(), DataError> {
    if found == expected {
        return Ok(());
    }
    Err(DataError::BadMagic {
        path: src.path().to_path_buf(),
        found,
        expected,
        what: if expected == IMAGES_MAGIC {
            "IDX unsigned-byte 3-D images"
        } else {
            "IDX unsigned-byte 1-D labels"
        },
    })
}

/// Offsets in messages about a gzipped file refer to its decompressed content.
fn decompressed_note(src: &ByteSource) -> &'static str {
    if src.decompressed() {
        " (offsets after decompression)"
    } else {
        ""
    }
}

impl Mnist {
    pub(crate) fn open(dir: &Path, split: Split) -> Result<Self, DataError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let (img_names, lbl_names) = (
            spellings(prefix, "images", 3),
            spellings(prefix, "labels", 1),
        );
        let probe: Vec<String> = ["train", "t10k"]
            .iter()
            .flat_map(|p| {
                spellings(p, "images", 3)
                    .into_iter()
                    .chain(spellings(p, "labels", 1))
            })
            .flat_map(|n| [format!("{n}.gz"), n])
            .collect();
        let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
        let folder = resolve_dir(dir, &["MNIST/raw", "mnist"], &probe);
        let missing = |names: &[String]| DataError::MissingFile {
            dataset: "mnist",
            path: folder.join(&names[0]),
            expected: format!(
                "{EXPECTED} in {} or in its subfolder MNIST/raw/",
                dir.display()
            ),
        };
        let ip = find(&folder, &img_names).ok_or_else(|| missing(&img_names))?;
        let lp = find(&folder, &lbl_names).ok_or_else(|| missing(&lbl_names))?;

        let mut lsrc = ByteSource::open(&lp)?;
        let [magic, nl] = header::<2>(&mut lsrc, "labels")?;
        check_magic(&lsrc, magic, LABELS_MAGIC)?;
        let mut images = ByteSource::open(&ip)?;
        let [magic, n, rows, cols] = header::<4>(&mut images, "images")?;
        check_magic(&images, magic, IMAGES_MAGIC)?;
        let (n, rows, cols) = (n as usize, rows as usize, cols as usize);
        if nl as usize != n {
            return Err(DataError::Corrupt {
                path: lp,
                offset: 4,
                what: format!("{nl} labels but {} holds {n} images", ip.display()),
            });
        }

        let labels_end = 8 + n as u64;
        check_length(&lsrc, labels_end, &format!("{n} labels"))?;
        let mut labels = vec![0u8; n];
        lsrc.read_at(8, &mut labels)?;
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= CLASSES) {
            return Err(DataError::LabelOutOfRange {
                path: lp,
                offset: 8 + i as u64,
                label: labels[i],
                expected: format!("0..={}", CLASSES - 1),
            });
        }

        let image = rows.checked_mul(cols).filter(|&p| p > 0 && p <= 1 << 24);
        let Some(image) = image else {
            return Err(DataError::Corrupt {
                path: ip,
                offset: 8,
                what: format!("image size {rows}×{cols} is not plausible"),
            });
        };
        let images_end = (n as u64)
            .checked_mul(image as u64)
            .and_then(|b| b.checked_add(16))
            .ok_or_else(|| DataError::Corrupt {
                path: ip.clone(),
                offset: 4,
                what: format!("{n} images of {rows}×{cols} do not fit in a file"),
            })?;
        check_length(&images, images_end, &format!("{n} images of {rows}×{cols}"))?;
        Ok(Mnist {
            images,
            labels,
            rows,
            cols,
            buf: vec![0; image],
        })
    }
}

/// The file must end exactly at `end`, as its header says.
fn check_length(src: &ByteSource, end: u64, what: &str) -> Result<(), DataError> {
    let len = src.len();
    let note = decompressed_note(src);
    if len < end {
        return Err(DataError::Truncated {
            path: src.path().to_path_buf(),
            offset: len,
            what: format!("the header promises {what}, ending at byte offset {end}{note}"),
        });
    }
    if len > end {
        return Err(DataError::Corrupt {
            path: src.path().to_path_buf(),
            offset: end,
            what: format!(
                "{} bytes after the {what} the header promises{note}",
                len - end
            ),
        });
    }
    Ok(())
}

impl Source for Mnist {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn image_shape(&self) -> [usize; 3] {
        [1, self.rows, self.cols]
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn read(&mut self, index: usize, out: &mut [f32]) -> Result<u8, DataError> {
        let offset = 16 + (index * self.buf.len()) as u64;
        self.images.read_at(offset, &mut self.buf)?;
        for (o, &b) in out.iter_mut().zip(&self.buf) {
            *o = f32::from(b) / 255.0;
        }
        Ok(self.labels[index])
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{open, DataError, DataSpec, Normalization, Split};
    use std::io::Write;
    use std::path::Path;

    fn px(img: usize, y: usize, x: usize) -> u8 {
        ((img * 13 + y * 9 + x) % 256) as u8
    }

    fn idx_images(n: usize, rows: usize, cols: usize, first: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for f in [2051u32, n as u32, rows as u32, cols as u32] {
            v.extend(f.to_be_bytes());
        }
        for i in first..first + n {
            for y in 0..rows {
                for x in 0..cols {
                    v.push(px(i, y, x));
                }
            }
        }
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(2049u32.to_be_bytes());
        v.extend((labels.len() as u32).to_be_bytes());
        v.extend(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Train: 5 images of 4×3 with labels 3,1,4,1,5; test: 2 images with labels 9,0.
    fn write(dir: &Path, gzip: bool) {
        let files = [
            ("train-images-idx3-ubyte", idx_images(5, 4, 3, 0)),
            ("train-labels-idx1-ubyte", idx_labels(&[3, 1, 4, 1, 5])),
            ("t10k-images-idx3-ubyte", idx_images(2, 4, 3, 20)),
            ("t10k-labels-idx1-ubyte", idx_labels(&[9, 0])),
        ];
        for (name, bytes) in files {
            if gzip {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    fn spec(dir: &Path) -> DataSpec {
        format!("mnist:{}", dir.display()).parse().unwrap()
    }

    fn assert_image(got: &[f32], img: usize) {
        for y in 0..4 {
            for x in 0..3 {
                let want = (f32::from(px(img, y, x)) / 255.0 - 0.1307) / 0.3081;
                assert!((got[y * 3 + x] - want).abs() < 1e-5, "img {img} y{y} x{x}");
            }
        }
    }

    #[test]
    fn plain_and_gzipped_read_the_same() {
        for gzip in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write(tmp.path(), gzip);
            let mut d = open(&spec(tmp.path()), Split::Train).unwrap();
            assert_eq!((d.len(), d.image_shape(), d.classes()), (5, [1, 4, 3], 10));
            let mut sizes = Vec::new();
            let mut labels = Vec::new();
            let mut seen = 0;
            while let Some(b) = d.next_batch(2).unwrap() {
                for k in 0..b.len {
                    assert_image(&b.images[k * 12..(k + 1) * 12], seen + k);
                }
                seen += b.len;
                sizes.push(b.len);
                labels.extend(b.labels);
            }
            assert_eq!(sizes, vec![2, 2, 1]);
            assert_eq!(labels, vec![3, 1, 4, 1, 5]);
            d.reset();
            assert_eq!(d.next_batch(3).unwrap().unwrap().labels, vec![3, 1, 4]);
            let mut img = vec![0.0; 12];
            assert_eq!(d.get(4, &mut img).unwrap(), 5);
            assert_image(&img, 4);
            assert_eq!(d.get(0, &mut img).unwrap(), 3);
            assert_image(&img, 0);

            let mut t = open(&spec(tmp.path()), Split::Test).unwrap();
            assert_eq!(t.len(), 2);
            assert_eq!(t.get(1, &mut img).unwrap(), 0);
            assert_image(&img, 21);
        }
    }

    #[test]
    fn raw_subfolder_and_dot_spelling_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("MNIST/raw");
        std::fs::create_dir_all(&raw).unwrap();
        write(&raw, false);
        std::fs::rename(
            raw.join("t10k-images-idx3-ubyte"),
            raw.join("t10k-images.idx3-ubyte"),
        )
        .unwrap();
        assert_eq!(open(&spec(tmp.path()), Split::Test).unwrap().len(), 2);
    }

    #[test]
    fn bad_files_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), false);
        let ip = tmp.path().join("train-images-idx3-ubyte");
        let lp = tmp.path().join("train-labels-idx1-ubyte");
        let err = || open(&spec(tmp.path()), Split::Train).err().unwrap();

        let mut bad = idx_images(5, 4, 3, 0);
        bad[3] = 0x01; // 2049: a labels magic in the images file
        std::fs::write(&ip, &bad).unwrap();
        let e = err();
        assert!(
            matches!(
                e,
                DataError::BadMagic {
                    found: 2049,
                    expected: 2051,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");

        let mut short = idx_images(5, 4, 3, 0);
        short.truncate(16 + 12 * 3 + 5);
        std::fs::write(&ip, &short).unwrap();
        let e = err();
        assert!(matches!(e, DataError::Truncated { offset: 57, .. }), "{e}");
        assert!(e.to_string().contains("ending at byte offset 76"), "{e}");

        std::fs::write(&ip, &short[..10]).unwrap();
        assert!(matches!(err(), DataError::Truncated { offset: 10, .. }));

        let mut long = idx_images(5, 4, 3, 0);
        long.push(0);
        std::fs::write(&ip, &long).unwrap();
        assert!(matches!(err(), DataError::Corrupt { offset: 76, .. }));

        std::fs::write(&ip, idx_images(5, 4, 3, 0)).unwrap();
        std::fs::write(&lp, idx_labels(&[3, 1, 4, 1])).unwrap();
        let e = err().to_string();
        assert!(e.contains("4 labels") && e.contains("5 images"), "{e}");

        std::fs::write(&lp, idx_labels(&[3, 1, 4, 10, 5])).unwrap();
        assert!(matches!(
            err(),
            DataError::LabelOutOfRange {
                label: 10,
                offset: 11,
                ..
            }
        ));

        let mut lab = idx_labels(&[3, 1, 4, 1, 5]);
        lab.pop();
        std::fs::write(&lp, &lab).unwrap();
        assert!(matches!(err(), DataError::Truncated { offset: 12, .. }));

        // Gzipped: offsets are in the decompressed content.
        std::fs::remove_file(&ip).unwrap();
        std::fs::write(&lp, idx_labels(&[3, 1, 4, 1, 5])).unwrap();
        std::fs::write(tmp.path().join("train-images-idx3-ubyte.gz"), gz(&short)).unwrap();
        let e = err();
        assert!(matches!(e, DataError::Truncated { offset: 57, .. }), "{e}");
        assert!(e.to_string().contains("after decompression"), "{e}");

        std::fs::remove_file(&lp).unwrap();
        let e = err();
        assert!(matches!(e, DataError::MissingFile { .. }));
        let e = e.to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("t10k-images-idx3-ubyte"),
            "{e}"
        );
    }

    /// The real digits in `shared/data/mnist` beside the repository (8000 train / 2000 test).
    #[test]
    fn real_mnist() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
        assert!(dir.is_dir(), "{} is missing", dir.display());
        for (split, n) in [(Split::Train, 8000), (Split::Test, 2000)] {
            let mut d = open(&spec(&dir), split).unwrap();
            assert_eq!(
                (d.len(), d.image_shape(), d.classes()),
                (n, [1, 28, 28], 10)
            );
            let mut hist = [0usize; 10];
            let (mut sum, mut sq, mut count) = (0f64, 0f64, 0usize);
            let mut batches = 0;
            while let Some(b) = d.next_batch(512).unwrap() {
                batches += 1;
                for &l in &b.labels {
                    hist[l as usize] += 1;
                }
                for &v in &b.images {
                    sum += f64::from(v);
                    sq += f64::from(v) * f64::from(v);
                }
                count += b.images.len();
            }
            assert_eq!(batches, n.div_ceil(512));
            assert_eq!(hist.iter().sum::<usize>(), n);
            // Roughly balanced: every digit between 6% and 14% of the split.
            for (digit, &h) in hist.iter().enumerate() {
                assert!(
                    h * 100 > n * 6 && h * 100 < n * 14,
                    "{split}: digit {digit}: {h} of {n}"
                );
            }
            // The standard normalization leaves roughly zero mean and unit variance.
            let mean = sum / count as f64;
            let std = (sq / count as f64 - mean * mean).sqrt();
            assert!(
                mean.abs() < 0.1 && (0.85..1.15).contains(&std),
                "{split}: {mean} {std}"
            );

            d.set_normalization(Normalization::identity(1)).unwrap();
            let mut img = vec![0.0; 784];
            d.get(n - 1, &mut img).unwrap();
            assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(img.contains(&0.0) && img.iter().any(|&v| v > 0.5));
        }
    }
}
