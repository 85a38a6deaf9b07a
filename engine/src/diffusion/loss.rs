//! The teacher's training objective (Ho et al., "Denoising Diffusion Probabilistic Models",
//! NeurIPS 2020; DiT's training script): epsilon prediction on the VP forward process, with label
//! dropout (Ho & Salimans 2022) so that one network gives both guided and unguided outputs.

use burn::tensor::{Device, Tensor};
use rand::Rng;
use rand::rngs::StdRng;

use crate::error::Result;
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::dit::Dit;

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

/// Mean squared error between the predicted and the true noise (first C output channels).
pub fn teacher_loss(
    model: &Dit,
    x0: &HostTensor,
    labels: &[i64],
    alpha_bar: &[f64],
    label_dropout: f64,
    rng: &mut StdRng,
    device: &Device,
) -> Result<Tensor<1>> {
    let (x_t, t, eps) = q_sample(x0, alpha_bar, rng);
    let y = drop_labels(labels, model.y_embedder.null_class(), label_dropout, rng);
    let c = model.config().in_channels;
    let out = model.forward(x_t.to_device(device)?, &t, labels_to_device(&y, device));
    let diff = out.narrow(1, 0, c) - eps.to_device::<4>(device)?;
    Ok(diff.square().mean())
}
