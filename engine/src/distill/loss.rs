//! The student's training objective (Kim et al., CVPR 2025, reference `train_ARD.py`): teacher
//! forcing on the ground-truth trajectory, the mean over the K steps of the distance between
//! step k's output (first C channels) and its anchor: the paper's MSE, or iCT's pseudo-Huber
//! (Song & Dhariwal, 2023) or L1 ([`DistillLoss`]). Optionally part of the batch is
//! self-forced ([`crate::distill::SelfForcing`]): its history is the student's own rollout.

use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::student::ArdStudent;

/// How a student's step output is compared with its anchor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillLoss {
    /// Mean squared error (the paper's).
    Mse,
    /// Per image, `sqrt(‖o − a‖² + c²) − c` with `c = 0.00054 √(C·H·W)` (iCT's pseudo-Huber):
    /// quadratic for small errors, linear for large ones. It beat MSE for both students
    /// (docs/distillation.md).
    PseudoHuber,
    /// Mean absolute error per pixel. The default: of the three, the lowest FID degradation
    /// for the ARD student and the largest lead over the baseline (docs/distillation.md).
    #[default]
    L1,
}

/// iCT's pseudo-Huber constant per √dimension: `c = 0.00054 √(C·H·W)`.
pub const PSEUDO_HUBER_C_PER_SQRT_DIM: f64 = 0.00054;

/// The distance `loss` puts between `out` and `target` (`[B, C, H, W]` each), averaged.
pub fn step_distance(out: Tensor<4>, target: Tensor<4>, loss: DistillLoss) -> Tensor<1> {
    let diff = out - target;
    match loss {
        DistillLoss::Mse => diff.square().mean(),
        DistillLoss::L1 => diff.abs().mean(),
        DistillLoss::PseudoHuber => {
            let [b, c, h, w] = diff.dims();
            let dim = (c * h * w) as f64;
            let cc = PSEUDO_HUBER_C_PER_SQRT_DIM * dim.sqrt();
            let sq = diff.square().reshape([b, c * h * w]).sum_dim(1);
            ((sq + cc * cc).sqrt() - cc).mean()
        }
    }
}

/// `x_t`: `[B, C, H, W]`; `anchors`: K targets `[B, C, H, W]` (step k's input is anchor k−1,
/// except in the first `self_forced` rows, where it is the student's own prediction k−1 from
/// the same x_T: [`own_history`]).
pub fn distill_loss(
    student: &ArdStudent,
    x_t: &HostTensor,
    anchors: &[HostTensor],
    labels: &[i64],
    loss: DistillLoss,
    self_forced: usize,
    device: &Device,
) -> Result<Tensor<1>> {
    let k = student.steps();
    let b = labels.len();
    let targets: Vec<Tensor<4>> = anchors
        .iter()
        .map(|a| a.to_device(device))
        .collect::<Result<_>>()?;
    let mut inputs = vec![x_t.to_device::<4>(device)?];
    let teacher_history = targets.iter().take(k - 1).cloned();
    if self_forced == 0 {
        inputs.extend(teacher_history);
    } else {
        let m = self_forced.min(b);
        let rows: Vec<usize> = (0..m).collect();
        let own = own_history(student, &x_t.rows(&rows), &labels[..m], device)?;
        inputs.extend(own.into_iter().zip(teacher_history).map(|(own, teacher)| {
            if m == b {
                own
            } else {
                Tensor::cat(vec![own, teacher.narrow(0, m, b - m)], 0)
            }
        }));
    }
    let outs = student.forward_teacher_forced(&inputs, labels_to_device(labels, device))?;
    let c = student.dit.config().in_channels;
    let losses: Vec<Tensor<1>> = outs
        .into_iter()
        .zip(targets)
        .map(|(o, t)| step_distance(o.narrow(1, 0, c), t, loss))
        .collect();
    Ok(Tensor::cat(losses, 0).mean())
}

