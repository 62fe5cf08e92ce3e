//! Seeded synthetic images: the same spec (seed included) gives the same data, on any machine.
//!
//! Each class has a pattern: per channel, a mean offset and a low-frequency sine grating (frequencies and phase
//! drawn from the seed). An image is its class pattern plus independent noise (std ≈ 0.1), clamped to `[0, 1]`,
//! so the classes are learnable (a nearest-class-mean classifier separates them) but not trivially identical.
//! The train and test splits share the class patterns and differ in their images. Nothing is stored: image
//! `i` is computed from `(seed, split, i)`, so random access is as cheap as sequential.

use super::spec::SyntheticSpec;
use super::{DataError, Normalization, Source, Split};

/// Maps `[0, 1]` to `[-2, 2]`; the generated pixels have a standard deviation of about 0.2.
pub(crate) fn normalization(channels: usize) -> Normalization {
    Normalization {
        mean: vec![0.5; channels],
        std: vec![0.25; channels],
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: small, fast and fully specified, so the data does not change with a dependency's version.
struct Rng(u64);

impl Rng {
    fn new(key: u64) -> Self {
        Rng(mix(key))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub(crate) struct Synthetic {
    n: usize,
    shape: [usize; 3],
    classes: usize,
    seed: u64,
    split: u64,
}

impl Synthetic {
    pub(crate) fn new(spec: &SyntheticSpec, split: Split) -> Self {
        Synthetic {
            n: spec.n,
            shape: spec.shape,
            classes: spec.classes,
            seed: spec.seed,
            split: match split {
                Split::Train => 0x7124_1A11,
                Split::Test => 0x7E57_7E57,
            },
        }
    }
}

impl Source for Synthetic {
    fn len(&self) -> usize {
        self.n
    }

    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn read(&mut self, index: usize, out: &mut [f32]) -> Result<u8, DataError> {
        let [_, h, w] = self.shape;
        let mut rng = Rng::new(self.seed ^ mix(self.split ^ mix(index as u64)));
        let label = (rng.next() % self.classes as u64) as u8;
        let tau = std::f32::consts::TAU;
        for (c, plane) in out.chunks_exact_mut(h * w).enumerate() {
            // The class pattern of this channel: the same for every image of the class, in both splits.
            let mut class =
                Rng::new(mix(self.seed ^ 0x0C1A_55E5) ^ ((u64::from(label) << 32) | c as u64));
            let offset = (class.unit() - 0.5) * 0.4;
            let fy = (1 + class.next() % 3) as f32 / h as f32;
            let fx = (1 + class.next() % 3) as f32 / w as f32;
            let phase = class.unit() * tau;
            for (i, v) in plane.iter_mut().enumerate() {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                let pattern = 0.5 + offset + 0.2 * (tau * (fy * y + fx * x) + phase).sin();
                // Sum of three uniforms: bell-shaped, std 0.1 after scaling.
                let noise = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 0.2;
                *v = (pattern + noise).clamp(0.0, 1.0);
            }
        }
        Ok(label)
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{open, DataSpec, Split};

    fn all(spec: &str, split: Split) -> (Vec<f32>, Vec<i64>) {
        let mut d = open(&spec.parse::<DataSpec>().unwrap(), split).unwrap();
        let b = d.next_batch(usize::MAX).unwrap().unwrap();
        (b.images, b.labels)
    }

    #[test]
    fn same_seed_same_data() {
        let a = all("synthetic:20:3x8x8:10:5", Split::Train);
        assert_eq!(a, all("synthetic:20:3x8x8:10:5", Split::Train));
        assert_ne!(a, all("synthetic:20:3x8x8:10:6", Split::Train));
        assert_ne!(a, all("synthetic:20:3x8x8:10:5", Split::Test));
        // A prefix of a longer set is the shorter set.
        let long = all("synthetic:30:3x8x8:10:5", Split::Train);
        assert_eq!(&long.0[..a.0.len()], &a.0[..]);
        // Labels cover the classes.
        let (_, labels) = all("synthetic:200:1x4x4:10", Split::Train);
        assert!((0..10).all(|c| labels.contains(&c)));
        assert!(labels.iter().all(|l| (0..10).contains(l)));
    }

    #[test]
    fn defaults_batches_and_get() {
        let mut d = open(&"synthetic:5".parse().unwrap(), Split::Test).unwrap();
        assert_eq!(
            (d.len(), d.image_shape(), d.classes()),
            (5, [3, 32, 32], 10)
        );
        assert_eq!(d.normalization().mean, vec![0.5; 3]);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| d.next_batch(2).unwrap().map(|b| b.len)).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        d.reset();
        let b = d.next_batch(5).unwrap().unwrap();
        let mut img = vec![0.0; 3072];
        for i in [4, 0, 2] {
            assert_eq!(i64::from(d.get(i, &mut img).unwrap()), b.labels[i]);
            assert_eq!(&img[..], &b.images[i * 3072..(i + 1) * 3072]);
        }
        assert!(b.images.iter().all(|v| (-2.0..=2.0).contains(v)));
    }

    /// A nearest-class-mean classifier fitted on train classifies test: the classes are learnable.
    #[test]
    fn classes_are_learnable() {
        let (c, il) = (10usize, 3 * 8 * 8);
        let (xs, ys) = all("synthetic:400:3x8x8:10:1", Split::Train);
        let mut means = vec![vec![0f32; il]; c];
        let mut counts = vec![0usize; c];
        for (x, &y) in xs.chunks(il).zip(&ys) {
            counts[y as usize] += 1;
            for (m, v) in means[y as usize].iter_mut().zip(x) {
                *m += v;
            }
        }
        for (m, &n) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= n.max(1) as f32);
        }
        let (xt, yt) = all("synthetic:200:3x8x8:10:1", Split::Test);
        let correct = xt
            .chunks(il)
            .zip(&yt)
            .filter(|(x, &y)| {
                let dist =
                    |m: &Vec<f32>| m.iter().zip(*x).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
                let best = (0..c)
                    .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                    .unwrap();
                best as i64 == y
            })
            .count();
        assert!(correct >= 190, "{correct} of 200");
    }
}
