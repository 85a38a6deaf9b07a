//! Stage 2 of ARD (Kim et al., CVPR 2025, §3.3): adversarial fine-tuning of a distilled
//! student. The authors' repository calls loss functions it does not contain; this is ARD
//! Studio's own design, documented in `docs/distillation.md`.
//!
//! One iteration:
//! 1. **Generator.** The teacher-forced pass gives every step's output. Its loss is the
//!    trajectory regression (mean over the K steps) plus `λ · L_adv`, where `L_adv` is the hinge
//!    generator loss of the discriminator on the last step's output (the final image), re-noised
//!    to a random `t` and fed through the frozen teacher. `λ` is the adaptive weight: the ratio
//!    of the two terms' gradient norms at the last head's output weight, clamped, times a
//!    factor, and zero during the warm-up. Burn keeps no graph after a backward pass, so the
//!    two gradients are taken on detached copies of the final output (two small graphs), their
//!    last-layer norms on a detached copy of the last head, and the student's own backward runs
//!    once on `Σ_{k<K} L_k / K + ⟨x̂, ∂(L_K/K + λ L_adv)/∂x̂⟩` — the same gradient as the sum.
//! 2. **Discriminator.** One power iteration in its spectrally normalised layers, then the hinge
//!    loss on real training images against the student's final outputs of step 1 (detached), both
//!    re-noised the same way, with its own AdamW and learning rate.
//!
//! The teacher's parameters never require a gradient: it only passes gradients through.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Gradients, Tensor};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::data::datasets::Dataset;
use crate::diffusion::schedule::{TRAIN_TIMESTEPS, alpha_bar_from_betas, linear_betas};
use crate::distill::loss::DistillLoss;
use crate::distill::loss::step_distance;
use crate::distill::trajectories::TrajectorySet;
use crate::error::{EngineError, Result};
use crate::gan::discriminator::{Discriminator, DiscriminatorConfig, renoise};
use crate::gan::loss::{adaptive_weight, hinge_discriminator, hinge_generator};
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::dit::Dit;
use crate::model::loaded::{LoadedModel, Model};
use crate::model::student::ArdStudent;
use crate::train::optim::clip_global_norm;
use crate::train::options::{SMALL_DISTILL_BATCH, SMALL_DISTILL_EMA, TrainOptions};
use crate::train::trainer::{Detach, Trainer, iteration_rng};

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
/// Iterations of the default fine-tuning run: FID was still falling at the end of shorter runs
/// (docs/distillation.md).
pub const GAN_ITERATIONS: u64 = 6000;
/// Timesteps (of the 1000-step training schedule) at which samples are re-noised before the
/// teacher sees them, drawn uniformly in `[min, max)` for reals and fakes alike. Low noise: the
/// distilled students are blurred, and blur is what the teacher's features tell apart while the
/// signal dominates (ᾱ ≥ 0.5 below t = 250; at t = 500, ᾱ ≈ 0.08 and only coarse layout is
/// left). It ended with a lower FID than `[0, 500)` (docs/distillation.md).
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

/// What every GAN iteration records, in this order (`Trainer::metrics`, `JobEvent::Metrics`).
pub const GAN_METRICS: [&str; 6] = [
    "regression",
    "adversarial (G)",
    "discriminator",
    "adaptive weight",
    "D(real)",
    "D(fake)",
];

/// `name value` of each of an iteration's `GAN_METRICS`, joined by `sep`.
pub fn describe_metrics(values: &[f32], sep: &str) -> String {
    GAN_METRICS
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} {v:.4}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The trained pair: the student (generator) and the discriminator's heads.
#[derive(Module, Debug)]
pub struct GanPair {
    pub generator: ArdStudent,
    pub discriminator: Discriminator,
}

/// What an iteration works with besides the pair.
pub struct GanContext<'a> {
    /// The frozen teacher, on the training device, with no parameter requiring a gradient.
    pub teacher: Dit,
    pub set: &'a TrajectorySet,
    pub real: &'a Dataset,
    pub options: &'a GanOptions,
    pub alpha_bar: Vec<f64>,
    /// The training (autodiff) device.
    pub device: Device,
}

