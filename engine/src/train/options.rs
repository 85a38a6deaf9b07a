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
/// Iterations of a small teacher, on a cosine schedule: 8000 at a constant rate left it far from
/// converged (FID 68.09 on 10 000 samples, against 30.63 after 24 000 on the cosine schedule; see
/// `docs/distillation.md`, "A teacher nearer the data").
pub const SMALL_TEACHER_ITERATIONS: u64 = 24000;
/// Distillation batch of the default models: half the paper's, for the 2-core budget.
pub const SMALL_DISTILL_BATCH: usize = 32;
/// Peak learning rate of a small student's distillation. The paper's 1e-4 suits a 675M model
/// over 300k iterations; a 0.3M student starting from a teacher whose head predicted ε has far
/// to move, and 1e-4 left it at the class means after 1500 iterations (FID 57 against the
/// teacher's 7; 1e-3 for 2500 iterations: 13, see `docs/distillation.md`).
pub const SMALL_DISTILL_LR: f64 = 1e-3;
/// EMA decay of a small student's distillation: an average over ~1000 iterations, the last
/// 4% of the run (the paper's 0.9999 averages over 10k).
pub const SMALL_DISTILL_EMA: f64 = 0.999;
/// Iterations of a small student's distillation: both students were still improving at 6000
/// and at 18 000, and the ratio of their degradations grew with the length (docs/distillation.md).
pub const SMALL_DISTILL_ITERATIONS: u64 = 24000;

/// Checkpoint (live + EMA weights, optimiser) every this many iterations.
pub const CHECKPOINT_EVERY: u64 = 100;
/// Sample grid every this many iterations.
pub const SAMPLE_EVERY: u64 = 500;
/// Evaluation point (FID, class agreement of the EMA and raw weights) every this many
/// iterations, when a run evaluates as it goes.
pub const EVAL_EVERY: u64 = 1000;
/// Samples per model and evaluation point during training (FID's bias at this count is large
/// but the same at every point, so the curve's shape and the gap between runs are what count).
pub const TRAINING_EVAL_SAMPLES: usize = 1000;

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
}

impl TrainOptions {
    /// The learning rate of iteration `i` (0-based).
    pub fn lr_at(&self, i: u64) -> f64 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine {
                warmup,
                final_fraction,
            } => {
                if i < warmup {
                    return self.lr * (i + 1) as f64 / warmup as f64;
                }
                let span = self.iterations.saturating_sub(warmup).max(1) as f64;
                let progress = ((i - warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.lr * (final_fraction + (1.0 - final_fraction) * cos)
            }
        }
    }
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
    /// [`DitConfig::fashion_mnist`]'s architecture, [`SMALL_TEACHER_ITERATIONS`] iterations at
    /// peak rate [`SMALL_TEACHER_LR`] on the cosine schedule.
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
                lr_schedule: LrSchedule::cosine(),
                ..TrainOptions::paper(SMALL_TEACHER_ITERATIONS)
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

/// How a student's step output is compared with its anchor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillLoss {
    /// Mean squared error (the paper's).
    Mse,
    /// Per image, `sqrt(‖o − a‖² + c²) − c` with `c = 0.00054 √(C·H·W)` (iCT's pseudo-Huber):
    /// quadratic for small errors, linear for large ones. Against MSE it cut the ARD student's
    /// FID degradation by 39% and the baseline's by 26% (docs/distillation.md).
    PseudoHuber,
    /// Mean absolute error per pixel. The default: of the three it gave the ARD student the
    /// lowest FID degradation under every feature network and the largest lead over the
    /// baseline (docs/distillation.md, section "L1").
    #[default]
    L1,
}

/// Self-forcing (scheduled sampling, Bengio et al. 2015): for part of each batch the history
/// the student is trained on is its own free-running rollout from the same x_T (no gradient
/// through it), not the teacher's anchors; the targets stay the teacher's anchors, which the
/// ODE makes a function of x_T alone. Teacher forcing (the paper's training) never shows a
/// student its own mistakes, and `ard step-error` measures most of a student's final error as
/// accumulated along its own steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfForcing {
    /// Share of each batch's trajectories fed the student's own history at full strength
    /// (0 = teacher forcing only, the paper's training).
    pub fraction: f64,
    /// First iteration with any self-forced trajectory (before it the student's own
    /// predictions are far from any trajectory).
    pub start: u64,
    /// Iterations over which the share grows linearly from 0 to `fraction`.
    pub ramp: u64,
}

