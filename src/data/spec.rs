//! `--data SPEC`: which dataset, and where.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::DataError;

/// The forms [`DataSpec`] accepts, for messages.
pub const SPEC_FORMS: &str =
    "cifar10:DIR, cifar100:DIR, stl10:DIR, mnist:DIR, synthetic:N[:CxHxW[:CLASSES[:SEED]]]";

/// A dataset and where to find it, parsed from `KIND:ARGS` (see [`SPEC_FORMS`]).
///
/// `DIR` is everything after the first `:` (so it may itself contain `:`); it is the folder holding the files or
/// its parent (`cifar-10-batches-bin/`, `cifar-100-binary/`, `stl10_binary/`, `MNIST/raw/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    Cifar10 { dir: PathBuf },
    Cifar100 { dir: PathBuf },
    Stl10 { dir: PathBuf },
    Mnist { dir: PathBuf },
    Synthetic(SyntheticSpec),
}

/// `synthetic:N[:CxHxW[:CLASSES[:SEED]]]`: `N` images per split, default `3x32x32`, 10 classes, seed 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub n: usize,
    pub shape: [usize; 3],
    pub classes: usize,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            n: 1000,
            shape: [3, 32, 32],
            classes: 10,
            seed: 0,
        }
    }
}

impl DataSpec {
    /// `cifar10`, `cifar100`, `stl10`, `mnist` or `synthetic`.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSpec::Cifar10 { .. } => "cifar10",
            DataSpec::Cifar100 { .. } => "cifar100",
            DataSpec::Stl10 { .. } => "stl10",
            DataSpec::Mnist { .. } => "mnist",
            DataSpec::Synthetic(_) => "synthetic",
        }
    }
}

/// Labels are bytes, so at most 256 classes.
const MAX_CLASSES: usize = 256;

impl FromStr for DataSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Spec {
            spec: s.to_owned(),
            reason,
        };
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(bad("no `:` after the dataset name".into()));
        };
        let dir = || {
            if rest.is_empty() {
                Err(bad(format!("`{kind}` needs a folder after the `:`")))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match kind {
            "cifar10" => Ok(DataSpec::Cifar10 { dir: dir()? }),
            "cifar100" => Ok(DataSpec::Cifar100 { dir: dir()? }),
            "stl10" => Ok(DataSpec::Stl10 { dir: dir()? }),
            "mnist" => Ok(DataSpec::Mnist { dir: dir()? }),
            "synthetic" => parse_synthetic(rest).map(DataSpec::Synthetic).map_err(bad),
            _ => Err(bad(format!("unknown dataset `{kind}`"))),
        }
    }
}

impl SyntheticSpec {
    /// Positive count and dimensions, at most 2^30 values per image, 1..=256 classes (labels are bytes).
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 {
            return Err("image count N must be positive".into());
        }
        let [c, h, w] = self.shape;
        if self.shape.contains(&0) {
            return Err(format!("shape {c}x{h}x{w} has a zero dimension"));
        }
        self.shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&n| n <= 1 << 30)
            .ok_or_else(|| format!("shape {c}x{h}x{w} is too large"))?;
        if !(1..=MAX_CLASSES).contains(&self.classes) {
            return Err(format!(
                "class count {} is not between 1 and {MAX_CLASSES}",
                self.classes
            ));
        }
        Ok(())
    }
}

fn parse_synthetic(rest: &str) -> Result<SyntheticSpec, String> {
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() > 4 {
        return Err(format!(
            "`synthetic` takes at most 4 fields, got {}",
            parts.len()
        ));
    }
    let mut spec = SyntheticSpec::default();
    let num = |what: &str, v: &str| -> Result<usize, String> {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} `{v}` is not a positive whole number"))
    };
    spec.n = num("image count N", parts[0])?;
    if let Some(shape) = parts.get(1) {
        let d: Vec<&str> = shape.split(['x', 'X', '×']).collect();
        let [c, h, w] = d[..] else {
            return Err(format!("shape `{shape}` is not CxHxW"));
        };
        spec.shape = [
            num("channel count", c)?,
            num("height", h)?,
            num("width", w)?,
        ];
    }
    if let Some(c) = parts.get(2) {
        spec.classes = num("class count", c)?;
    }
    if let Some(seed) = parts.get(3) {
        spec.seed = seed
            .parse()
            .map_err(|_| format!("seed `{seed}` is not a whole number"))?;
    }
    spec.validate()?;
    Ok(spec)
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Cifar10 { dir }
            | DataSpec::Cifar100 { dir }
            | DataSpec::Stl10 { dir }
            | DataSpec::Mnist { dir } => write!(f, "{}:{}", self.kind(), dir.display()),
            DataSpec::Synthetic(s) => {
                let [c, h, w] = s.shape;
                write!(f, "synthetic:{}:{c}x{h}x{w}:{}:{}", s.n, s.classes, s.seed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DataSpec {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<DataSpec>().unwrap_err().to_string()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            parse("cifar10:/d/c10"),
            DataSpec::Cifar10 {
                dir: "/d/c10".into()
            }
        );
        assert_eq!(
            parse("cifar100:rel/dir"),
            DataSpec::Cifar100 {
                dir: "rel/dir".into()
            }
        );
        assert_eq!(parse("stl10:s"), DataSpec::Stl10 { dir: "s".into() });
        // Everything after the first `:` is the folder.
        assert_eq!(
            parse("mnist:C:\\data"),
            DataSpec::Mnist {
                dir: "C:\\data".into()
            }
        );
        assert_eq!(
            parse("synthetic:64"),
            DataSpec::Synthetic(SyntheticSpec {
                n: 64,
                ..Default::default()
            })
        );
        assert_eq!(
            parse("synthetic:8:1x28x28"),
            DataSpec::Synthetic(SyntheticSpec {
                n: 8,
                shape: [1, 28, 28],
                classes: 10,
                seed: 0
            })
        );
        assert_eq!(
            parse("synthetic:8:3x224x224:100:7"),
            DataSpec::Synthetic(SyntheticSpec {
                n: 8,
                shape: [3, 224, 224],
                classes: 100,
                seed: 7
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["cifar10:/a/b", "mnist:x", "synthetic:8:3x224x224:100:7"] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn errors_name_the_spec_and_list_valid_forms() {
        for (s, why) in [
            ("cifar10", "no `:`"),
            ("cifar10:", "needs a folder"),
            ("imagenet:/d", "unknown dataset `imagenet`"),
            ("synthetic:", "image count N `` is not"),
            ("synthetic:0", "image count N `0`"),
            ("synthetic:10:3x32", "shape `3x32` is not CxHxW"),
            ("synthetic:10:3x0x32", "height `0`"),
            ("synthetic:10:3x32x32:300", "not between 1 and 256"),
            ("synthetic:10:3x32x32:10:-1", "seed `-1`"),
            ("synthetic:10:3x32x32:10:1:2", "at most 4 fields"),
            ("synthetic:10:99999x99999x99999", "too large"),
        ] {
            let e = err(s);
            assert!(e.contains(&format!("`{s}`")), "{e}");
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.contains(SPEC_FORMS), "{e}");
        }
    }
}