/// Every random draw of one iteration, made on the host from the iteration's generator.
pub struct GanDraw {
    /// Trajectories of the regression and the generated images.
    pub idx: Vec<usize>,
    /// Real images of the discriminator step.
    pub real_idx: Vec<usize>,
    pub t_fake: Vec<usize>,
    pub t_real: Vec<usize>,
    pub eps_fake: HostTensor,
    pub eps_real: HostTensor,
}

/// The generator's half of an iteration: the gradients of its loss, the loss parts, and the
/// final outputs (detached) for the discriminator.
pub struct GeneratorPass {
    pub grads: Gradients,
    pub regression: f32,
    pub adversarial: f32,
    pub weight: f64,
    pub fakes: Tensor<4>,
}

/// The discriminator's half: gradients, hinge loss, mean logits on reals and fakes.
pub struct DiscriminatorPass {
    pub grads: Gradients,
    pub loss: f32,
    pub real_logit: f32,
    pub fake_logit: f32,
}

fn normal(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}

impl<'a> GanContext<'a> {
    /// The frozen teacher `teacher` and the data of a run, on the training device `device`.
    pub fn new(
        teacher: &LoadedModel,
        set: &'a TrajectorySet,
        real: &'a Dataset,
        options: &'a GanOptions,
        device: &Device,
    ) -> Result<Self> {
        let Model::Teacher(dit) = teacher.copy_to(device)?.model else {
            return Err(EngineError::WrongKind(
                "the discriminator's feature extractor must be a teacher".into(),
            ));
        };
        Ok(GanContext {
            teacher: dit.no_grad(),
            set,
            real,
            options,
            alpha_bar: alpha_bar_from_betas(&linear_betas(TRAIN_TIMESTEPS)),
            device: device.clone(),
        })
    }

    /// The draws of one iteration.
    pub fn draw(&self, rng: &mut StdRng) -> GanDraw {
        let b = self.options.train.batch_size;
        let [lo, hi] = self.options.noise_range;
        let per_image: usize = self.set.manifest.image_shape.iter().product();
        let idx = (0..b)
            .map(|_| rng.random_range(0..self.set.labels.len()))
            .collect();
        let real_idx = (0..b)
            .map(|_| rng.random_range(0..self.real.len()))
            .collect();
        let mut times = || -> Vec<usize> { (0..b).map(|_| rng.random_range(lo..hi)).collect() };
        let (t_fake, t_real) = (times(), times());
        let mut shape = vec![b];
        shape.extend(&self.set.manifest.image_shape);
        GanDraw {
            idx,
            real_idx,
            t_fake,
            t_real,
            eps_fake: HostTensor::new(shape.clone(), normal(b * per_image, rng)),
            eps_real: HostTensor::new(shape, normal(b * per_image, rng)),
        }
    }

    /// The teacher's block features and conditioning for `x` re-noised at `t` with `eps`.
    fn features(
        &self,
        x: Tensor<4>,
        t: &[usize],
        eps: &HostTensor,
        labels: &[i64],
    ) -> Result<(Vec<Tensor<3>>, Tensor<2>)> {
        let x_t = renoise(x, t, eps, &self.alpha_bar)?;
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        Ok(self
            .teacher
            .block_features(x_t, &tf, labels_to_device(labels, &self.device)))
    }

    fn labels(&self, idx: &[usize]) -> Vec<i64> {
        idx.iter().map(|&i| self.set.labels[i]).collect()
    }
}

/// ‖∂L/∂W‖ at the last head's output weight W, for the loss whose gradient with respect to the
/// final output `[B, C, H, W]` is `upstream`: the head runs again on detached inputs with fresh
/// leaves for its parameters, and `⟨output, upstream⟩` is differentiated.
fn last_layer_norm(g: &ArdStudent, x: &Tensor<4>, c: &Tensor<3>, upstream: Tensor<4>) -> f64 {
    let k = g.steps();
    let channels = g.dit.config().in_channels;
    let head = g.head(k - 1).clone().map(&mut Detach);
    let [b, _, t, h] = x.dims();
    let xs = x.clone().narrow(1, k - 1, 1).reshape([b, t, h]).detach();
    let cs = c.clone().narrow(1, k - 1, 1).reshape([b, h]).detach();
    let out = g
        .dit
        .unpatchify(head.forward(xs, cs))
        .narrow(1, 0, channels);
    let grads = (out * upstream).sum().backward();
    head.linear
        .weight
        .val()
        .grad(&grads)
        .map_or(0.0, |w| w.square().sum().sqrt().into_scalar::<f32>() as f64)
}