/// First iteration of self-forcing by default: after the rate's peak, once the student's own
/// steps are near the trajectories (FID ~26 at 1000 iterations against ~13 at the end).
pub const SELF_FORCING_START: u64 = 1000;
/// Iterations over which the self-forced share grows to its value by default.
pub const SELF_FORCING_RAMP: u64 = 1000;

impl Default for SelfForcing {
    /// Teacher forcing only (the paper's); a share set later starts at [`SELF_FORCING_START`]
    /// and ramps up over [`SELF_FORCING_RAMP`] iterations.
    fn default() -> Self {
        Self {
            fraction: 0.0,
            start: SELF_FORCING_START,
            ramp: SELF_FORCING_RAMP,
        }
    }
}

impl SelfForcing {
    /// How many of a batch of `batch` trajectories are self-forced at `iteration`: the first
    /// ones of the batch (the batch is drawn at random, so which ones needs no draw).
    pub fn rows(&self, iteration: u64, batch: usize) -> usize {
        if self.fraction <= 0.0 || iteration < self.start {
            return 0;
        }
        let done = iteration - self.start + 1;
        let ramp = if self.ramp == 0 {
            1.0
        } else {
            (done as f64 / self.ramp as f64).min(1.0)
        };
        ((self.fraction.min(1.0) * ramp * batch as f64).round() as usize).min(batch)
    }
}

/// Distilling a teacher into an ARD student on a trajectory set (K comes from the set's anchors).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistillOptions {
    /// N: lower blocks that attend to the trajectory history (0 = step distillation).
    pub history_layers: usize,
    pub loss: DistillLoss,
    /// Teacher forcing only by default (the paper's); see [`SelfForcing`].
    pub self_forcing: SelfForcing,
    pub train: TrainOptions,
}

impl Default for DistillOptions {
    /// The small-model recipe of `docs/distillation.md`: N = 2 (half the default teacher's
    /// depth), the L1 loss ([`DistillLoss::default`]), AdamW and clipping, at batch [`SMALL_DISTILL_BATCH`], peak rate
    /// [`SMALL_DISTILL_LR`] on a cosine schedule, EMA [`SMALL_DISTILL_EMA`], for
    /// [`SMALL_DISTILL_ITERATIONS`] iterations.
    fn default() -> Self {
        Self {
            history_layers: 2,
            loss: DistillLoss::default(),
            self_forcing: SelfForcing::default(),
            train: TrainOptions {
                batch_size: SMALL_DISTILL_BATCH,
                lr: SMALL_DISTILL_LR,
                ema_decay: SMALL_DISTILL_EMA,
                lr_schedule: LrSchedule::cosine(),
                ..TrainOptions::paper(SMALL_DISTILL_ITERATIONS)
            },
        }
    }
}

/// The adversarial stage's generator learning rate (the and LADD's 1e-4).
pub const GAN_GENERATOR_LR: f64 = 1e-4;
/// The discriminator heads' learning rate: ten times the generator's, so that the heads keep
/// up with a generator that starts converged.
pub const GAN_DISCRIMINATOR_LR: f64 = 1e-3;
/// Factor on the adaptive weight ‖∇L_reg‖ / ‖∇L_adv‖ at the last layer (VQGAN's scheme).
pub const GAN_WEIGHT_FACTOR: f64 = 1.0;
/// Upper clamp of the adaptive weight before the factor (VQGAN's and the reference's 1e4).
pub const GAN_MAX_WEIGHT: f64 = 1e4;
/// Iterations at the start in which the adversarial weight is zero: the discriminator learns
/// to tell the converged student from real images before the generator listens to it.
pub const GAN_WARMUP: u64 = 200;
/// Iterations of the default fine-tuning run: FID still fell between 5000 and 6000
/// (docs/distillation.md).
pub const GAN_ITERATIONS: u64 = 6000;
/// Timesteps (of the 1000-step training schedule) at which samples are re-noised before the
/// teacher sees them, drawn uniformly in `[min, max)` for reals and fakes alike. Low noise: the
/// distilled students are blurred, and blur is what the teacher's features tell apart while the
/// signal dominates (ᾱ ≥ 0.5 below t = 250; at t = 500, ᾱ ≈ 0.08 and only coarse layout is
/// left). Measured against `[0, 500)`: the discriminator wins more often (hinge loss ~1.2
/// against ~1.8) and the FID ends lower (docs/distillation.md).
pub const GAN_NOISE_RANGE: [usize; 2] = [0, 250];

