//! CIFAR-10 and CIFAR-100, the official binary versions.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin` (train) and `test_batch.bin`,
//! records of 1 label byte + 3072 pixel bytes. CIFAR-100 (`cifar-100-binary/`): `train.bin`, `test.bin`,
//! records of a coarse label byte, a fine label byte (the one used) and 3072 pixel bytes. The pixels are the
//! red, green and blue 32×32 planes, each row-major: already CHW.

use std::path::{Path, PathBuf};

use super::records::{count_records, RecordFile};
use super::{resolve_dir, DataError, Normalization, Source, Split};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    Ten,
    Hundred,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Ten => "cifar10",
            Variant::Hundred => "cifar100",
        }
    }

    fn subfolder(self) -> &'static str {
        match self {
            Variant::Ten => "cifar-10-batches-bin",
            Variant::Hundred => "cifar-100-binary",
        }
    }

    fn files(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Variant::Ten, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (Variant::Ten, Split::Test) => vec!["test_batch.bin".into()],
            (Variant::Hundred, Split::Train) => vec!["train.bin".into()],
            (Variant::Hundred, Split::Test) => vec!["test.bin".into()],
        }
    }

    /// Label bytes before the pixels; the label used is the last of them (CIFAR-100's fine label).
    fn label_bytes(self) -> usize {
        match self {
            Variant::Ten => 1,
            Variant::Hundred => 2,
        }
    }

    fn classes(self) -> usize {
        match self {
            Variant::Ten => 10,
            Variant::Hundred => 100,
        }
    }

    fn expected(self) -> String {
        match self {
            Variant::Ten => "data_batch_1.bin … data_batch_5.bin and test_batch.bin (the CIFAR-10 binary version)",
            Variant::Hundred => "train.bin and test.bin (the CIFAR-100 binary version)",
        }
        .to_owned()
    }

    pub(crate) fn normalization(self) -> Normalization {
        match self {
            Variant::Ten => Normalization {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![0.2470, 0.2435, 0.2616],
            },
            Variant::Hundred => Normalization {
                mean: vec![0.5071, 0.4865, 0.4409],
                std: vec![0.2673, 0.2564, 0.2762],
            },
        }
    }

    fn record(self) -> usize {
        self.label_bytes() + PIXELS
    }
}

/// One split: its files in order, each with the number of records it holds.
pub(crate) struct Cifar {
    variant: Variant,
    files: Vec<(RecordFile, usize)>,
    total: usize,
    buf: Vec<u8>,
}

impl Cifar {
    pub(crate) fn open(variant: Variant, dir: &Path, split: Split) -> Result<Self, DataError> {
        let names = variant.files(split);
        let all: Vec<String> = Variant::files(variant, Split::Train)
            .into_iter()
            .chain(variant.files(Split::Test))
            .collect();
        let probe: Vec<&str> = all.iter().map(String::as_str).collect();
        let folder = resolve_dir(dir, &[variant.subfolder()], &probe);
        let mut files = Vec::with_capacity(names.len());
        let mut total = 0usize;
        for name in &names {
            let path: PathBuf = folder.join(name);
            if !path.is_file() {
                return Err(DataError::MissingFile {
                    dataset: variant.name(),
                    path,
                    expected: format!(
                        "{} in {} or in its subfolder {}/",
                        variant.expected(),
                        dir.display(),
                        variant.subfolder()
                    ),
                });
            }
            let f = RecordFile::open(&path)?;
            let n = count_records(&path, f.len(), 0, variant.record() as u64)?;
            total += n;
            files.push((f, n));
        }
        Ok(Cifar {
            variant,
            files,
            total,
            buf: vec![0; variant.record()],
        })
    }
}

impl Source for Cifar {
    fn len(&self) -> usize {
        self.total
    }

    fn image_shape(&self) -> [usize; 3] {
        [3, SIDE, SIDE]
    }

    fn classes(&self) -> usize {
        self.variant.classes()
    }