/// The generator's loss and its gradients for the draws `draw`; the adversarial term counts
/// only when `active` (after the warm-up; before, it is measured without a backward pass).
pub fn generator_pass(
    pair: &GanPair,
    ctx: &GanContext,
    draw: &GanDraw,
    active: bool,
) -> Result<GeneratorPass> {
    let g = &pair.generator;
    let device = &ctx.device;
    let loss = ctx.options.loss;
    let k = g.steps();
    let kf = k as f64;
    let channels = g.dit.config().in_channels;
    let targets: Vec<Tensor<4>> = ctx
        .set
        .anchors
        .iter()
        .map(|a| a.rows(&draw.idx).to_device(device))
        .collect::<Result<_>>()?;
    let mut inputs = vec![ctx.set.x_t.rows(&draw.idx).to_device::<4>(device)?];
    inputs.extend(targets.iter().take(k - 1).cloned());
    let labels = ctx.labels(&draw.idx);
    let (x, c) = g.teacher_forced_tokens(&inputs, labels_to_device(&labels, device))?;
    // Steps before the last: their regression, in the student's graph.
    let earlier: Vec<Tensor<1>> = (0..k - 1)
        .map(|s| {
            let out = g.step_output(&x, &c, s).narrow(1, 0, channels);
            step_distance(out, targets[s].clone(), loss)
        })
        .collect();
    let earlier = if earlier.is_empty() {
        Tensor::<1>::zeros([1], device)
    } else {
        Tensor::cat(earlier, 0).sum() / kf
    };
    let last = g.step_output(&x, &c, k - 1).narrow(1, 0, channels); // x̂ [B, C, H, W]
    let fakes = last.clone().detach();

    // ∂(L_K / K)/∂x̂ on a detached copy.
    let leaf = last.clone().detach().require_grad();
    let reg_last = step_distance(leaf.clone(), targets[k - 1].clone(), loss) / kf;
    let regression = earlier.clone().into_scalar::<f32>() + reg_last.clone().into_scalar::<f32>();
    let grad_reg = leaf
        .grad(&reg_last.backward())
        .expect("the regression reaches the final output");

    // ∂L_adv/∂x̂ through the frozen teacher and heads, on another copy.
    let frozen = pair.discriminator.clone().no_grad();
    let (adversarial, weight, upstream) = if active {
        let leaf = last.clone().detach().require_grad();
        let (feats, cond) = ctx.features(leaf.clone(), &draw.t_fake, &draw.eps_fake, &labels)?;
        let adv = hinge_generator(&frozen.forward(&feats, &cond));
        let value = adv.clone().into_scalar::<f32>();
        let grad_adv = leaf
            .grad(&adv.backward())
            .expect("the adversarial loss reaches the final output");
        let o = ctx.options;
        let (reg_norm, adv_norm) = (
            last_layer_norm(g, &x, &c, grad_reg.clone()),
            last_layer_norm(g, &x, &c, grad_adv.clone()),
        );
        if !(reg_norm.is_finite() && adv_norm.is_finite() && value.is_finite()) {
            return Err(EngineError::Diverged(format!(
                "the adversarial stage diverged (last-layer gradient norms {reg_norm} and {adv_norm}, adversarial loss {value}): lower the learning rates or the weight factor, and resume from the last checkpoint"
            )));
        }
        let weight = adaptive_weight(reg_norm, adv_norm, o.weight_factor, o.max_weight, true);
        (value, weight, grad_reg + grad_adv * weight)
    } else {
        let (feats, cond) = ctx.features(fakes.clone(), &draw.t_fake, &draw.eps_fake, &labels)?;
        let value = hinge_generator(&frozen.forward(&feats, &cond)).into_scalar::<f32>();
        (value, 0.0, grad_reg)
    };
    let surrogate = earlier + (last * upstream).sum();
    Ok(GeneratorPass {
        grads: surrogate.backward(),
        regression,
        adversarial,
        weight,
        fakes,
    })
}

