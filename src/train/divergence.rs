//! Watching the training loss for divergence: a non-finite loss stops the run (the caller's error names the
//! step, the loss and the learning rate); a loss that keeps growing far above where it started prints one
//! warning. Both carry the same hint ([`lr_hint`]).
//!
//! "Far above": the loss smoothed over steps (an exponential moving average) exceeds [`GROWTH_FACTOR`] times the
//! starting loss, and by at least [`MIN_GROWTH`] nats, so that the ordinary wobble of a loss that has already
//! become small (a resumed run near its end) is not mistaken for divergence. The starting loss is the mean of
//! the first [`START_STEPS`] steps of this invocation, short of any step whose loss is already beyond
//! [`GROWTH_FACTOR`] times the mean before it: a learning rate far too high blows the loss up in the second
//! step, and that is no start.

use rl_passes::training::Optimizer;

/// Steps whose mean is the starting loss.
pub const START_STEPS: usize = 5;
/// How many times the starting loss the smoothed loss must reach.
pub const GROWTH_FACTOR: f64 = 10.0;
/// How many nats above the starting loss the smoothed loss must also be.
pub const MIN_GROWTH: f64 = 1.0;
/// Weight of the newest step in the moving average.
const SMOOTHING: f64 = 0.2;

/// What to try when the loss diverges with `optimizer` at base learning rate `lr`.
pub fn lr_hint(optimizer: &Optimizer, lr: f64) -> String {
    match optimizer {
        Optimizer::AdamW { .. } => format!(
            "lower --lr (the base rate is {lr:e}; AdamW usually trains at 1e-3) or warm up with --warmup N"
        ),
        Optimizer::Sgd { .. } => format!(
            "lower --lr (the base rate is {lr:e}; SGD with momentum usually trains at 0.1 or below) or warm up \
             with --warmup N"
        ),
    }
}

/// Follows the loss step by step; says once when it has grown far past its start.
#[derive(Debug, Default)]
pub struct LossWatch {
    /// The losses the start is the mean of.
    first: Vec<f64>,
    /// Whether `first` is complete.
    started: bool,
    smoothed: Option<f64>,
    warned: bool,
}

/// The loss has grown far past its start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Mean loss of the first steps.
    pub start: f64,
    /// The smoothed loss now.
    pub now: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl LossWatch {
    /// Records a finite loss; returns the growth the first time the smoothed loss passes the threshold.
    pub fn observe(&mut self, loss: f64) -> Option<Growth> {
        let smoothed = match self.smoothed {
            Some(s) => s + SMOOTHING * (loss - s),
            None => loss,
        };
        self.smoothed = Some(smoothed);
        if !self.started {
            if self.first.is_empty() || loss <= GROWTH_FACTOR * mean(&self.first) {
                self.first.push(loss);
            } else {
                self.started = true;
            }
            self.started |= self.first.len() == START_STEPS;
        }
        let start = mean(&self.first);
        if self.warned || smoothed <= GROWTH_FACTOR * start || smoothed < start + MIN_GROWTH {
            return None;
        }
        self.warned = true;
        Some(Growth {
            start,
            now: smoothed,
        })
    }
}

/// A loss for a message: four decimals, or scientific notation when large.
pub fn show_loss(v: f64) -> String {
    if v.abs() < 1e5 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_when_the_smoothed_loss_grows_tenfold() {
        let mut w = LossWatch::default();
        for _ in 0..START_STEPS {
            assert_eq!(w.observe(1.0), None);
        }
        // A spike alone is smoothed away.
        assert_eq!(w.observe(12.0), None);
        assert_eq!(w.observe(1.0), None);
        let mut warned = Vec::new();
        for _ in 0..50 {
            warned.extend(w.observe(100.0));
        }
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].start, 1.0);
        assert!(warned[0].now > 10.0 && warned[0].now <= 100.0);
    }

    #[test]
    fn a_loss_that_blows_up_at_once_is_compared_with_the_first_step() {
        let mut w = LossWatch::default();
        assert_eq!(w.observe(1.4), None);
        let g = w.observe(1e4).expect("warned at the second step");
        assert_eq!(g.start, 1.4);
        for _ in 0..10 {
            assert_eq!(w.observe(1e6), None, "once");
        }
    }

    #[test]
    fn a_small_loss_that_wobbles_is_not_divergence() {
        let mut w = LossWatch::default();
        for _ in 0..START_STEPS {
            w.observe(0.01);
        }
        for _ in 0..50 {
            assert_eq!(w.observe(0.5), None);
        }
    }

    #[test]
    fn the_hint_names_the_rate_and_the_usual_one() {
        let h = lr_hint(&Optimizer::adamw(), 0.1);
        assert!(
            h.contains("--lr") && h.contains("1e-3") && h.contains("1e-1"),
            "{h}"
        );
        let h = lr_hint(&Optimizer::sgd(0.9, false, 5e-4), 5.0);
        assert!(
            h.contains("--lr") && h.contains("0.1") && h.contains("5e0"),
            "{h}"
        );
    }
}