    fn read(&mut self, index: usize, out: &mut [f32]) -> Result<u8, DataError> {
        let (asked, mut index) = (index, index);
        let record = self.variant.record();
        let lb = self.variant.label_bytes();
        for (file, n) in &mut self.files {
            if index >= *n {
                index -= *n;
                continue;
            }
            let offset = (index * record) as u64;
            file.read_at(offset, &mut self.buf)?;
            let label = self.buf[lb - 1];
            if usize::from(label) >= self.variant.classes() {
                return Err(DataError::LabelOutOfRange {
                    path: file.path().to_path_buf(),
                    offset: offset + lb as u64 - 1,
                    label,
                    expected: format!("0..={}", self.variant.classes() - 1),
                });
            }
            for (o, &b) in out.iter_mut().zip(&self.buf[lb..]) {
                *o = f32::from(b) / 255.0;
            }
            return Ok(label);
        }
        Err(DataError::IndexOutOfRange {
            index: asked,
            len: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{open, DataError, DataSpec, Normalization, Split};
    use std::path::Path;

    /// Pixel byte of image `img` at channel `c`, row `y`, column `x`: distinct across positions and images.
    fn px(img: usize, c: usize, y: usize, x: usize) -> u8 {
        ((img * 7 + c * 50 + y * 3 + x * 5) % 256) as u8
    }

    /// A record: the label bytes, then the R, G and B planes, each row-major.
    fn record(labels: &[u8], img: usize) -> Vec<u8> {
        let mut r = labels.to_vec();
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    r.push(px(img, c, y, x));
                }
            }
        }
        r
    }

    /// Writes CIFAR-10 files: `train` images spread one per batch file (then the rest in the last),
    /// `test` images in the test batch. Image `i` has label `i % 10` and pixels `px(i, ..)`.
    fn write_cifar10(dir: &Path, train: usize, test: usize) {
        let mut files = vec![Vec::new(); 5];
        for i in 0..train {
            files[i.min(4)].extend(record(&[(i % 10) as u8], i));
        }
        for (k, f) in files.iter().enumerate() {
            std::fs::write(dir.join(format!("data_batch_{}.bin", k + 1)), f).unwrap();
        }
        let t: Vec<u8> = (0..test)
            .flat_map(|i| record(&[(i % 10) as u8], 100 + i))
            .collect();
        std::fs::write(dir.join("test_batch.bin"), t).unwrap();
    }

    fn spec10(dir: &Path) -> DataSpec {
        format!("cifar10:{}", dir.display()).parse().unwrap()
    }