/// The discriminator's hinge loss on real images against `fakes` (both re-noised) and its
/// gradients.
pub fn discriminator_pass(
    disc: &Discriminator,
    ctx: &GanContext,
    draw: &GanDraw,
    fakes: Tensor<4>,
) -> Result<DiscriminatorPass> {
    let b = draw.idx.len();
    let (real, real_labels) = ctx.real.batch(&draw.real_idx);
    let real = real.to_device::<4>(&ctx.device)?;
    let x = Tensor::cat(
        vec![
            renoise(fakes.detach(), &draw.t_fake, &draw.eps_fake, &ctx.alpha_bar)?,
            renoise(real, &draw.t_real, &draw.eps_real, &ctx.alpha_bar)?,
        ],
        0,
    );
    let t: Vec<f32> = draw
        .t_fake
        .iter()
        .chain(&draw.t_real)
        .map(|&v| v as f32)
        .collect();
    let mut labels = ctx.labels(&draw.idx);
    labels.extend(real_labels);
    let (feats, cond) = ctx
        .teacher
        .block_features(x, &t, labels_to_device(&labels, &ctx.device));
    let half = |f: &Tensor<3>, i: usize| f.clone().narrow(0, i * b, b);
    let fake_feats: Vec<Tensor<3>> = feats.iter().map(|f| half(f, 0)).collect();
    let real_feats: Vec<Tensor<3>> = feats.iter().map(|f| half(f, 1)).collect();
    let fake_logits = disc.forward(&fake_feats, &cond.clone().narrow(0, 0, b));
    let real_logits = disc.forward(&real_feats, &cond.narrow(0, b, b));
    let mean = |l: &[Tensor<2>]| {
        let n = l.len().max(1) as f32;
        l.iter()
            .map(|t| t.clone().mean().into_scalar::<f32>())
            .sum::<f32>()
            / n
    };
    let (real_logit, fake_logit) = (mean(&real_logits), mean(&fake_logits));
    let loss = hinge_discriminator(&real_logits, &fake_logits);
    Ok(DiscriminatorPass {
        loss: loss.clone().into_scalar::<f32>(),
        grads: loss.backward(),
        real_logit,
        fake_logit,
    })
}

/// One iteration: the generator's AdamW step (clipped, at the schedule's rate), then the
/// discriminator's (at `disc_lr`, unclipped), then the EMA. Returns the generator's objective
/// `L_reg + λ L_adv`.
pub fn gan_step(t: &mut Trainer<GanPair>, ctx: &GanContext) -> Result<f32> {
    let mut rng = iteration_rng(t.options.seed, t.iteration);
    let draw = ctx.draw(&mut rng);
    let active = t.iteration >= ctx.options.warmup;
    let gp = generator_pass(&t.model, ctx, &draw, active)?;
    let mut grads = GradientsParams::from_grads(gp.grads, &t.model);
    clip_global_norm(&t.model, &mut grads, t.options.grad_clip);
    let lr = t.options.lr_at(t.iteration);
    t.model = t.optim.step(lr, t.model.clone(), grads);

    t.model.discriminator = t.model.discriminator.clone().power_iteration();
    let dp = discriminator_pass(&t.model.discriminator, ctx, &draw, gp.fakes)?;
    let grads = GradientsParams::from_grads(dp.grads, &t.model);
    t.model = t.optim.step(ctx.options.disc_lr, t.model.clone(), grads);

    let values = vec![
        gp.regression,
        gp.adversarial,
        dp.loss,
        gp.weight as f32,
        dp.real_logit,
        dp.fake_logit,
    ];
    if values.iter().any(|v| !v.is_finite()) {
        return Err(EngineError::Diverged(format!(
            "the adversarial stage diverged at iteration {} ({}): lower the learning rates or the weight factor, and resume from the last checkpoint",
            t.iteration,
            describe_metrics(&values, ", ")
        )));
    }
    t.metrics.push((t.iteration, values));
    Ok(t.finish_iteration(gp.regression + gp.weight as f32 * gp.adversarial))
}
