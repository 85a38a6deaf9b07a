//! One sampling run of a loaded model — the teacher's DDIM (Song et al. 2021) or the ARD
//! student's K autoregressive steps (Kim et al. 2025) — with every intermediate step named as in
//! the reference vectors: `zt_{i}` / `pred_z0_{i}` for a teacher, `infer_z{anchor}` for a student.

use std::ops::ControlFlow;

use burn::tensor::Device;

use crate::diffusion::ddim::{DdimOptions, ddim_sample_cond_until};
use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::config::{ModelMeta, TextConfig};
use crate::model::dit::Dit;
use crate::model::loaded::{LoadedModel, Model};
use crate::model::text_condition::{Cond, HostPrompts};

/// What to sample: the starting noise `[B, C, H, W]` and one label per image (a class
/// model) or one prompt per image (a text model).
#[derive(Clone, Debug)]
pub struct SampleRequest {
    pub noise: HostTensor,
    /// Class models: one label per image (empty for a text model).
    pub labels: Vec<i64>,
    /// Text models: the prompts, encoded.
    pub prompts: Option<PromptRequest>,
    /// Teacher only.
    pub ddim: DdimOptions,
}

/// A text model's prompts, encoded on the host, with the empty prompt for guidance.
#[derive(Clone, Debug)]
pub struct PromptRequest {
    /// The prompts as typed, one per image.
    pub text: Vec<String>,
    pub encoded: HostPrompts,
    /// The empty prompt (one row).
    pub null: HostPrompts,
}

impl SampleRequest {
    /// Images in the request.
    pub fn batch(&self) -> usize {
        match &self.prompts {
            Some(p) => p.encoded.len(),
            None => self.labels.len(),
        }
    }
}

