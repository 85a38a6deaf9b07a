//! A training job's optimisation settings ([`TrainOptions`]) and the defaults shared by every
//! job. Each job's own options live beside it (`jobs/`, `gan/`); the results behind each
//! default are in `docs/distillation.md`.
//!
//! The paper's values (Kim et al., CVPR 2025, after DiT): AdamW at lr 1e-4 without weight decay,
//! gradient-norm clip 1, EMA decay 0.9999, batch 64.

use serde::{Deserialize, Serialize};

use crate::train::schedule::LrSchedule;

/// The paper's learning rate (AdamW, no weight decay).
pub const PAPER_LR: f64 = 1e-4;
/// The paper's EMA decay. With the warm-up `min(decay, (1+i)/(10+i))` it only binds after
/// ~9000 iterations, so shorter runs average the same way at 0.999.
pub const PAPER_EMA_DECAY: f64 = 0.9999;
/// The paper's global gradient-norm clip.
pub const PAPER_GRAD_CLIP: f32 = 1.0;
/// The paper's (and DiT's) batch size.
pub const PAPER_BATCH: usize = 64;
/// Batch of the small default students' distillation and adversarial stage: half the paper's,
/// for the 2-core budget.
pub const SMALL_DISTILL_BATCH: usize = 32;
/// EMA decay of the small default students: an average over the last ~1000 iterations (the
/// paper's 0.9999 averages over 10k, longer than the small runs can use).
pub const SMALL_DISTILL_EMA: f64 = 0.999;

/// Optimisation settings of one training job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub iterations: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Target EMA decay; early on the decay is min(decay, (1+i)/(10+i)).
    pub ema_decay: f64,
    /// Global gradient-norm bound (0 = none).
    pub grad_clip: f32,
    pub seed: u64,
    /// How the learning rate moves over the run (checkpoints before it existed: constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
}

impl TrainOptions {
    /// The paper's optimisation for `iterations` iterations.
    pub fn paper(iterations: u64) -> Self {
        Self {
            iterations,
            batch_size: PAPER_BATCH,
            lr: PAPER_LR,
            ema_decay: PAPER_EMA_DECAY,
            grad_clip: PAPER_GRAD_CLIP,
            seed: 0,
            lr_schedule: LrSchedule::Constant,
        }
    }

    /// The learning rate of iteration `i` (0-based).
    pub fn lr_at(&self, i: u64) -> f64 {
        self.lr_schedule.rate(self.lr, self.iterations, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ema::ema_decay_at;

    #[test]
    fn the_paper_ema_equals_0_999_below_nine_thousand_iterations() {
        for i in [0, 10, 1500, 8000, 8989] {
            assert_eq!(ema_decay_at(PAPER_EMA_DECAY, i), ema_decay_at(0.999, i));
        }
        assert!(ema_decay_at(PAPER_EMA_DECAY, 20_000) > 0.999);
    }
}
