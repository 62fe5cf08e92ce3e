//! Dataset loaders for evaluation and training: CIFAR-10/100 and STL-10 (official binary versions), MNIST (IDX,
//! gzipped or not) and seeded synthetic data.
//!
//! A dataset is chosen with a [`DataSpec`] (`--data cifar10:DIR`, `--data synthetic:256:3x32x32:10`, …) and a
//! [`Split`], and opened with [`open`]. Images come out as `f32` in NCHW order, scaled to `[0, 1]` and then
//! normalized per channel (`(x - mean) / std`, see [`Normalization`]).
//!
//! The large sets are not loaded into memory: records are read through a buffered file handle, sequentially for
//! [`Dataset::next_batch`] and with a seek for the random access of [`Dataset::get`]. Files are checked when they
//! are opened (sizes, magic numbers, counts), so a truncated download is reported before the first batch.

mod cifar;
mod mnist;
mod records;
mod spec;
mod stl10;
mod synthetic;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use spec::{DataSpec, SyntheticSpec, SPEC_FORMS};

/// What can go wrong opening or reading a dataset. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("invalid data spec `{spec}`: {reason}; valid forms: {SPEC_FORMS}")]
    Spec { spec: String, reason: String },
    #[error("invalid split `{0}`: expected `train` or `test`")]
    Split(String),
    #[error("{dataset}: missing file {}; expected {expected}", path.display())]
    MissingFile {
        dataset: &'static str,
        path: PathBuf,
        expected: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: file ended at byte offset {offset}: {what}", path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: bad magic number {found} at byte offset 0 (expected {expected}: {what})", path.display())]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    #[error("{}: corrupt at byte offset {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: label {label} at byte offset {offset} is out of range (expected {expected})", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        offset: u64,
        label: u8,
        expected: String,
    },
    #[error("data is {} but the model expects {}", dims(data), dims(model))]
    ShapeMismatch { data: Vec<usize>, model: Vec<usize> },
    #[error("image index {index} is out of range: the dataset has {len} images")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("image buffer holds {got} values but one image is {expected} values")]
    BufferSize { got: usize, expected: usize },
    #[error("invalid normalization: {0}")]
    Normalization(String),
    #[error("batch size must be at least 1")]
    ZeroBatch,
}

/// `3×32×32`, the way shapes are written in messages.
fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Which part of a dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(DataError::Split(s.to_owned())),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Per-channel normalization applied to pixels scaled to `[0, 1]`: `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checked constructor: equal, non-zero lengths, finite means, finite positive standard deviations.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        let n = Normalization { mean, std };
        n.validate()?;
        Ok(n)
    }

    /// Leaves `[0, 1]` pixels as they are.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    fn validate(&self) -> Result<(), DataError> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(DataError::Normalization(format!(
                "{} means and {} standard deviations (need one of each per channel)",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Normalization(format!("mean {m} is not finite")));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Normalization(format!(
                "standard deviation {s} is not a finite positive number"
            )));
        }
        Ok(())
    }

    /// Normalizes one CHW image in place.
    fn apply(&self, image: &mut [f32]) {
        let plane = image.len() / self.mean.len();
        for ((chunk, &m), &s) in image.chunks_mut(plane).zip(&self.mean).zip(&self.std) {
            let inv = 1.0 / s;
            for x in chunk {
                *x = (*x - m) * inv;
            }
        }
    }
}

/// `MEAN/STD` with comma-separated per-channel values, e.g. `0.4914,0.4822,0.4465/0.2470,0.2435,0.2616`.
impl FromStr for Normalization {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |why: String| {
            DataError::Normalization(format!(
                "`{s}`: {why} (expected MEAN/STD, comma-separated per channel, e.g. 0.5,0.5,0.5/0.25,0.25,0.25)"
            ))
        };
        let (mean, std) = s.split_once('/').ok_or_else(|| bad("no `/`".into()))?;
        let list = |part: &str| -> Result<Vec<f32>, DataError> {
            part.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f32>()
                        .map_err(|_| bad(format!("`{v}` is not a number")))
                })
                .collect()
        };
        Normalization::new(list(mean)?, list(std)?)
    }
}

/// A batch of normalized images, NCHW, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len × C × H × W` values.
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// Number of images (the last batch of an epoch may be short).
    pub len: usize,
    /// `[C, H, W]` of each image.
    pub image_shape: [usize; 3],
}

impl Batch {
    /// `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        let [c, h, w] = self.image_shape;
        [self.len, c, h, w]
    }
}