/// The student's own predictions of steps 0..K−1 from `x_t: [B, C, H, W]` (its inference
/// rollout with the key/value cache, on the weights without autodiff: no gradient flows through
/// the history), moved to `device` → K−1 tensors `[B, C, H, W]`.
pub fn own_history(
    student: &ArdStudent,
    x_t: &HostTensor,
    labels: &[i64],
    device: &Device,
) -> Result<Vec<Tensor<4>>> {
    let k = student.steps();
    if k < 2 {
        return Ok(Vec::new());
    }
    let rollout = student.valid();
    let inner = rollout.dit.device();
    let predictions = rollout.sample_until(
        x_t.to_device(&inner)?,
        labels_to_device(labels, &inner),
        |s, _| {
            if s + 2 >= k {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    predictions
        .into_iter()
        .take(k - 1)
        .map(|p| HostTensor::from_tensor(p).to_device(device))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn pair(device: &Device) -> (Tensor<4>, Tensor<4>, Vec<f32>) {
        let a: Vec<f32> = (0..2 * 3 * 4 * 4)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..2 * 3 * 4 * 4)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let d: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let t = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [2, 3, 4, 4]), device);
        (t(a), t(b), d)
    }

    #[test]
    fn each_distance_matches_its_formula_in_float64() {
        let device = Device::flex();
        let (a, b, d) = pair(&device);
        let n = d.len() as f64;
        let mse = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
        let l1 = d.iter().map(|v| (*v as f64).abs()).sum::<f64>() / n;
        let c = PSEUDO_HUBER_C_PER_SQRT_DIM * 48f64.sqrt();
        let huber = d
            .chunks(48)
            .map(|img| (img.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() + c * c).sqrt() - c)
            .sum::<f64>()
            / 2.0;
        for (loss, want) in [
            (DistillLoss::Mse, mse),
            (DistillLoss::L1, l1),
            (DistillLoss::PseudoHuber, huber),
        ] {
            let got = step_distance(a.clone(), b.clone(), loss).into_scalar::<f32>() as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{loss:?}: {got} vs {want}"
            );
        }
        let zero = step_distance(a.clone(), a, DistillLoss::PseudoHuber).into_scalar::<f32>();
        assert!(zero.abs() < 1e-6, "{zero}");
    }

    #[test]
    fn self_forced_rows_see_their_own_rollout_and_the_rest_the_teachers_anchors() {
        use crate::io::host::seeded_noise;
        let device = Device::flex().autodiff();
        let student = crate::model::student::random_test_student(3, &device);
        let x_t = seeded_noise(vec![2, 1, 8, 8], 5);
        let labels = [0i64, 2];
        let own = student.sample(
            x_t.to_device::<4>(&device).unwrap(),
            labels_to_device(&labels, &device),
            |_, _| {},
        );
        // Anchors = the student's own predictions shifted by a constant per step.
        let shift = [0.3f32, -0.2, 0.1];
        let anchors: Vec<HostTensor> = own
            .iter()
            .zip(shift)
            .map(|(p, c)| HostTensor::from_tensor(p.clone().detach() + c))
            .collect();
        let loss = |x: &HostTensor, a: &[HostTensor], y: &[i64], m: usize| {
            distill_loss(&student, x, a, y, DistillLoss::Mse, m, &device)
                .unwrap()
                .into_scalar::<f32>() as f64
        };
        // Fed its own history, each step's output is its rollout's: the loss is the shifts'.
        let want = shift.iter().map(|c| (*c as f64).powi(2)).sum::<f64>() / 3.0;
        let self_forced = loss(&x_t, &anchors, &labels, 2);
        assert!(
            (self_forced - want).abs() <= 1e-4 * want,
            "{self_forced} vs {want}"
        );
        // Fed the (shifted) anchors, the later steps' outputs move: another loss.
        let forced = loss(&x_t, &anchors, &labels, 0);
        assert!((forced - want).abs() > 1e-3 * want, "{forced} vs {want}");
        // One self-forced row of two: the mean of the two rows' own losses.
        let row = |i: usize| {
            let a: Vec<HostTensor> = anchors.iter().map(|a| a.rows(&[i])).collect();
            (x_t.rows(&[i]), a, [labels[i]])
        };
        let ((x0, a0, y0), (x1, a1, y1)) = (row(0), row(1));
        let mixed = loss(&x_t, &anchors, &labels, 1);
        let parts = (loss(&x0, &a0, &y0, 1) + loss(&x1, &a1, &y1, 0)) / 2.0;
        assert!((mixed - parts).abs() <= 1e-4 * parts, "{mixed} vs {parts}");
        assert!(mixed.is_finite() && forced.is_finite());
    }
}
