//! The teacher's training objective (Ho et al., "Denoising Diffusion Probabilistic Models",
//! NeurIPS 2020; DiT's training script): epsilon prediction on the VP forward process, with label
//! dropout (Ho & Salimans 2022) so that one network gives both guided and unguided outputs.

use std::ops::Range;

use burn::tensor::{Device, Tensor};
use rand::Rng;
use rand::rngs::StdRng;

use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::dit::Dit;
use crate::model::text_condition::{Cond, HostPrompts};

/// `x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε` for a batch `[B, …]` with one timestep per image; returns
/// `(x_t, t, ε)` on the host.
pub fn q_sample(
    x0: &HostTensor,
    alpha_bar: &[f64],
    rng: &mut StdRng,
) -> (HostTensor, Vec<f32>, HostTensor) {
    let b = x0.shape[0];
    let per = x0.len() / b;
    let t: Vec<usize> = (0..b)
        .map(|_| rng.random_range(0..alpha_bar.len()))
        .collect();
    let eps: Vec<f32> = (0..x0.len())
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    let mut x_t = Vec::with_capacity(x0.len());
    for (i, &ti) in t.iter().enumerate() {
        let (a, s) = (
            alpha_bar[ti].sqrt() as f32,
            (1.0 - alpha_bar[ti]).sqrt() as f32,
        );
        let range = i * per..(i + 1) * per;
        x_t.extend(
            x0.data[range.clone()]
                .iter()
                .zip(&eps[range])
                .map(|(x, e)| a * x + s * e),
        );
    }
    (
        HostTensor::new(x0.shape.clone(), x_t),
        t.iter().map(|&v| v as f32).collect(),
        HostTensor::new(x0.shape.clone(), eps),
    )
}

/// Replaces each label by the null class with probability `p`.
pub fn drop_labels(labels: &[i64], null_class: i64, p: f64, rng: &mut StdRng) -> Vec<i64> {
    labels
        .iter()
        .map(|&l| if rng.random_bool(p) { null_class } else { l })
        .collect()
}

/// A teacher training batch with every random draw of its iteration made: the noisy images
/// `x_t`, their timesteps, the noise they were made with, and the labels after dropout.
#[derive(Clone, Debug)]
pub struct NoisedBatch {
    pub x_t: HostTensor,
    pub t: Vec<f32>,
    pub eps: HostTensor,
    /// A class model's labels (empty for a text model).
    pub labels: Vec<i64>,
    /// A text model's prompts, one per image (the empty prompt where dropped).
    pub prompts: Option<HostPrompts>,
}

/// Noises `x0` at random timesteps and drops labels to `null_class` with probability
/// `label_dropout`.
pub fn noised_batch(
    x0: &HostTensor,
    labels: &[i64],
    alpha_bar: &[f64],
    null_class: i64,
    label_dropout: f64,
    rng: &mut StdRng,
) -> NoisedBatch {
    let (x_t, t, eps) = q_sample(x0, alpha_bar, rng);
    let labels = drop_labels(labels, null_class, label_dropout, rng);
    NoisedBatch {
        x_t,
        t,
        eps,
        labels,
        prompts: None,
    }
}

/// Noises `x0` at random timesteps for a text model; `prompts` draws each image's prompt
/// (after the noise, from the same generator).
pub fn noised_text_batch(
    x0: &HostTensor,
    alpha_bar: &[f64],
    rng: &mut StdRng,
    prompts: impl FnOnce(&mut StdRng) -> HostPrompts,
) -> NoisedBatch {
    let (x_t, t, eps) = q_sample(x0, alpha_bar, rng);
    NoisedBatch {
        x_t,
        t,
        eps,
        labels: Vec::new(),
        prompts: Some(prompts(rng)),
    }
}

/// Mean squared error between the predicted and the true noise (first C output channels) over
/// `rows` of `batch`.
pub fn teacher_loss_rows(
    model: &Dit,
    batch: &NoisedBatch,
    rows: Range<usize>,
    device: &Device,
) -> Result<Tensor<1>> {
    let idx: Vec<usize> = rows.clone().collect();
    let c = model.config().in_channels;
    let cond = match &batch.prompts {
        Some(p) => Cond::Text(p.rows(&idx).to_device(device)?),
        None => Cond::Labels(labels_to_device(&batch.labels[rows.clone()], device)),
    };
    let out = model.forward(
        batch.x_t.rows(&idx).to_device(device)?,
        &batch.t[rows],
        cond,
    );
    let diff = out.narrow(1, 0, c) - batch.eps.rows(&idx).to_device::<4>(device)?;
    Ok(diff.square().mean())
}

/// [`teacher_loss_rows`] over a whole freshly noised batch.
pub fn teacher_loss(
    model: &Dit,
    x0: &HostTensor,
    labels: &[i64],
    alpha_bar: &[f64],
    label_dropout: f64,
    rng: &mut StdRng,
    device: &Device,
) -> Result<Tensor<1>> {
    let null = model.null_class().ok_or_else(|| {
        EngineError::WrongKind("this loss takes class labels; the model is text-conditioned".into())
    })?;
    let batch = noised_batch(x0, labels, alpha_bar, null, label_dropout, rng);
    teacher_loss_rows(model, &batch, 0..labels.len(), device)
}