/// A dataset split, read in order with [`next_batch`](Dataset::next_batch) or at random with
/// [`get`](Dataset::get) / [`gather`](Dataset::gather).
pub trait Dataset: Send {
    /// E.g. `cifar10 test`.
    fn name(&self) -> &str;
    /// Number of images.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `[C, H, W]`.
    fn image_shape(&self) -> [usize; 3];
    /// Values in one image, `C·H·W`.
    fn image_len(&self) -> usize {
        self.image_shape().iter().product()
    }
    /// Number of classes; labels are `0..classes`.
    fn classes(&self) -> usize;
    fn normalization(&self) -> &Normalization;
    /// Replaces the dataset's standard normalization; the channel count must match.
    fn set_normalization(&mut self, n: Normalization) -> Result<(), DataError>;
    /// Starts [`next_batch`](Dataset::next_batch) again from the first image.
    fn reset(&mut self);
    /// The next up to `max` images in order, `None` at the end. If reading fails the position does not move.
    fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, DataError>;
    /// Image `index`, normalized, written to `out_image` (`C·H·W` values); returns its label.
    fn get(&mut self, index: usize, out_image: &mut [f32]) -> Result<u8, DataError>;
    /// The images at `indices` (e.g. a shuffled slice of `0..len`) as one batch. Does not move `next_batch`.
    fn gather(&mut self, indices: &[usize]) -> Result<Batch, DataError> {
        let il = self.image_len();
        let mut images = vec![0.0; indices.len() * il];
        let mut labels = Vec::with_capacity(indices.len());
        for (&i, out) in indices.iter().zip(images.chunks_mut(il.max(1))) {
            labels.push(i64::from(self.get(i, out)?));
        }
        Ok(Batch {
            images,
            labels,
            len: indices.len(),
            image_shape: self.image_shape(),
        })
    }
}

/// A format's raw reader: images scaled to `[0, 1]`, no normalization, no bounds checks (done by [`Loader`]).
pub(crate) trait Source: Send {
    fn len(&self) -> usize;
    fn image_shape(&self) -> [usize; 3];
    fn classes(&self) -> usize;
    /// Writes image `index < len` (CHW, `[0, 1]`) into `out` (exactly one image long) and returns its label.
    fn read(&mut self, index: usize, out: &mut [f32]) -> Result<u8, DataError>;
}

/// The [`Dataset`] over any [`Source`]: normalization, bounds checks and the batch cursor.
pub(crate) struct Loader<S> {
    name: String,
    source: S,
    norm: Normalization,
    cursor: usize,
}

impl<S: Source> Loader<S> {
    pub(crate) fn new(name: String, source: S, norm: Normalization) -> Self {
        debug_assert_eq!(norm.channels(), source.image_shape()[0]);
        Loader {
            name,
            source,
            norm,
            cursor: 0,
        }
    }
}

impl<S: Source> Dataset for Loader<S> {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.source.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.source.image_shape()
    }
    fn classes(&self) -> usize {
        self.source.classes()
    }
    fn normalization(&self) -> &Normalization {
        &self.norm
    }
    fn set_normalization(&mut self, n: Normalization) -> Result<(), DataError> {
        n.validate()?;
        let c = self.image_shape()[0];
        if n.channels() != c {
            return Err(DataError::Normalization(format!(
                "{} has {c} channel(s) but the normalization has {}",
                self.name,
                n.channels()
            )));
        }
        self.norm = n;
        Ok(())
    }
    fn reset(&mut self) {
        self.cursor = 0;
    }
    fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, DataError> {
        if max == 0 {
            return Err(DataError::ZeroBatch);
        }
        let len = self.len();
        if self.cursor >= len {
            return Ok(None);
        }
        let n = max.min(len - self.cursor);
        let indices: Vec<usize> = (self.cursor..self.cursor + n).collect();
        let batch = self.gather(&indices)?;
        self.cursor += n;
        Ok(Some(batch))
    }
    fn get(&mut self, index: usize, out_image: &mut [f32]) -> Result<u8, DataError> {
        let len = self.len();
        if index >= len {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        let expected = self.image_len();
        if out_image.len() != expected {
            return Err(DataError::BufferSize {
                got: out_image.len(),
                expected,
            });
        }
        let label = self.source.read(index, out_image)?;
        self.norm.apply(out_image);
        Ok(label)
    }
}

/// Opens the `split` of the dataset named by `spec`, checking its files.
pub fn open(spec: &DataSpec, split: Split) -> Result<Box<dyn Dataset>, DataError> {
    let name = format!("{} {split}", spec.kind());
    Ok(match spec {
        DataSpec::Cifar10 { dir } => {
            let src = cifar::Cifar::open(cifar::Variant::Ten, dir, split)?;
            Box::new(Loader::new(name, src, cifar::Variant::Ten.normalization()))
        }
        DataSpec::Cifar100 { dir } => {
            let src = cifar::Cifar::open(cifar::Variant::Hundred, dir, split)?;
            Box::new(Loader::new(
                name,
                src,
                cifar::Variant::Hundred.normalization(),
            ))
        }
        DataSpec::Stl10 { dir } => Box::new(Loader::new(
            name,
            stl10::Stl10::open(dir, split)?,
            stl10::normalization(),
        )),
        DataSpec::Mnist { dir } => Box::new(Loader::new(
            name,
            mnist::Mnist::open(dir, split)?,
            mnist::normalization(),
        )),
        DataSpec::Synthetic(s) => {
            s.validate().map_err(|reason| DataError::Spec {
                spec: spec.to_string(),
                reason,
            })?;
            let src = synthetic::Synthetic::new(s, split);
            let norm = synthetic::normalization(s.shape[0]);
            Box::new(Loader::new(name, src, norm))
        }
    })
}