    fn assert_image(got: &[f32], img: usize, norm: &Normalization) {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let want = (f32::from(px(img, c, y, x)) / 255.0 - norm.mean[c]) / norm.std[c];
                    let v = got[c * 1024 + y * 32 + x];
                    assert!(
                        (v - want).abs() < 1e-5,
                        "image {img} c{c} y{y} x{x}: {v} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn cifar10_pixels_labels_batches_reset_and_get() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 7, 3);
        let mut d = open(&spec10(tmp.path()), Split::Train).unwrap();
        assert_eq!(
            (d.len(), d.image_shape(), d.classes()),
            (7, [3, 32, 32], 10)
        );
        let norm = d.normalization().clone();
        assert_eq!(norm.mean, vec![0.4914, 0.4822, 0.4465]);

        let mut seen = 0;
        let mut sizes = Vec::new();
        while let Some(b) = d.next_batch(3).unwrap() {
            assert_eq!(b.shape(), [b.len, 3, 32, 32]);
            assert_eq!(b.images.len(), b.len * 3072);
            for k in 0..b.len {
                let i = seen + k;
                assert_eq!(b.labels[k], (i % 10) as i64);
                assert_image(&b.images[k * 3072..(k + 1) * 3072], i, &norm);
            }
            seen += b.len;
            sizes.push(b.len);
        }
        assert_eq!(sizes, vec![3, 3, 1]);
        assert!(d.next_batch(3).unwrap().is_none());
        d.reset();
        assert_eq!(d.next_batch(100).unwrap().unwrap().len, 7);

        // Random access, across batch files and backwards.
        let mut img = vec![0.0; 3072];
        for i in [6, 0, 4, 5, 1] {
            assert_eq!(d.get(i, &mut img).unwrap(), (i % 10) as u8);
            assert_image(&img, i, &norm);
        }
        let b = d.gather(&[5, 2]).unwrap();
        assert_eq!(b.labels, vec![5, 2]);
        assert_image(&b.images[3072..], 2, &norm);

        let mut t = open(&spec10(tmp.path()), Split::Test).unwrap();
        assert_eq!(t.len(), 3);
        t.set_normalization(Normalization::identity(3)).unwrap();
        assert_eq!(t.get(2, &mut img).unwrap(), 2);
        assert_eq!(img[1024 + 5 * 32 + 9], f32::from(px(102, 1, 5, 9)) / 255.0);
    }

    #[test]
    fn cifar10_parent_folder_is_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        write_cifar10(&sub, 5, 2);
        assert_eq!(open(&spec10(tmp.path()), Split::Train).unwrap().len(), 5);
        assert_eq!(open(&spec10(&sub), Split::Test).unwrap().len(), 2);
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("cifar-100-binary");
        std::fs::create_dir(&sub).unwrap();
        let train: Vec<u8> = (0..3)
            .flat_map(|i| record(&[19 - i as u8, 90 + i as u8], i))
            .collect();
        std::fs::write(sub.join("train.bin"), train).unwrap();
        std::fs::write(sub.join("test.bin"), record(&[3, 42], 9)).unwrap();
        let spec: DataSpec = format!("cifar100:{}", tmp.path().display())
            .parse()
            .unwrap();
        let mut d = open(&spec, Split::Train).unwrap();
        assert_eq!((d.len(), d.classes()), (3, 100));
        let norm = d.normalization().clone();
        assert_eq!(norm.std, vec![0.2673, 0.2564, 0.2762]);
        let b = d.next_batch(2).unwrap().unwrap();
        assert_eq!(b.labels, vec![90, 91]);
        assert_image(&b.images[3072..], 1, &norm);
        let b = d.next_batch(2).unwrap().unwrap();
        assert_eq!((b.len, b.labels.clone()), (1, vec![92]));
        assert_image(&b.images, 2, &norm);
        let mut t = open(&spec, Split::Test).unwrap();
        let mut img = vec![0.0; 3072];
        assert_eq!(t.get(0, &mut img).unwrap(), 42);
        assert_image(&img, 9, &norm);
    }

    #[test]
    fn missing_file_names_it_and_the_expected_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 5, 1);
        std::fs::remove_file(tmp.path().join("data_batch_3.bin")).unwrap();
        let e = open(&spec10(tmp.path()), Split::Train).err().unwrap();
        assert!(matches!(e, DataError::MissingFile { .. }));
        let e = e.to_string();
        assert!(
            e.contains("data_batch_3.bin") && e.contains("test_batch.bin"),
            "{e}"
        );
        assert!(e.contains("cifar-10-batches-bin"), "{e}");
        let e = open(
            &format!("cifar100:{}", tmp.path().display())
                .parse()
                .unwrap(),
            Split::Test,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("test.bin") && e.contains("train.bin"), "{e}");
    }

    #[test]
    fn truncated_file_and_bad_label_are_reported_with_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 5, 2);
        let p = tmp.path().join("test_batch.bin");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(3073 + 1000);
        std::fs::write(&p, &bytes).unwrap();
        let e = open(&spec10(tmp.path()), Split::Test).err().unwrap();
        assert!(
            matches!(e, DataError::Truncated { offset: 4073, .. }),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("test_batch.bin") && e.contains("byte offset 4073"),
            "{e}"
        );

        // Second record's label is 10: out of range for CIFAR-10.
        bytes.truncate(3073);
        bytes.extend(record(&[10], 1));
        std::fs::write(&p, &bytes).unwrap();
        let mut d = open(&spec10(tmp.path()), Split::Test).unwrap();
        assert_eq!(d.next_batch(1).unwrap().unwrap().labels, vec![0]);
        let e = d.next_batch(1).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    label: 10,
                    offset: 3073,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("test_batch.bin"), "{e}");
        // A failed batch does not move the position.
        assert!(d.next_batch(1).is_err());
    }
}