/// One intermediate result, streamed as soon as it is computed.
#[derive(Clone, Debug)]
pub struct StepImage {
    /// 0-based position in the run.
    pub step: usize,
    pub total: usize,
    /// Name in the saved file (`pred_z0_15`, `infer_z10`, …).
    pub name: String,
    /// The respaced teacher index the step stands for: a teacher's DDIM index, a student's
    /// anchor.
    pub index: usize,
    /// What the step started from, `[B, C, H, W]`: the noisy state x_t for a teacher; the newest
    /// element of the history (x_T, then the previous prediction) for a student.
    pub input: HostTensor,
    /// The step's estimate of the clean image, `[B, C, H, W]`.
    pub image: HostTensor,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct SampleOutput {
    /// Named tensors in the reference naming, in order of computation.
    pub tensors: Vec<(String, HostTensor)>,
    /// Per-step clean-image estimates, in order (the strip of the steps).
    pub steps: Vec<HostTensor>,
    /// The final images `[B, C, H, W]`.
    pub images: HostTensor,
}

/// Checks a request against the model's shape and its kind of condition.
pub fn validate_request(meta: &ModelMeta, req: &SampleRequest) -> Result<()> {
    let d = &meta.dit;
    let want = d.batch_shape(req.batch());
    if req.noise.shape != want {
        return Err(EngineError::Mismatch(format!(
            "noise has shape {:?}; this model needs {want:?} (one image per label or prompt)",
            req.noise.shape
        )));
    }
    validate_ddim(&req.ddim)?;
    if req.batch() == 0 {
        return Err(EngineError::InvalidSetting(
            "no labels or prompts: nothing to sample".into(),
        ));
    }
    match (&d.text, &req.prompts) {
        (Some(text), Some(p)) => check_prompts(text, p),
        (Some(_), None) => Err(EngineError::WrongKind(
            "this model is text-conditioned: give prompts, not class labels".into(),
        )),
        (None, Some(_)) => Err(EngineError::WrongKind(
            "this model is class-conditional: give class labels (or a prompt naming a class)"
                .into(),
        )),
        (None, None) => check_labels(d.num_classes, &req.labels),
    }
}

fn validate_ddim(ddim: &DdimOptions) -> Result<()> {
    if !(1..=crate::diffusion::schedule::TRAIN_TIMESTEPS).contains(&ddim.steps) {
        return Err(EngineError::InvalidSetting(format!(
            "DDIM steps must be between 1 and {}, got {}",
            crate::diffusion::schedule::TRAIN_TIMESTEPS,
            ddim.steps
        )));
    }
    if !ddim.cfg_scale.is_finite() || ddim.cfg_scale < 0.0 {
        return Err(EngineError::InvalidSetting(format!(
            "guidance scale {} must be a finite number ≥ 0 (1 = no guidance)",
            ddim.cfg_scale
        )));
    }
    if ddim.guided_channels == Some(0) {
        return Err(EngineError::InvalidSetting(
            "guidance needs at least one guided channel".into(),
        ));
    }
    Ok(())
}

fn check_labels(num_classes: usize, labels: &[i64]) -> Result<()> {
    match labels.iter().find(|&&l| l < 0 || l >= num_classes as i64) {
        Some(&bad) => Err(EngineError::UnknownClass(format!(
            "unknown class {bad}: the model has {num_classes} classes (0..={})",
            num_classes - 1
        ))),
        None => Ok(()),
    }
}

fn check_prompts(text: &TextConfig, p: &PromptRequest) -> Result<()> {
    for (what, h) in [("prompts", &p.encoded), ("the empty prompt", &p.null)] {
        if h.channels() != text.caption_channels {
            return Err(EngineError::Mismatch(format!(
                "{what} are encoded {} wide; this model reads {} ({})",
                h.channels(),
                text.caption_channels,
                text.encoder
            )));
        }
    }
    if p.null.len() != 1 {
        return Err(EngineError::InvalidSetting(
            "one empty prompt, please".into(),
        ));
    }
    Ok(())
}

/// Runs the teacher's DDIM or the student's K autoregressive steps.
pub fn sample(
    model: &LoadedModel,
    req: &SampleRequest,
    device: &Device,
    mut on_step: impl FnMut(&StepImage),
) -> Result<SampleOutput> {
    let out = sample_until(model, req, device, |s| {
        on_step(s);
        ControlFlow::Continue(())
    })?;
    Ok(out.expect("never stopped"))
}

/// [`sample`] that stops after the step where `on_step` breaks, returning `None`.
pub fn sample_until(
    model: &LoadedModel,
    req: &SampleRequest,
    device: &Device,
    mut on_step: impl FnMut(&StepImage) -> ControlFlow<()>,
) -> Result<Option<SampleOutput>> {
    validate_request(&model.meta, req)?;
    let noise = req.noise.to_device::<4>(device)?;
    let mut tensors = Vec::new();
    let mut steps = Vec::new();
    let mut input = req.noise.clone();
    let mut stopped = false;
    let images = match &model.model {
        Model::Teacher(dit) => {
            let total = req.ddim.steps;
            let mut n = 0;
            let ddim = DdimOptions {
                clip_denoised: req.ddim.clip_denoised || model.meta.clip_denoised,
                ..req.ddim.clone()
            };
            let (cond, null) = conditions(dit, req, device)?;
            let out = ddim_sample_cond_until(dit, noise, &cond, null.as_ref(), &ddim, |s| {
                let state = HostTensor::from_tensor(s.state.clone());
                let x0 = HostTensor::from_tensor(s.x0_pred.clone());
                let name = format!("pred_z0_{}", s.index);
                let flow = on_step(&StepImage {
                    step: n,
                    total,
                    name: name.clone(),
                    index: s.index,
                    input: std::mem::replace(&mut input, state.clone()),
                    image: x0.clone(),
                });
                n += 1;
                tensors.push((format!("zt_{}", s.index), state));
                tensors.push((name, x0.clone()));
                steps.push(x0);
                flow
            });
            match out {
                Some(out) => HostTensor::from_tensor(out),
                None => return Ok(None),
            }
        }
        Model::Student(student) => {
            let names = student.config().output_names("infer");
            let anchors = student.config().anchors.clone();
            let total = names.len();
            let (cond, _) = conditions(&student.dit, req, device)?;
            let clip = model.meta.clip_denoised;
            student.sample_until(noise, cond, |k, pred| {
                let pred = if clip {
                    pred.clone().clamp(-1.0, 1.0)
                } else {
                    pred.clone()
                };
                let image = HostTensor::from_tensor(pred);
                let flow = on_step(&StepImage {
                    step: k,
                    total,
                    name: names[k].clone(),
                    index: anchors[k],
                    input: std::mem::replace(&mut input, image.clone()),
                    image: image.clone(),
                });
                tensors.push((names[k].clone(), image.clone()));
                steps.push(image);
                stopped = flow.is_break() && k + 1 < total;
                flow
            });
            if stopped {
                return Ok(None);
            }
            steps.last().cloned().expect("at least one step")
        }
    };
    Ok(Some(SampleOutput {
        tensors,
        steps,
        images,
    }))
}

/// The request's condition on `device` and the null one guidance runs against (none for a
/// class model without a null class).
fn conditions(dit: &Dit, req: &SampleRequest, device: &Device) -> Result<(Cond, Option<Cond>)> {
    match &req.prompts {
        Some(p) => {
            let null = p.null.repeat(p.encoded.len()).to_device(device)?;
            Ok((
                Cond::Text(p.encoded.to_device(device)?),
                Some(Cond::Text(null)),
            ))
        }
        None => {
            let null = dit
                .null_class()
                .map(|n| Cond::Labels(labels_to_device(&vec![n; req.labels.len()], device)));
            Ok((Cond::Labels(labels_to_device(&req.labels, device)), null))
        }
    }
}
