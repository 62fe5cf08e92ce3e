//! Learning-rate schedules, and the seeded randomness of training (shuffling, augmentation).
//!
//! Every random choice is a pure function of `(seed, epoch, position)`, so a run resumed at any step draws
//! exactly what the uninterrupted run drew: no generator state has to be saved.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay per step from the base rate to 0 at the last step.
    Cosine,
    /// ×0.1 at 50 % and again at 75 % of the steps.
    Step,
    /// The base rate throughout.
    Constant,
}

/// The learning rate at `step` (0-based) of `total` steps, after a linear warm-up over `warmup` steps
/// (step k of the warm-up uses `base·(k+1)/warmup`).
pub fn learning_rate(schedule: Schedule, base: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = (step - warmup) as f64 / span as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()),
        Schedule::Step => {
            if t >= 0.75 {
                base * 0.01
            } else if t >= 0.5 {
                base * 0.1
            } else {
                base
            }
        }
    }
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 keyed by a tuple of numbers: fully specified, so runs do not change with a dependency's version.
pub struct Rng(u64);

impl Rng {
    pub fn keyed(keys: &[u64]) -> Rng {
        Rng(keys
            .iter()
            .fold(0x5EED_u64, |acc, &k| mix(acc ^ k.wrapping_add(0x9E37_79B9))))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }
}

const SHUFFLE: u64 = 1;
const AUGMENT: u64 = 2;

/// The order of the `n` training images in `epoch` (Fisher–Yates).
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = Rng::keyed(&[seed, SHUFFLE, epoch as u64]);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

/// Pads each CHW image of the batch by 4 (zeros, i.e. the mean after normalization), crops it back to H×W at
/// a random offset and flips it horizontally with probability ½; the draws depend on `(seed, epoch, step)`.
pub fn crop_flip(images: &mut [f32], shape: [usize; 3], seed: u64, epoch: usize, step: u64) {
    const PAD: usize = 4;
    let [c, h, w] = shape;
    let len = c * h * w;
    if len == 0 {
        return;
    }
    let mut rng = Rng::keyed(&[seed, AUGMENT, epoch as u64, step]);
    let mut out = vec![0f32; len];
    for image in images.chunks_mut(len) {
        let dy = rng.below(2 * PAD + 1) as isize - PAD as isize;
        let dx = rng.below(2 * PAD + 1) as isize - PAD as isize;
        let flip = rng.below(2) == 1;
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xo = if flip { w - 1 - x } else { x };
                    let sx = xo as isize + dx;
                    out[(ch * h + y) * w + x] =
                        if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                            0.0
                        } else {
                            image[(ch * h + sy as usize) * w + sx as usize]
                        };
                }
            }
        }
        image.copy_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let lr = |s, step| learning_rate(s, 0.1, step, 100, 0);
        assert_eq!(lr(Schedule::Constant, 99), 0.1);
        assert!((lr(Schedule::Cosine, 0) - 0.1).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 50) - 0.05).abs() < 1e-12);
        assert!(lr(Schedule::Cosine, 99) < 1e-4);
        assert_eq!(lr(Schedule::Step, 49), 0.1);
        assert!((lr(Schedule::Step, 50) - 0.01).abs() < 1e-12);
        assert!((lr(Schedule::Step, 75) - 0.001).abs() < 1e-12);
        // Warm-up: linear up to the base rate, then the schedule over the remaining steps.
        assert!((learning_rate(Schedule::Cosine, 0.1, 0, 100, 10) - 0.01).abs() < 1e-12);
        assert!((learning_rate(Schedule::Cosine, 0.1, 9, 100, 10) - 0.1).abs() < 1e-12);
        assert!((learning_rate(Schedule::Cosine, 0.1, 10, 100, 10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn shuffling_is_a_seeded_permutation() {
        let a = epoch_order(7, 3, 100);
        assert_eq!(a, epoch_order(7, 3, 100));
        assert_ne!(a, epoch_order(7, 4, 100));
        assert_ne!(a, epoch_order(8, 3, 100));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn crop_flip_moves_pixels_and_is_seeded() {
        let shape = [1, 8, 8];
        let base: Vec<f32> = (0..128).map(|v| v as f32 + 1.0).collect();
        let mut a = base.clone();
        crop_flip(&mut a, shape, 1, 0, 0);
        let mut b = base.clone();
        crop_flip(&mut b, shape, 1, 0, 0);
        assert_eq!(a, b);
        assert_ne!(a, base);
        // Every kept value comes from the same image.
        assert!(a[..64]
            .iter()
            .all(|&v| v == 0.0 || (1.0..=64.0).contains(&v)));
    }
}
