//! STL-10, the official binary version (`stl10_binary/`).
//!
//! `train_X.bin` / `test_X.bin`: uint8 images of 3×96×96, one after another, each channel stored
//! **column-major** (the byte for row `y`, column `x` of channel `c` is at `c·96·96 + x·96 + y`; MATLAB order).
//! `train_y.bin` / `test_y.bin`: one label byte per image, `1..=10`, returned as `0..=9`. The label files are
//! small and read whole (and checked) at open; images are read from disk as needed.

use std::path::Path;

use super::records::{count_records, RecordFile};
use super::{resolve_dir, DataError, Normalization, Source, Split};

const SIDE: usize = 96;
const PLANE: usize = SIDE * SIDE;
const IMAGE: usize = 3 * PLANE;
const CLASSES: usize = 10;
const EXPECTED: &str =
    "train_X.bin, train_y.bin, test_X.bin and test_y.bin (the STL-10 binary version)";

pub(crate) fn normalization() -> Normalization {
    Normalization {
        mean: vec![0.4467, 0.4398, 0.4066],
        std: vec![0.2603, 0.2566, 0.2713],
    }
}

pub(crate) struct Stl10 {
    images: RecordFile,
    /// `0..=9`.
    labels: Vec<u8>,
    buf: Vec<u8>,
}

impl Stl10 {
    pub(crate) fn open(dir: &Path, split: Split) -> Result<Self, DataError> {
        let folder = resolve_dir(
            dir,
            &["stl10_binary"],
            &["train_X.bin", "test_X.bin", "train_y.bin", "test_y.bin"],
        );
        let (xn, yn) = match split {
            Split::Train => ("train_X.bin", "train_y.bin"),
            Split::Test => ("test_X.bin", "test_y.bin"),
        };
        let (xp, yp) = (folder.join(xn), folder.join(yn));
        for p in [&xp, &yp] {
            if !p.is_file() {
                return Err(DataError::MissingFile {
                    dataset: "stl10",
                    path: p.clone(),
                    expected: format!(
                        "{EXPECTED} in {} or in its subfolder stl10_binary/",
                        dir.display()
                    ),
                });
            }
        }
        let mut labels = std::fs::read(&yp).map_err(|source| DataError::Io {
            path: yp.clone(),
            source,
        })?;
        for (i, l) in labels.iter_mut().enumerate() {
            if !(1..=CLASSES as u8).contains(l) {
                return Err(DataError::LabelOutOfRange {
                    path: yp.clone(),
                    offset: i as u64,
                    label: *l,
                    expected: format!("1..={CLASSES}"),
                });
            }
            *l -= 1;
        }
        let images = RecordFile::open(&xp)?;
        let n = count_records(&xp, images.len(), 0, IMAGE as u64)?;
        if n < labels.len() {
            return Err(DataError::Truncated {
                path: xp,
                offset: images.len(),
                what: format!(
                    "{n} images of 3×96×96 bytes but {} has {} labels",
                    yp.display(),
                    labels.len()
                ),
            });
        }
        if n > labels.len() {
            return Err(DataError::Corrupt {
                path: yp.clone(),
                offset: labels.len() as u64,
                what: format!(
                    "{} labels but {} holds {n} images",
                    labels.len(),
                    xp.display()
                ),
            });
        }
        Ok(Stl10 {
            images,
            labels,
            buf: vec![0; IMAGE],
        })
    }
}

impl Source for Stl10 {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn image_shape(&self) -> [usize; 3] {
        [3, SIDE, SIDE]
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn read(&mut self, index: usize, out: &mut [f32]) -> Result<u8, DataError> {
        self.images.read_at((index * IMAGE) as u64, &mut self.buf)?;
        for (src, dst) in self
            .buf
            .chunks_exact(PLANE)
            .zip(out.chunks_exact_mut(PLANE))
        {
            // Column-major source: consecutive bytes walk down a column.
            for (x, column) in src.chunks_exact(SIDE).enumerate() {
                for (y, &b) in column.iter().enumerate() {
                    dst[y * SIDE + x] = f32::from(b) / 255.0;
                }
            }
        }
        Ok(self.labels[index])
    }
}

#[cfg(test)]
mod tests {
    use super::{IMAGE, PLANE, SIDE};
    use crate::data::{open, DataError, DataSpec, Dataset, Split};
    use std::path::Path;

