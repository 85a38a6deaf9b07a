//! Every training default, defined once. The CLI's flag defaults, the app's training tab and
//! `assets/train-defaults.sh` (which passes only what it sizes differently) all read them here.
//!
//! The paper's values (Kim et al., CVPR 2025, after DiT): AdamW at lr 1e-4 without weight decay,
//! gradient-norm clip 1, EMA decay 0.9999, batch 64, and DiT's label dropout 0.1 for guidance.
//! Where ARD Studio's small default models need another value it is named and says why.

use serde::{Deserialize, Serialize};

use crate::model::config::DitConfig;

/// The paper's learning rate (AdamW, no weight decay).
pub const PAPER_LR: f64 = 1e-4;
/// The paper's EMA decay. With the warm-up `min(decay, (1+i)/(10+i))` it only binds after
/// ~9000 iterations, so shorter runs average the same way at 0.999.
pub const PAPER_EMA_DECAY: f64 = 0.9999;
/// The paper's global gradient-norm clip.
pub const PAPER_GRAD_CLIP: f32 = 1.0;
/// The paper's (and DiT's) batch size.
pub const PAPER_BATCH: usize = 64;
/// DiT's probability of training an example with the null class (for guidance).
pub const DIT_LABEL_DROPOUT: f64 = 0.1;
/// A small teacher trained from scratch: at small budgets the adaLN-Zero label pathway learns
/// slowly at 1e-4, and 3e-4 left samples blind to their class after 1000 steps (see the toy test
/// in `tests/pipeline.rs`).
pub const SMALL_TEACHER_LR: f64 = 1e-3;
/// Distillation batch of the default models: half the paper's, for the 2-core budget.
pub const SMALL_DISTILL_BATCH: usize = 32;

/// Checkpoint (live + EMA weights, optimiser) every this many iterations.
pub const CHECKPOINT_EVERY: u64 = 100;
/// Sample grid every this many iterations.
pub const SAMPLE_EVERY: u64 = 500;

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
        }
    }
}

/// Training a pixel-space teacher from scratch: its architecture (the image size, channels and
/// classes come from the data) and its optimisation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TeacherOptions {
    pub patch_size: usize,
    pub hidden_size: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub label_dropout: f64,
    pub train: TrainOptions,
}

impl Default for TeacherOptions {
    /// [`DitConfig::fashion_mnist`]'s architecture, 8000 iterations at [`SMALL_TEACHER_LR`].
    fn default() -> Self {
        let arch = DitConfig::fashion_mnist();
        Self {
            patch_size: arch.patch_size,
            hidden_size: arch.hidden_size,
            depth: arch.depth,
            num_heads: arch.num_heads,
            label_dropout: DIT_LABEL_DROPOUT,
            train: TrainOptions {
                lr: SMALL_TEACHER_LR,
                ..TrainOptions::paper(8000)
            },
        }
    }
}

impl TeacherOptions {
    /// The teacher's architecture for `size`×`size` images of `channels` channels and `classes`
    /// classes (epsilon prediction only: pixel-space teachers sample with a fixed variance).
    pub fn architecture(&self, size: usize, channels: usize, classes: usize) -> DitConfig {
        DitConfig::fashion_mnist()
            .with_image(size, channels)
            .with_patch(self.patch_size)
            .with_hidden(self.hidden_size)
            .with_depth(self.depth)
            .with_heads(self.num_heads)
            .with_classes(classes)
    }
}

/// Distilling a teacher into an ARD student on a trajectory set (K comes from the set's anchors).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistillOptions {
    /// N: lower blocks that attend to the trajectory history (0 = step distillation).
    pub history_layers: usize,
    pub train: TrainOptions,
}

impl Default for DistillOptions {
    /// N = 2 (half the default teacher's depth), 1500 iterations of the paper's optimisation at
    /// batch [`SMALL_DISTILL_BATCH`].
    fn default() -> Self {
        Self {
            history_layers: 2,
            train: TrainOptions {
                batch_size: SMALL_DISTILL_BATCH,
                ..TrainOptions::paper(1500)
            },
        }
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

    #[test]
    fn the_default_teacher_is_the_fashion_mnist_preset() {
        assert_eq!(
            TeacherOptions::default().architecture(28, 1, 10),
            DitConfig::fashion_mnist()
        );
    }
}