/// The adversarial stage (`ard finetune-gan`): a distilled student trained further on its
/// regression loss plus an adaptively weighted hinge GAN loss, against a discriminator made of
/// the frozen teacher's block features and one light head per block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GanOptions {
    /// The generator's (student's) optimisation: iterations, batch, lr, EMA, clip, seed.
    pub train: TrainOptions,
    /// The trajectory regression term of the generator's loss.
    pub loss: DistillLoss,
    /// The discriminator's AdamW learning rate (constant, no clipping).
    pub disc_lr: f64,
    /// Factor on the adaptive weight.
    pub weight_factor: f64,
    /// Clamp of the adaptive weight, before the factor.
    pub max_weight: f64,
    /// Iterations with adversarial weight 0 at the start.
    pub warmup: u64,
    /// Re-noising timesteps `[min, max)`.
    pub noise_range: [usize; 2],
    /// The discriminator heads' shape.
    pub disc: DiscriminatorConfig,
}

/// Shape of the discriminator's heads (one per teacher block).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    /// Width of the class/time projection.
    pub cmap_dim: usize,
    /// Kernel of the residual block's 1-D convolution over the tokens (odd, circular padding).
    pub kernel: usize,
    /// Images per group of the local batch normalisation.
    pub virtual_batch: usize,
}

impl Default for DiscriminatorConfig {
    /// The reference's head: a projection of width 64, a kernel of 9, norm groups of 8.
    fn default() -> Self {
        Self {
            cmap_dim: 64,
            kernel: 9,
            virtual_batch: 8,
        }
    }
}

impl Default for GanOptions {
    /// [`GAN_ITERATIONS`] at batch [`SMALL_DISTILL_BATCH`], generator lr [`GAN_GENERATOR_LR`]
    /// (constant), EMA [`SMALL_DISTILL_EMA`], the paper's clip; the other `GAN_*` constants.
    fn default() -> Self {
        Self {
            train: TrainOptions {
                batch_size: SMALL_DISTILL_BATCH,
                lr: GAN_GENERATOR_LR,
                ema_decay: SMALL_DISTILL_EMA,
                ..TrainOptions::paper(GAN_ITERATIONS)
            },
            loss: DistillLoss::default(),
            disc_lr: GAN_DISCRIMINATOR_LR,
            weight_factor: GAN_WEIGHT_FACTOR,
            max_weight: GAN_MAX_WEIGHT,
            warmup: GAN_WARMUP,
            noise_range: GAN_NOISE_RANGE,
            disc: DiscriminatorConfig::default(),
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
    fn the_cosine_schedule_warms_up_then_decays_to_its_floor() {
        let o = TrainOptions {
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine {
                warmup: 10,
                final_fraction: 0.1,
            },
            ..TrainOptions::paper(110)
        };
        assert!((o.lr_at(0) - 1e-4).abs() < 1e-12);
        assert!((o.lr_at(9) - 1e-3).abs() < 1e-12);
        assert!((o.lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((o.lr_at(60) - 0.55e-3).abs() < 1e-12, "{}", o.lr_at(60));
        assert!((o.lr_at(110) - 1e-4).abs() < 1e-12);
        assert!(
            (o.lr_at(500) - 1e-4).abs() < 1e-12,
            "past the end it stays at the floor"
        );
        let lrs: Vec<f64> = (10..110).map(|i| o.lr_at(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(TrainOptions::paper(5).lr_at(3), PAPER_LR);
    }

    #[test]
    fn the_default_teacher_is_the_fashion_mnist_preset() {
        assert_eq!(
            TeacherOptions::default().architecture(28, 1, 10),
            DitConfig::fashion_mnist()
        );
    }

    #[test]
    fn self_forcing_starts_late_ramps_up_and_is_capped_by_the_batch() {
        assert_eq!(SelfForcing::default().rows(5000, 32), 0);
        let sf = SelfForcing {
            fraction: 0.5,
            start: 100,
            ramp: 400,
        };
        assert_eq!(sf.rows(99, 32), 0);
        assert_eq!(sf.rows(100, 32), 0); // 0.5 × 1/400 × 32 rounds to 0
        assert_eq!(sf.rows(299, 32), 8); // half way up the ramp
        assert_eq!(sf.rows(499, 32), 16);
        assert_eq!(sf.rows(10_000, 32), 16);
        let all = SelfForcing {
            fraction: 1.0,
            start: 0,
            ramp: 0,
        };
        assert_eq!(all.rows(0, 7), 7);
    }
}