    /// Pixel byte of image `img` at channel `c`, row `y`, column `x`: not symmetric in `x` and `y`, so a
    /// transposition shows.
    fn px(img: usize, c: usize, y: usize, x: usize) -> u8 {
        ((img * 11 + c * 40 + y * 7 + x * 2) % 256) as u8
    }

    /// Images in the official layout: per channel, column after column.
    fn images(first: usize, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n * IMAGE);
        for img in first..first + n {
            for c in 0..3 {
                for x in 0..SIDE {
                    for y in 0..SIDE {
                        v.push(px(img, c, y, x));
                    }
                }
            }
        }
        v
    }

    fn write(dir: &Path) {
        std::fs::write(dir.join("train_X.bin"), images(0, 3)).unwrap();
        std::fs::write(dir.join("train_y.bin"), [1u8, 10, 4]).unwrap();
        std::fs::write(dir.join("test_X.bin"), images(50, 2)).unwrap();
        std::fs::write(dir.join("test_y.bin"), [7u8, 2]).unwrap();
    }

    fn spec(dir: &Path) -> DataSpec {
        format!("stl10:{}", dir.display()).parse().unwrap()
    }

    fn assert_image(got: &[f32], img: usize, d: &dyn Dataset) {
        let n = d.normalization();
        for c in 0..3 {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let want = (f32::from(px(img, c, y, x)) / 255.0 - n.mean[c]) / n.std[c];
                    let v = got[c * PLANE + y * SIDE + x];
                    assert!(
                        (v - want).abs() < 1e-5,
                        "img {img} c{c} y{y} x{x}: {v} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn column_major_pixels_land_in_nchw_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("stl10_binary");
        std::fs::create_dir(&sub).unwrap();
        write(&sub);
        let mut d = open(&spec(tmp.path()), Split::Train).unwrap();
        assert_eq!(
            (d.len(), d.image_shape(), d.classes()),
            (3, [3, 96, 96], 10)
        );
        assert_eq!(d.normalization().mean, vec![0.4467, 0.4398, 0.4066]);
        let b = d.next_batch(2).unwrap().unwrap();
        assert_eq!((b.len, b.labels.clone()), (2, vec![0, 9]));
        assert_image(&b.images[..IMAGE], 0, d.as_ref());
        assert_image(&b.images[IMAGE..], 1, d.as_ref());
        let b = d.next_batch(2).unwrap().unwrap();
        assert_eq!((b.len, b.labels.clone()), (1, vec![3]));
        assert_image(&b.images, 2, d.as_ref());
        assert!(d.next_batch(2).unwrap().is_none());
        d.reset();
        assert_eq!(d.next_batch(5).unwrap().unwrap().labels, vec![0, 9, 3]);

        let mut img = vec![0.0; IMAGE];
        assert_eq!(d.get(1, &mut img).unwrap(), 9);
        assert_image(&img, 1, d.as_ref());

        let mut t = open(&spec(&sub), Split::Test).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(1, &mut img).unwrap(), 1);
        assert_image(&img, 51, t.as_ref());
        assert_eq!(t.get(0, &mut img).unwrap(), 6);
        assert_image(&img, 50, t.as_ref());
    }

    #[test]
    fn bad_files_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path());

        std::fs::write(tmp.path().join("train_y.bin"), [1u8, 0, 4]).unwrap();
        let e = open(&spec(tmp.path()), Split::Train).err().unwrap();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    label: 0,
                    offset: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("train_y.bin"), "{e}");

        // Three labels, two and a half images.
        std::fs::write(tmp.path().join("train_y.bin"), [1u8, 2, 4]).unwrap();
        let mut x = images(0, 3);
        x.truncate(2 * IMAGE + 100);
        std::fs::write(tmp.path().join("train_X.bin"), &x).unwrap();
        let e = open(&spec(tmp.path()), Split::Train).err().unwrap();
        let off = (2 * IMAGE + 100) as u64;
        assert!(
            matches!(e, DataError::Truncated { offset, .. } if offset == off),
            "{e}"
        );
        assert!(e.to_string().contains("train_X.bin"), "{e}");

        // Three labels, two whole images.
        x.truncate(2 * IMAGE);
        std::fs::write(tmp.path().join("train_X.bin"), &x).unwrap();
        let e = open(&spec(tmp.path()), Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("2 images") && e.contains("3 labels"), "{e}");

        std::fs::remove_file(tmp.path().join("test_y.bin")).unwrap();
        let e = open(&spec(tmp.path()), Split::Test)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("test_y.bin") && e.contains("train_X.bin"), "{e}");
    }
}
