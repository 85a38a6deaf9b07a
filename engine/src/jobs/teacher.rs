//! Training a DiT teacher from scratch on the training loop: epsilon prediction, with label
//! dropout for guidance (DiT, Peebles & Xie 2023) for a class model, or caption dropout to the
//! empty prompt (PixArt-α, Chen et al. 2024) for a text model.

use std::path::PathBuf;

use burn::tensor::Device;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::data::captioned::CaptionedSet;
use crate::data::datasets::Dataset;
use crate::diffusion::loss::{NoisedBatch, noised_batch, noised_text_batch, teacher_loss_rows};
use crate::diffusion::schedule::{TRAIN_TIMESTEPS, alpha_bar_from_betas, linear_betas};
use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::writer::write_atomically;
use crate::jobs::captions::CaptionBank;
use crate::model::config::{DitConfig, ModelMeta, TextConfig};
use crate::model::dit::Dit;
use crate::model::init::init_teacher;
use crate::model::loaded::Model;
use crate::model::params::InitOptions;
use crate::train::events::Hooks;
use crate::train::manifest::DATASET_FILE;
use crate::train::options::TrainOptions;
use crate::train::run_dir::RunDir;
use crate::train::schedule::LrSchedule;
use crate::train::training_loop::{JobModel, training_loop};

/// The options a teacher run was started with (beside its checkpoint).
const TEACHER_OPTIONS_FILE: &str = "teacher-options.json";

/// DiT's probability of training an example with the null class (for guidance).
pub const DIT_LABEL_DROPOUT: f64 = 0.1;
/// A small teacher trained from scratch: at small budgets the adaLN-Zero label pathway learns
/// slowly at 1e-4, and 3e-4 left samples blind to their class after 1000 steps (see the toy test
/// in `tests/pipeline.rs`).
pub const SMALL_TEACHER_LR: f64 = 1e-3;
/// Iterations of a small teacher, on a cosine schedule: a third as many at a constant rate left
/// it far from converged (docs/distillation.md).
pub const SMALL_TEACHER_ITERATIONS: u64 = 24000;
/// Training a pixel-space teacher from scratch: its architecture (the image size, channels and
/// classes come from the data) and its optimisation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TeacherOptions {
    pub patch_size: usize,
    pub hidden_size: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub label_dropout: f64,
    pub train: TrainOptions,
}

impl Default for TeacherOptions {
    /// [`DitConfig::fashion_mnist`]'s architecture, [`SMALL_TEACHER_ITERATIONS`] iterations at
    /// peak rate [`SMALL_TEACHER_LR`] on the cosine schedule.
    fn default() -> Self {
        Self::small(&DitConfig::fashion_mnist(), SMALL_TEACHER_ITERATIONS)
    }
}

/// Iterations of the text-to-image teacher on the emoji set by default.
pub const TEXT_TEACHER_ITERATIONS: u64 = 24000;

impl TeacherOptions {
    /// [`DitConfig::emoji_text`]'s architecture (without its text part, which the encoder
    /// gives), [`TEXT_TEACHER_ITERATIONS`] at [`SMALL_TEACHER_LR`] on the cosine schedule,
    /// captions dropped with DiT's probability.
    pub fn emoji_text() -> Self {
        Self::small(&DitConfig::emoji_text(), TEXT_TEACHER_ITERATIONS)
    }

    /// A small teacher from scratch: `arch`'s sizes, `iterations` at [`SMALL_TEACHER_LR`] on
    /// the cosine schedule, DiT's dropout of the condition.
    fn small(arch: &DitConfig, iterations: u64) -> Self {
        Self {
            patch_size: arch.patch_size,
            hidden_size: arch.hidden_size,
            depth: arch.depth,
            num_heads: arch.num_heads,
            label_dropout: DIT_LABEL_DROPOUT,
            train: TrainOptions {
                lr: SMALL_TEACHER_LR,
                lr_schedule: LrSchedule::cosine(),
                ..TrainOptions::paper(iterations)
            },
        }
    }

    /// The teacher's architecture for `size`×`size` images of `channels` channels and `classes`
    /// classes (epsilon prediction only: pixel-space teachers sample with a fixed variance).
    pub fn architecture(&self, size: usize, channels: usize, classes: usize) -> DitConfig {
        DitConfig::fashion_mnist()
            .with_image(size, channels)
            .with_patch(self.patch_size)
            .with_hidden(self.hidden_size)
            .with_depth(self.depth)
            .with_heads(self.num_heads)
            .with_classes(classes)
    }
}

