//! Deterministic DDIM (eta 0; Song et al., "Denoising Diffusion Implicit Models", ICLR 2021) with
//! classifier-free guidance (Ho & Salimans 2022), as guided-diffusion / DiT sample, recording the
//! whole trajectory.

use std::ops::ControlFlow;

use burn::tensor::Tensor;

use crate::diffusion::schedule::RespacedSchedule;
use crate::io::host::labels_to_device;
use crate::model::config::DitConfig;
use crate::model::dit::Dit;
use crate::model::text_condition::Cond;

pub use crate::model::config::DDIM_STEPS;
/// The paper's guidance scale.
pub const CFG_SCALE: f32 = 1.5;

/// How the teacher is sampled.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DdimOptions {
    /// Respaced steps out of the 1000 training steps.
    pub steps: usize,
    /// Guidance scale; 1 turns guidance off (one forward per step).
    pub cfg_scale: f32,
    /// Output channels guided; `None` is the model's rule ([`DitConfig::guided_channels`]: the
    /// first 3, as the reference). The rest stay conditional.
    pub guided_channels: Option<usize>,
    /// Clamp x0 predictions to [−1, 1] before each update (pixel-space models; guided-diffusion's
    /// `clip_denoised`). Off for latents, as in the reference.
    pub clip_denoised: bool,
}

impl Default for DdimOptions {
    fn default() -> Self {
        Self {
            steps: DDIM_STEPS,
            cfg_scale: CFG_SCALE,
            guided_channels: None,
            clip_denoised: false,
        }
    }
}

impl DdimOptions {
    /// The guided channels for `dit`: the ones asked for, else the model's rule.
    pub fn guided_channels_for(&self, dit: &DitConfig) -> usize {
        self.guided_channels
            .unwrap_or_else(|| dit.guided_channels())
    }
}

/// One DDIM step, taken at respaced `index` (model run at original `timestep`).
#[derive(Clone, Debug)]
pub struct DdimStep {
    pub index: usize,
    pub timestep: usize,
    /// The state after the step, `[B, C, H, W]` (the reference's `zt_{index}`).
    pub state: Tensor<4>,
    /// The x0 prediction made at this step (the reference's `pred_z0_{index}`).
    pub x0_pred: Tensor<4>,
}

/// DDIM coefficients of one respaced index, cast to f32 as the reference does.
struct StepCoefficients {
    sqrt_recip_alpha_bar: f32,
    sqrt_recipm1_alpha_bar: f32,
    sqrt_alpha_bar_prev: f32,
    sqrt_one_minus_alpha_bar_prev: f32,
}

impl StepCoefficients {
    fn at(schedule: &RespacedSchedule, i: usize) -> Self {
        let ab = schedule.alpha_bar[i];
        let ab_prev = schedule.alpha_bar_prev[i] as f32;
        Self {
            sqrt_recip_alpha_bar: (1.0 / ab).sqrt() as f32,
            sqrt_recipm1_alpha_bar: (1.0 / ab - 1.0).sqrt() as f32,
            sqrt_alpha_bar_prev: ab_prev.sqrt(),
            sqrt_one_minus_alpha_bar_prev: (1.0 - ab_prev).sqrt(),
        }
    }
}

/// One DDIM update from `x_t` and the model's epsilon: returns `(x_prev, x0_pred)`.
/// As the reference: x0 from eps (clamped if asked), then eps again from x0, then the eta-0 step.
fn ddim_update(
    x_t: Tensor<4>,
    eps: Tensor<4>,
    k: &StepCoefficients,
    clip: bool,
) -> (Tensor<4>, Tensor<4>) {
    let scaled = x_t * k.sqrt_recip_alpha_bar;
    let mut x0_pred = scaled.clone() - eps * k.sqrt_recipm1_alpha_bar;
    if clip {
        x0_pred = x0_pred.clamp(-1.0, 1.0);
    }
    let eps = (scaled - x0_pred.clone()) / k.sqrt_recipm1_alpha_bar;
    let x_prev = x0_pred.clone() * k.sqrt_alpha_bar_prev + eps * k.sqrt_one_minus_alpha_bar_prev;
    (x_prev, x0_pred)
}

/// Runs DDIM from `noise` (`[B, C, H, W]`), calling `on_step` after every step (highest index
/// first). Returns the final sample.
pub fn ddim_sample(
    teacher: &Dit,
    noise: Tensor<4>,
    labels: &[i64],
    options: &DdimOptions,
    mut on_step: impl FnMut(&DdimStep),
) -> Tensor<4> {
    ddim_sample_until(teacher, noise, labels, options, |s| {
        on_step(s);
        ControlFlow::Continue(())
    })
    .expect("never stopped")
}

/// [`ddim_sample`] that stops early, returning `None`, when `on_step` breaks.
pub fn ddim_sample_until(
    teacher: &Dit,
    noise: Tensor<4>,
    labels: &[i64],
    options: &DdimOptions,
    on_step: impl FnMut(&DdimStep) -> ControlFlow<()>,
) -> Option<Tensor<4>> {
    let device = noise.device();
    let cond = Cond::Labels(labels_to_device(labels, &device));
    let null = teacher
        .null_class()
        .map(|n| Cond::Labels(labels_to_device(&vec![n; labels.len()], &device)));
    ddim_sample_cond_until(teacher, noise, &cond, null.as_ref(), options, on_step)
}

/// DDIM from `noise` under `cond` (labels or prompts), guided against `null` (the null class
/// or the empty prompt, one per image) when the scale is not 1; stops early, returning `None`,
/// when `on_step` breaks.
pub fn ddim_sample_cond_until(
    teacher: &Dit,
    noise: Tensor<4>,
    cond: &Cond,
    null: Option<&Cond>,
    options: &DdimOptions,
    mut on_step: impl FnMut(&DdimStep) -> ControlFlow<()>,
) -> Option<Tensor<4>> {
    let schedule = RespacedSchedule::linear(options.steps);
    let channels = teacher.config().in_channels;
    let b = cond.len();
    let mut x = noise;
    for index in (0..schedule.len()).rev() {
        let timestep = schedule.timesteps[index];
        let t = vec![timestep as f32; b];
        let out = match null {
            Some(null) if options.cfg_scale != 1.0 => teacher.forward_guided(
                x.clone(),
                &t,
                cond,
                null,
                options.cfg_scale,
                options.guided_channels_for(teacher.config()),
            ),
            _ => teacher.forward(x.clone(), &t, cond.clone()),
        };
        let eps = out.narrow(1, 0, channels);
        let (x_prev, x0_pred) = ddim_update(
            x,
            eps,
            &StepCoefficients::at(&schedule, index),
            options.clip_denoised,
        );
        x = x_prev;
        on_step(&DdimStep {
            index,
            timestep,
            state: x.clone(),
            x0_pred,
        })
        .continue_value()?;
    }
    Some(x)
}

/// Every step of a DDIM run, highest index first.
pub fn ddim_trajectory(
    teacher: &Dit,
    noise: Tensor<4>,
    labels: &[i64],
    options: &DdimOptions,
) -> Vec<DdimStep> {
    let mut steps = Vec::with_capacity(options.steps);
    ddim_sample(teacher, noise, labels, options, |s| steps.push(s.clone()));
    steps
}