/// Checks that images of shape `data` (`[C, H, W]`) fit a model input of shape `model_input`: `[N, C, H, W]`
/// (the batch dimension is not compared), `[C, H, W]`, or flattened `[N, C·H·W]`.
pub fn check_model_shape(data: [usize; 3], model_input: &[usize]) -> Result<(), DataError> {
    let fits = match model_input {
        [_, c, h, w] | [c, h, w] => [*c, *h, *w] == data,
        [_, flat] => *flat == data.iter().product::<usize>(),
        _ => false,
    };
    if fits {
        return Ok(());
    }
    // Leave the batch dimension out of the message when there is one to leave out.
    let model = match model_input {
        [_, rest @ ..] if model_input.len() == 4 => rest.to_vec(),
        _ => model_input.to_vec(),
    };
    Err(DataError::ShapeMismatch {
        data: data.to_vec(),
        model,
    })
}

/// The folder holding a dataset's files: `dir` itself when one of `probe` is there, else `dir/sub` when one is
/// there, else `dir` (and opening the files reports which are missing).
fn resolve_dir(dir: &Path, subs: &[&str], probe: &[&str]) -> PathBuf {
    let has = |d: &Path| probe.iter().any(|f| d.join(f).is_file());
    if has(dir) {
        return dir.to_path_buf();
    }
    subs.iter()
        .map(|s| dir.join(s))
        .find(|d| has(d))
        .unwrap_or_else(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parses_and_prints() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
        assert_eq!(Split::Test.to_string(), "test");
        let e = "val".parse::<Split>().unwrap_err().to_string();
        assert!(
            e.contains("`val`") && e.contains("train") && e.contains("test"),
            "{e}"
        );
    }

    #[test]
    fn normalization_parses_and_validates() {
        let n: Normalization = "0.5,0.25/0.5, 0.125".parse().unwrap();
        assert_eq!(n.mean, vec![0.5, 0.25]);
        assert_eq!(n.std, vec![0.5, 0.125]);
        assert!("0.5/0".parse::<Normalization>().is_err());
        assert!("0.5,0.5/0.2".parse::<Normalization>().is_err());
        assert!("0.5".parse::<Normalization>().is_err());
        assert!("x/1".parse::<Normalization>().is_err());
        assert!(Normalization::new(vec![f32::NAN], vec![1.0]).is_err());
        let mut img = vec![1.0, 0.0, 0.5, 0.5];
        Normalization::new(vec![0.5, 0.25], vec![0.5, 0.25])
            .unwrap()
            .apply(&mut img);
        assert_eq!(img, vec![1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn model_shape_check() {
        assert!(check_model_shape([3, 32, 32], &[8, 3, 32, 32]).is_ok());
        assert!(check_model_shape([3, 32, 32], &[3, 32, 32]).is_ok());
        assert!(check_model_shape([1, 28, 28], &[1, 784]).is_ok());
        let e = check_model_shape([1, 28, 28], &[1, 3, 32, 32]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data is 1×28×28 but the model expects 3×32×32"
        );
        let e = check_model_shape([1, 28, 28], &[1, 10]).unwrap_err();
        assert_eq!(e.to_string(), "data is 1×28×28 but the model expects 1×10");
        assert!(check_model_shape([3, 32, 32], &[]).is_err());
    }

    #[test]
    fn a_hand_built_synthetic_spec_is_checked() {
        let spec = DataSpec::Synthetic(SyntheticSpec {
            classes: 0,
            ..Default::default()
        });
        let e = open(&spec, Split::Train).err().unwrap().to_string();
        assert!(e.contains("class count 0"), "{e}");
    }

    #[test]
    fn loader_checks_bounds_buffer_and_normalization_channels() {
        let spec: DataSpec = "synthetic:5:2x3x4:3".parse().unwrap();
        let mut d = open(&spec, Split::Train).unwrap();
        assert_eq!(d.name(), "synthetic train");
        let mut buf = vec![0.0; 24];
        assert!(matches!(
            d.get(5, &mut buf),
            Err(DataError::IndexOutOfRange { index: 5, len: 5 })
        ));
        assert!(matches!(
            d.get(0, &mut buf[..23]),
            Err(DataError::BufferSize {
                got: 23,
                expected: 24
            })
        ));
        assert!(matches!(d.next_batch(0), Err(DataError::ZeroBatch)));
        let e = d
            .set_normalization(Normalization::identity(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 channel(s)"), "{e}");
        d.set_normalization(Normalization::identity(2)).unwrap();
        d.get(0, &mut buf).unwrap();
        assert!(buf.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
