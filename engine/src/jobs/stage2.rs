//! Stage 2 of ARD (Kim et al., CVPR 2025, §3.3): adversarial fine-tuning of a distilled
//! student (`gan/finetune.rs` holds one iteration), on the training loop.

use std::path::PathBuf;

use burn::tensor::Device;

use crate::data::datasets::Dataset;
use crate::diffusion::schedule::TRAIN_TIMESTEPS;
use crate::distill::trajectories::TrajectorySet;
use crate::error::{EngineError, Result};
use crate::gan::discriminator::Discriminator;
use crate::gan::finetune::{GanContext, GanOptions, GanPair, gan_step};
use crate::model::loaded::{LoadedModel, Model};
use crate::train::events::Hooks;
use crate::train::run_dir::RunDir;
use crate::train::training_loop::{JobModel, training_loop};

/// The options a stage-2 run was started with (beside its checkpoint).
const GAN_OPTIONS_FILE: &str = "gan-options.json";

fn check_inputs(
    teacher: &LoadedModel,
    student: &LoadedModel,
    set: &TrajectorySet,
    real: &Dataset,
    gan: &GanOptions,
) -> Result<()> {
    let fail = |m: String| Err(EngineError::Mismatch(m));
    let wrong_kind = |m: String| Err(EngineError::WrongKind(m));
    let bad_option = |m: String| Err(EngineError::InvalidSetting(m));
    let Some(s) = &student.meta.student else {
        return wrong_kind("the adversarial stage starts from a distilled student, and this is a teacher (distil it first with `ard distill`)".into());
    };
    if !matches!(teacher.model, Model::Teacher(_)) {
        return wrong_kind(
            "the discriminator's feature extractor must be the teacher, and this is a student"
                .into(),
        );
    }
    let dit = &teacher.meta.dit;
    if student.meta.dit != *dit {
        return fail("the student was not distilled from a teacher of this architecture".into());
    }
    set.check_teacher(dit)?;
    if set.manifest.anchors != s.anchors || set.manifest.ddim_steps != s.teacher_steps {
        return fail(format!(
            "the trajectory set's anchors {:?} of a {}-step DDIM differ from the student's {:?} of {} steps",
            set.manifest.anchors, set.manifest.ddim_steps, s.anchors, s.teacher_steps
        ));
    }
    if real.is_empty() {
        return fail("there are no real images for the discriminator".into());
    }
    if real.class_names.len() != dit.num_classes {
        return fail(format!(
            "the real images have {} classes and the model {}: the discriminator conditions on the class, so they must be the same classes in the same order",
            real.class_names.len(),
            dit.num_classes
        ));
    }
    if real.images.shape[1..] != dit.image_shape() {
        return fail(format!(
            "the real images are {:?} and the model makes {:?}{}",
            &real.images.shape[1..],
            dit.image_shape(),
            if dit.in_channels == 4 {
                " (a latent model needs its real images encoded by the VAE)"
            } else {
                ""
            }
        ));
    }
    if let Some(bad) = real
        .labels
        .iter()
        .find(|&&l| l < 0 || l as usize >= dit.num_classes)
    {
        return fail(format!(
            "the real images have label {bad}, and the model has {} classes",
            dit.num_classes
        ));
    }
    if gan.train.batch_size < 2 {
        return bad_option("the adversarial stage needs a batch of at least 2 (a hinge loss on one image collapses)".into());
    }
    let [lo, hi] = gan.noise_range;
    if lo >= hi || hi > TRAIN_TIMESTEPS {
        return bad_option(format!(
            "the re-noising range [{lo}, {hi}) must be non-empty and within the {TRAIN_TIMESTEPS} training timesteps"
        ));
    }
    let finite = [gan.disc_lr, gan.weight_factor, gan.max_weight]
        .iter()
        .all(|v| v.is_finite());
    if !(finite && gan.disc_lr > 0.0 && gan.weight_factor >= 0.0 && gan.max_weight >= 0.0) {
        return bad_option(
            "the discriminator's learning rate must be finite and > 0, the weight factor and clamp finite and ≥ 0"
                .into(),
        );
    }
    Ok(())
}

/// Fine-tunes `student` (distilled from `teacher` on `set`) adversarially against `real`
/// images; writes the EMA generator as `student.safetensors` in the run directory.
#[allow(clippy::too_many_arguments)]
pub fn finetune_gan(
    teacher: &LoadedModel,
    student: &LoadedModel,
    set: &TrajectorySet,
    real: &Dataset,
    gan: &GanOptions,
    run: &RunDir,
    device: &Device,
    mut hooks: Hooks,
) -> Result<PathBuf> {
    check_inputs(teacher, student, set, real, gan)?;
    let mut meta = student.meta.clone();
    if let Some(s) = meta.student.as_mut() {
        s.adversarial = true;
    }
    let train_device = device.clone().autodiff();
    let ctx = GanContext::new(teacher, set, real, gan, &train_device)?;
    let dit = &teacher.meta.dit;
    let fresh = || -> Result<GanPair> {
        let Model::Student(generator) = student.copy_to(&train_device)?.model else {
            unreachable!("checked: a student")
        };
        let discriminator = Discriminator::fresh(
            dit.depth,
            dit.hidden_size,
            &gan.disc,
            gan.train.seed ^ 0xD15C,
            &train_device,
        )?;
        Ok(GanPair {
            generator,
            discriminator,
        })
    };
    let (resuming, _lock) = run.open(
        |stored| *stored == meta,
        "belongs to another run (another student or teacher); use a new directory",
        GAN_OPTIONS_FILE,
        gan,
    )?;
    let mut trainer = run.trainer(resuming, fresh()?, &gan.train, &mut hooks)?;
    let model = JobModel {
        meta: &meta,
        file_name: "student.safetensors",
        as_model: &|ema: &GanPair| Model::Student(ema.generator.clone()),
    };
    training_loop(&mut trainer, run, model, hooks, |t| gan_step(t, &ctx))
}
