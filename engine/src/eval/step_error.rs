//! Exposure bias, measured step by step (Kim et al., CVPR 2025: "errors pile up" along a
//! few-step trajectory when each jump sees only the latest state).
//!
//! For every trajectory of a set the teacher made, each of the student's K steps is compared
//! with the teacher's anchor of that step twice:
//! - **teacher-forced**: the step is fed the teacher's own earlier states, as in training, so
//!   its error is the step's own;
//! - **free-running**: the step is fed the student's own earlier predictions, as at inference
//!   (the key/value cache of [`ArdStudent::sample`]), so its error includes what the earlier
//!   steps got wrong.
//!
//! Their ratio per step is the exposure bias ARD's history is meant to reduce; step 0 sees only
//! x_T either way, so its two errors are equal.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::distill::TrajectorySet;
use crate::error::{EngineError, Result};
use crate::io::host::labels_to_device;
use crate::model::student::ArdStudent;

/// Mean squared error per step against the teacher's anchors (first C channels), averaged
/// over every element of every trajectory compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepErrors {
    /// Trajectories compared.
    pub count: usize,
    /// Step k fed the teacher's anchors 0..k−1 (training's teacher forcing).
    pub teacher_forced: Vec<f64>,
    /// Step k fed the student's own predictions of steps 0..k−1 (inference).
    pub free_running: Vec<f64>,
}

impl StepErrors {
    /// free-running / teacher-forced error per step: how much the earlier steps' errors cost.
    pub fn exposure_ratio(&self) -> Vec<f64> {
        self.free_running
            .iter()
            .zip(&self.teacher_forced)
            .map(|(f, t)| f / t)
            .collect()
    }
}

/// Sum of squared differences of two `[B, C, H, W]` tensors, in f64 on the host.
fn squared_error_sum(a: Tensor<4>, b: Tensor<4>) -> f64 {
    let d = (a - b).square().into_data();
    d.convert::<f32>()
        .as_slice::<f32>()
        .expect("f32 data")
        .iter()
        .map(|&v| v as f64)
        .sum()
}

/// The student's per-step errors on the first `count` trajectories of `set`, `batch` at a time.
pub fn step_errors(
    student: &ArdStudent,
    set: &TrajectorySet,
    count: usize,
    batch: usize,
    device: &Device,
) -> Result<StepErrors> {
    let k = student.steps();
    if set.anchors.len() != k {
        return Err(EngineError::Mismatch(format!(
            "the trajectory set has {} anchors per trajectory and the student takes {k} steps",
            set.anchors.len()
        )));
    }
    set.check_teacher(student.dit.config())?;
    let count = count.min(set.labels.len());
    if count == 0 || batch == 0 {
        return Err(EngineError::InvalidSetting(
            "nothing to compare: the set is empty, or the count or batch is 0".into(),
        ));
    }
    let channels = student.dit.config().in_channels;
    let mut forced = vec![0.0; k];
    let mut free = vec![0.0; k];
    let mut elements = 0usize;
    for start in (0..count).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(count)).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| set.labels[i]).collect();
        let x_t = set.x_t.rows(&idx).to_device::<4>(device)?;
        let targets: Vec<Tensor<4>> = set
            .anchors
            .iter()
            .map(|a| a.rows(&idx).to_device::<4>(device))
            .collect::<Result<_>>()?;
        elements += targets[0].dims().iter().product::<usize>();

        let mut inputs = vec![x_t.clone()];
        inputs.extend(targets.iter().take(k - 1).cloned());
        let outs = student.forward_teacher_forced(&inputs, labels_to_device(&labels, device))?;
        for (s, out) in outs.into_iter().enumerate() {
            forced[s] += squared_error_sum(out.narrow(1, 0, channels), targets[s].clone());
        }
        let predictions = student.sample(x_t, labels_to_device(&labels, device), |_, _| {});
        for (s, p) in predictions.into_iter().enumerate() {
            free[s] += squared_error_sum(p, targets[s].clone());
        }
    }
    let mean = |v: Vec<f64>| v.into_iter().map(|e| e / elements as f64).collect();
    Ok(StepErrors {
        count,
        teacher_forced: mean(forced),
        free_running: mean(free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::{AnchorKind, TrajectoryManifest};
    use crate::io::host::{HostTensor, seeded_noise};
    use crate::model::student::random_test_student;

    /// A set of `n` trajectories whose anchor k is the student's own prediction plus `shift[k]`.
    fn shifted_set(
        student: &ArdStudent,
        n: usize,
        shift: [f32; 3],
        device: &Device,
    ) -> TrajectorySet {
        let x_t = seeded_noise(vec![n, 1, 8, 8], 11);
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        let predictions = student.sample(
            x_t.to_device::<4>(device).unwrap(),
            labels_to_device(&labels, device),
            |_, _| {},
        );
        let anchors = predictions
            .into_iter()
            .zip(shift)
            .map(|(p, c)| HostTensor::from_tensor(p + c))
            .collect();
        let cfg = student.dit.config();
        TrajectorySet {
            manifest: TrajectoryManifest {
                count: n,
                shard_size: n,
                ddim_steps: 25,
                cfg_scale: 1.5,
                guided_channels: 1,
                anchors: student.config().anchors.clone(),
                anchor_kind: AnchorKind::X0,
                seed: 11,
                num_classes: cfg.num_classes,
                image_shape: cfg.image_shape().to_vec(),
                teacher: "random".into(),
                clip_denoised: true,
                precision: Default::default(),
            },
            x_t,
            anchors,
            labels,
        }
    }

    #[test]
    fn a_student_on_its_own_trajectories_has_no_error_and_shifts_show_exactly() {
        let device = Device::flex();
        let student = random_test_student(7, &device);
        // Anchors = the student's own predictions: fed them, the teacher-forced pass is the
        // cached inference again (ARD's equivalence), so every error vanishes.
        let own = step_errors(
            &student,
            &shifted_set(&student, 10, [0.0; 3], &device),
            10,
            4,
            &device,
        )
        .unwrap();
        assert_eq!(own.count, 10);
        for e in own.teacher_forced.iter().chain(&own.free_running) {
            assert!(*e < 1e-10, "{own:?}");
        }
        // Shifted anchors: the free-running predictions do not read the anchors, so each step's
        // error is its shift squared; step 0 sees only x_T, so its teacher-forced error is too,
        // while later teacher-forced steps are fed shifted inputs and move away from it.
        let shift = [0.1f32, 0.2, 0.3];
        let e = step_errors(
            &student,
            &shifted_set(&student, 10, shift, &device),
            7,
            3,
            &device,
        )
        .unwrap();
        assert_eq!(e.count, 7);
        for (k, c) in shift.iter().enumerate() {
            let want = (*c as f64).powi(2);
            assert!((e.free_running[k] - want).abs() < 1e-4 * want, "{e:?}");
        }
        assert!((e.teacher_forced[0] - 0.01).abs() < 1e-6, "{e:?}");
        assert!((e.exposure_ratio()[0] - 1.0).abs() < 1e-4);
        assert!((e.teacher_forced[2] - 0.09).abs() > 1e-4, "{e:?}");
        // A set of another step count is refused.
        let mut wrong = shifted_set(&student, 4, shift, &device);
        wrong.anchors.pop();
        assert!(step_errors(&student, &wrong, 4, 2, &device).is_err());
    }
}
