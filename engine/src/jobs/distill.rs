//! Distilling a teacher into an ARD student (Kim et al., CVPR 2025, §3.2) on its trajectory
//! set, by teacher forcing, on the training loop.

use std::path::PathBuf;

use burn::tensor::Device;
use rand::Rng;
use serde::Serialize;

use crate::distill::loss::{DistillLoss, distill_loss};
use crate::distill::self_forcing::SelfForcing;
use crate::distill::trajectories::TrajectorySet;
use crate::error::Result;
use crate::model::config::{ModelKind, ModelMeta, StudentConfig};
use crate::model::init::student_from_teacher;
use crate::model::loaded::{LoadedModel, Model};
use crate::model::student::ArdStudent;
use crate::train::events::Hooks;
use crate::train::options::{SMALL_DISTILL_BATCH, SMALL_DISTILL_EMA, TrainOptions};
use crate::train::run_dir::RunDir;
use crate::train::schedule::LrSchedule;
use crate::train::training_loop::{JobModel, training_loop};

/// The options a distillation run was started with (beside its checkpoint).
const DISTILL_OPTIONS_FILE: &str = "distill-options.json";

/// Peak learning rate of a small student's distillation: the paper's 1e-4 suits a 675M model
/// over 300k iterations, and left a 0.3M student (whose teacher's head predicted ε) at the class
/// means (docs/distillation.md).
pub const SMALL_DISTILL_LR: f64 = 1e-3;
/// Iterations of a small student's distillation: shorter runs were still improving, and the
/// ARD student's lead over the baseline grew with the length (docs/distillation.md).
pub const SMALL_DISTILL_ITERATIONS: u64 = 24000;

/// Distilling a teacher into an ARD student on a trajectory set (K comes from the set's anchors).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistillOptions {
    /// N: lower blocks that attend to the trajectory history (0 = step distillation).
    pub history_layers: usize,
    pub loss: DistillLoss,
    /// Teacher forcing only by default (the paper's); see [`SelfForcing`].
    pub self_forcing: SelfForcing,
    pub train: TrainOptions,
}

impl Default for DistillOptions {
    /// The small-model recipe of `docs/distillation.md`: N = 2 (half the default teacher's
    /// depth), the L1 loss ([`DistillLoss::default`]), AdamW and clipping, at batch [`SMALL_DISTILL_BATCH`], peak rate
    /// [`SMALL_DISTILL_LR`] on a cosine schedule, EMA [`SMALL_DISTILL_EMA`], for
    /// [`SMALL_DISTILL_ITERATIONS`] iterations.
    fn default() -> Self {
        Self {
            history_layers: 2,
            loss: DistillLoss::default(),
            self_forcing: SelfForcing::default(),
            train: TrainOptions {
                batch_size: SMALL_DISTILL_BATCH,
                lr: SMALL_DISTILL_LR,
                ema_decay: SMALL_DISTILL_EMA,
                lr_schedule: LrSchedule::cosine(),
                ..TrainOptions::paper(SMALL_DISTILL_ITERATIONS)
            },
        }
    }
}

/// Distils `teacher` into a K-step student with N history layers on a trajectory set.
pub fn distill_student(
    teacher: &LoadedModel,
    set: &TrajectorySet,
    distill: &DistillOptions,
    run: &RunDir,
    device: &Device,
    mut hooks: Hooks,
) -> Result<PathBuf> {
    let (history_layers, options, loss) = (distill.history_layers, &distill.train, distill.loss);
    let self_forcing = distill.self_forcing;
    let steps = set.manifest.anchors.len();
    let mut student_cfg = StudentConfig::new(steps, history_layers);
    student_cfg.anchors = set.manifest.anchors.clone();
    student_cfg.teacher_steps = set.manifest.ddim_steps;
    let dit = teacher.meta.dit.clone();
    set.check_teacher(&dit)?;
    let train_device = device.clone().autodiff();
    let fresh = || -> Result<ArdStudent> {
        let t = teacher.copy_to(&train_device)?;
        match student_from_teacher(t, student_cfg.clone())?.model {
            Model::Student(s) => Ok(s),
            Model::Teacher(_) => unreachable!(),
        }
    };
    let meta = ModelMeta {
        kind: ModelKind::Student,
        dit,
        student: Some(student_cfg.clone()),
        class_names: teacher.meta.class_names.clone(),
        clip_denoised: teacher.meta.clip_denoised,
    };
    let (resuming, _lock) = run.open(
        |stored| *stored == meta,
        "belongs to another distillation (teacher, K or N differ); use a new directory",
        DISTILL_OPTIONS_FILE,
        distill,
    )?;
    let mut trainer = run.trainer(resuming, fresh()?, options, &mut hooks)?;
    trainer.split_for(device, meta.dit.num_heads, steps * meta.dit.num_patches());
    let batch = options.batch_size;
    let n = set.labels.len();
    let model = JobModel {
        meta: &meta,
        file_name: "student.safetensors",
        as_model: &|ema: &ArdStudent| Model::Student(ema.clone()),
    };
    training_loop(&mut trainer, run, model, hooks, |t| {
        let self_forced = self_forcing.rows(t.iteration, batch);
        t.step_sharded(
            batch,
            |rng| {
                let idx: Vec<usize> = (0..batch).map(|_| rng.random_range(0..n)).collect();
                Ok(idx)
            },
            |model, idx, rows| {
                let idx = &idx[rows.clone()];
                let anchors: Vec<_> = set.anchors.iter().map(|a| a.rows(idx)).collect();
                let y: Vec<i64> = idx.iter().map(|&i| set.labels[i]).collect();
                let own = self_forced.saturating_sub(rows.start).min(rows.len());
                let x_t = set.x_t.rows(idx);
                distill_loss(model, &x_t, &anchors, &y, loss, own, &train_device)
            },
        )
    })
}
