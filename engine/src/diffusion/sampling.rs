//! One sampling run of a loaded model — the teacher's DDIM (Song et al. 2021) or the ARD
//! student's K autoregressive steps (Kim et al. 2025) — with every intermediate step named as in
//! the reference vectors: `zt_{i}` / `pred_z0_{i}` for a teacher, `infer_z{anchor}` for a student.

use std::ops::ControlFlow;

use burn::tensor::Device;

use crate::diffusion::ddim::{DdimOptions, ddim_sample_until};
use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::config::ModelMeta;
use crate::model::loaded::{LoadedModel, Model};

/// What to sample: the starting noise `[B, C, H, W]` and one label per image.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    pub noise: HostTensor,
    pub labels: Vec<i64>,
    /// Teacher only.
    pub ddim: DdimOptions,
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

/// Checks a request against the model's shape and classes.
pub fn validate_request(meta: &ModelMeta, req: &SampleRequest) -> Result<()> {
    let d = &meta.dit;
    let want = d.batch_shape(req.labels.len());
    if req.noise.shape != want {
        return Err(EngineError::Mismatch(format!(
            "noise has shape {:?}; this model needs {want:?} (one image per label)",
            req.noise.shape
        )));
    }
    if !(1..=crate::diffusion::schedule::TRAIN_TIMESTEPS).contains(&req.ddim.steps) {
        return Err(EngineError::InvalidSetting(format!(
            "DDIM steps must be between 1 and {}, got {}",
            crate::diffusion::schedule::TRAIN_TIMESTEPS,
            req.ddim.steps
        )));
    }
    if !req.ddim.cfg_scale.is_finite() || req.ddim.cfg_scale < 0.0 {
        return Err(EngineError::InvalidSetting(format!(
            "guidance scale {} must be a finite number ≥ 0 (1 = no guidance)",
            req.ddim.cfg_scale
        )));
    }
    if req.ddim.guided_channels == Some(0) {
        return Err(EngineError::InvalidSetting(
            "guidance needs at least one guided channel".into(),
        ));
    }
    if req.labels.is_empty() {
        return Err(EngineError::InvalidSetting(
            "no labels: nothing to sample".into(),
        ));
    }
    if let Some(&bad) = req
        .labels
        .iter()
        .find(|&&l| l < 0 || l >= d.num_classes as i64)
    {
        return Err(EngineError::UnknownClass(format!(
            "unknown class {bad}: the model has {} classes (0..={})",
            d.num_classes,
            d.num_classes - 1
        )));
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
            let out = ddim_sample_until(dit, noise, &req.labels, &ddim, |s| {
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
            let y = labels_to_device(&req.labels, device);
            let clip = model.meta.clip_denoised;
            student.sample_until(noise, y, |k, pred| {
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
