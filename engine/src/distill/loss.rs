//! The student's training objective (Kim et al., CVPR 2025, reference `train_ARD.py`): teacher
//! forcing on the ground-truth trajectory, the mean over the K steps of the distance between
//! step k's output (first C channels) and its anchor: the paper's MSE, or iCT's pseudo-Huber
//! (Song & Dhariwal, 2023) or L1 ([`DistillLoss`]).

use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::io::host::{HostTensor, labels_to_device};
use crate::model::student::ArdStudent;
use crate::train::options::DistillLoss;

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

/// `x_t`: `[B, C, H, W]`; `anchors`: K targets `[B, C, H, W]` (step k's input is anchor k−1).
pub fn distill_loss(
    student: &ArdStudent,
    x_t: &HostTensor,
    anchors: &[HostTensor],
    labels: &[i64],
    loss: DistillLoss,
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
        .map(|(o, t)| step_distance(o.narrow(1, 0, c), t, loss))
        .collect();
    Ok(Tensor::cat(losses, 0).mean())
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
}
