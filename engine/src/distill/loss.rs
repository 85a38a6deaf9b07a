//! The student's training objective (Kim et al., CVPR 2025, reference `train_ARD.py`): teacher
//! forcing on the ground-truth trajectory, the mean over the K steps of the MSE between step k's
//! output (first C channels) and its anchor.

use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::student::ArdStudent;

/// `x_t`: `[B, C, H, W]`; `anchors`: K targets `[B, C, H, W]` (step k's input is anchor k−1).
pub fn distill_loss(
    student: &ArdStudent,
    x_t: &HostTensor,
    anchors: &[HostTensor],
    labels: &[i64],
    device: &Device,
) -> Result<Tensor<1>> {
    let k = student.steps();
    let targets: Vec<Tensor<4>> = anchors
        .iter()
        .map(|a| a.to_device(device))
        .collect::<Result<_>>()?;
    let mut inputs = vec![x_t.to_device::<4>(device)?];
    inputs.extend(targets.iter().take(k - 1).cloned());
    let outs = student.forward_teacher_forced(&inputs, labels_to_device(labels, device))?;
    let c = student.dit.config().in_channels;
    let losses: Vec<Tensor<1>> = outs
        .into_iter()
        .zip(targets)
        .map(|(o, t)| (o.narrow(1, 0, c) - t).square().mean())
        .collect();
    Ok(Tensor::cat(losses, 0).mean())
}