/// Trains a class-conditional teacher on `data` (epsilon prediction, label dropout for
/// guidance) with the architecture of `teacher` fitted to the data.
pub fn train_teacher(
    data: &Dataset,
    teacher: &TeacherOptions,
    run: &RunDir,
    device: &Device,
    hooks: Hooks,
) -> Result<PathBuf> {
    let dit = teacher.architecture(data.image_size(), data.channels(), data.class_names.len());
    let meta = ModelMeta::pixel_teacher(dit.clone(), Some(data.class_names.clone()));
    let (null, dropout) = (dit.num_classes as i64, teacher.label_dropout);
    fit_teacher(
        data,
        &meta,
        teacher,
        run,
        device,
        hooks,
        |x0, idx, alpha_bar, rng| {
            let y: Vec<i64> = idx.iter().map(|&i| data.labels[i]).collect();
            noised_batch(x0, &y, alpha_bar, null, dropout, rng)
        },
    )
}

/// Trains a text-conditioned teacher on a captioned set whose captions `bank` holds encoded
/// (epsilon prediction; each image with one of its caption forms, or with probability
/// `label_dropout` the empty prompt, for guidance) with the architecture of `teacher` reading
/// `text`.
pub fn train_text_teacher(
    set: &CaptionedSet,
    bank: &CaptionBank,
    text: &TextConfig,
    teacher: &TeacherOptions,
    run: &RunDir,
    device: &Device,
    hooks: Hooks,
) -> Result<PathBuf> {
    let data = &set.data;
    let dit = teacher
        .architecture(data.image_size(), data.channels(), 0)
        .with_text(text.clone());
    if bank.null.channels() != text.caption_channels || bank.forms.len() != data.len() {
        return Err(EngineError::Mismatch(format!(
            "the encoded captions ({} images, {} wide) do not fit the set ({} images) and the \
             model ({} wide)",
            bank.forms.len(),
            bank.null.channels(),
            data.len(),
            text.caption_channels
        )));
    }
    let meta = ModelMeta::pixel_teacher(dit, None);
    let dropout = teacher.label_dropout;
    fit_teacher(
        data,
        &meta,
        teacher,
        run,
        device,
        hooks,
        |x0, idx, alpha_bar, rng| {
            noised_text_batch(x0, alpha_bar, rng, |rng| bank.draw(idx, dropout, rng))
        },
    )
}

/// The teacher's training on the loop: batches of `data` noised and conditioned by `noise`
/// (`x0`, the images' indices, ᾱ, the iteration's generator).
fn fit_teacher(
    data: &Dataset,
    meta: &ModelMeta,
    teacher: &TeacherOptions,
    run: &RunDir,
    device: &Device,
    mut hooks: Hooks,
    noise: impl Fn(&HostTensor, &[usize], &[f64], &mut StdRng) -> NoisedBatch + Sync,
) -> Result<PathBuf> {
    let dit = &meta.dit;
    dit.validate()?;
    let options = &teacher.train;
    let train_device = device.clone().autodiff();
    let fresh = || -> Result<Dit> {
        let m = init_teacher(
            dit,
            meta.class_names.clone(),
            InitOptions {
                seed: options.seed,
                zero_init: true,
            },
            &train_device,
        )?;
        match m.model {
            Model::Teacher(d) => Ok(d),
            Model::Student(_) => unreachable!(),
        }
    };
    let (resuming, _lock) = run.open(
        |stored| stored.dit == *dit,
        "was made with another architecture; resume without changing it, or use a new directory",
        TEACHER_OPTIONS_FILE,
        teacher,
    )?;
    write_dataset_description(data, &run.dir)?;
    let mut trainer = run.trainer(resuming, fresh()?, options, &mut hooks)?;
    trainer.split_for(device, dit.num_heads, dit.num_patches());
    let alpha_bar = alpha_bar_from_betas(&linear_betas(TRAIN_TIMESTEPS));
    let batch = options.batch_size;
    let model = JobModel {
        meta,
        file_name: "teacher.safetensors",
        as_model: &|ema: &Dit| Model::Teacher(ema.clone()),
    };
    training_loop(&mut trainer, run, model, hooks, |t| {
        t.step_sharded(
            batch,
            |rng| {
                let idx: Vec<usize> = (0..batch)
                    .map(|_| rng.random_range(0..data.len()))
                    .collect();
                let (x0, _) = data.batch(&idx);
                Ok(noise(&x0, &idx, &alpha_bar, rng))
            },
            |model, b, rows| teacher_loss_rows(model, b, rows, &train_device),
        )
    })
}

/// Writes what the teacher trains on into its run folder ([`DATASET_FILE`], for manifests).
fn write_dataset_description(data: &Dataset, dir: &std::path::Path) -> Result<()> {
    let description = serde_json::json!({
        "fingerprint": data.fingerprint(),
        "images": data.len(),
        "shape": [data.channels(), data.image_size(), data.image_size()],
        "classes": data.class_names,
    });
    let text = serde_json::to_string_pretty(&description).expect("plain data");
    write_atomically(&dir.join(DATASET_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_teacher_is_the_fashion_mnist_preset() {
        assert_eq!(
            TeacherOptions::default().architecture(28, 1, 10),
            DitConfig::fashion_mnist()
        );
    }
}
