//! The learning rate over a run: constant (the paper's) or a linear warm-up then a half cosine
//! down to a floor (the small default models').

use serde::{Deserialize, Serialize};

/// Warm-up iterations of a cosine schedule unless told otherwise.
pub const COSINE_WARMUP: u64 = 200;
/// Where a cosine schedule ends unless told otherwise, as a fraction of the peak rate.
pub const COSINE_FINAL_FRACTION: f64 = 0.05;

/// The learning rate over a run of `iterations` iterations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LrSchedule {
    /// `lr` at every iteration (the paper's).
    #[default]
    Constant,
    /// A linear warm-up from 0 over `warmup` iterations, then a half cosine from `lr` down to
    /// `final_fraction × lr` at the last iteration.
    Cosine { warmup: u64, final_fraction: f64 },
}

impl LrSchedule {
    /// The cosine schedule with [`COSINE_WARMUP`] warm-up iterations, down to
    /// [`COSINE_FINAL_FRACTION`] of the peak rate.
    pub const fn cosine() -> Self {
        Self::Cosine {
            warmup: COSINE_WARMUP,
            final_fraction: COSINE_FINAL_FRACTION,
        }
    }

    /// The learning rate of iteration `i` (0-based) of a run of `iterations` iterations at
    /// peak rate `lr`.
    pub fn rate(&self, lr: f64, iterations: u64, i: u64) -> f64 {
        match *self {
            Self::Constant => lr,
            Self::Cosine {
                warmup,
                final_fraction,
            } => {
                if i < warmup {
                    return lr * (i + 1) as f64 / warmup as f64;
                }
                let span = iterations.saturating_sub(warmup).max(1) as f64;
                let progress = ((i - warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                lr * (final_fraction + (1.0 - final_fraction) * cos)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    #[test]
    fn the_cosine_schedule_warms_up_then_decays_to_its_floor() {
        let cosine = LrSchedule::Cosine {
            warmup: 10,
            final_fraction: 0.1,
        };
        let lr_at = |i| cosine.rate(1e-3, 110, i);
        assert!((lr_at(0) - 1e-4).abs() < 1e-12);
        assert!((lr_at(9) - 1e-3).abs() < 1e-12);
        assert!((lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((lr_at(60) - 0.55e-3).abs() < 1e-12, "{}", lr_at(60));
        assert!((lr_at(110) - 1e-4).abs() < 1e-12);
        assert!(
            (lr_at(500) - 1e-4).abs() < 1e-12,
            "past the end it stays at the floor"
        );
        let lrs: Vec<f64> = (10..110).map(lr_at).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(LrSchedule::Constant.rate(1e-4, 5, 3), 1e-4);
    }
}
