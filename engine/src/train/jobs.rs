//! Long jobs with progress events, periodic checkpoints and sample grids, and exact resume:
//! training a teacher and distilling a student. The CLI prints their events; the app plots them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use rand::Rng;

use crate::data::datasets::Dataset;
use crate::diffusion::ddim::DdimOptions;
use crate::diffusion::loss::{noised_batch, teacher_loss_rows};
use crate::diffusion::sampling::{SampleRequest, sample};
use crate::diffusion::schedule::{TRAIN_TIMESTEPS, alpha_bar_from_betas, linear_betas};
use crate::distill::loss::distill_loss;
use crate::distill::trajectories::TrajectorySet;
use crate::error::{EngineError, Result};
use crate::eval::monitor::{EVAL_LOG, EvalPoint, TrainingEval, read_eval_log, write_eval_log};
use crate::io::host::seeded_noise;
use crate::io::preview::{save_png, step_strip};
use crate::io::writer::Storage;
use crate::model::config::{ModelMeta, StudentConfig};
use crate::model::dit::Dit;
use crate::model::init::{init_teacher, student_from_teacher};
use crate::model::loaded::{LoadedModel, Model};
use crate::model::params::InitOptions;
use crate::model::student::ArdStudent;
use crate::train::checkpoint::{RunLock, checkpoint_meta, keep_run_options, lock_run_folder};
use crate::train::options::{
    CHECKPOINT_EVERY, DistillOptions, SAMPLE_EVERY, TeacherOptions, TrainOptions,
};
use crate::train::trainer::Trainer;
use crate::vae::AutoencoderKL;

/// The options a teacher run was started with (beside its checkpoint).
const TEACHER_OPTIONS_FILE: &str = "teacher-options.json";
/// The options a distillation run was started with (beside its checkpoint).
const DISTILL_OPTIONS_FILE: &str = "distill-options.json";

/// Where and how often a run writes.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub checkpoint_every: u64,
    /// Sample grid every this many iterations (0 = only at the end).
    pub sample_every: u64,
    /// Continue from `dir/checkpoint.safetensors` when it exists.
    pub resume: bool,
    /// Score the EMA and raw weights along the way (`eval.jsonl`), when given.
    pub eval: Option<Arc<TrainingEval>>,
    /// A latent model's sample grids are decoded through this VAE (on its own device), when
    /// given; otherwise latents are previewed with a fixed latent→RGB map.
    pub decoder: Option<Arc<AutoencoderKL>>,
}

impl RunDir {
    /// `dir`, with the default checkpoint and sample intervals, resuming when it can.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            checkpoint_every: CHECKPOINT_EVERY,
            sample_every: SAMPLE_EVERY,
            resume: true,
            eval: None,
            decoder: None,
        }
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    /// Takes the run folder for this job ([`lock_run_folder`]: the lock lives as long as the
    /// returned [`RunLock`]) and says whether the run resumes (asked to, and a checkpoint
    /// exists). Refuses a checkpoint whose model description fails `same_model` (`other` tells
    /// the user why, after the checkpoint's path) and, through [`keep_run_options`], other
    /// settings than the run's own, which it keeps in `options_file`.
    pub(crate) fn open<T: serde::Serialize>(
        &self,
        same_model: impl FnOnce(&ModelMeta) -> bool,
        other: &str,
        options_file: &str,
        options: &T,
    ) -> Result<(bool, RunLock)> {
        let lock = lock_run_folder(&self.dir)?;
        let resuming = self.resume && self.checkpoint().exists();
        if resuming && !same_model(&checkpoint_meta(&self.checkpoint())?) {
            return Err(EngineError::Input(format!(
                "{} {other}",
                self.checkpoint().display()
            )));
        }
        keep_run_options(&self.dir.join(options_file), options, resuming)?;
        Ok((resuming, lock))
    }

    /// The job's trainer for `model` (freshly built): continued from the checkpoint when
    /// `resuming` (reporting the iteration it continues from), otherwise new with `options`.
    pub(crate) fn trainer<M: Module>(
        &self,
        resuming: bool,
        model: M,
        options: &TrainOptions,
        on_event: &mut dyn FnMut(JobEvent),
    ) -> Result<Trainer<M>> {
        if !resuming {
            return Ok(Trainer::new(model, options.clone()));
        }
        let t = Trainer::resume(model, &self.checkpoint(), Some(options.iterations))?;
        on_event(JobEvent::Resumed {
            iteration: t.iteration,
        });
        Ok(t)
    }
}

/// What a running job reports.
#[derive(Clone, Debug)]
pub enum JobEvent {
    Resumed {
        iteration: u64,
    },
    Progress {
        iteration: u64,
        total: u64,
        loss: f32,
        elapsed_s: f64,
        eta_s: f64,
    },
    Checkpoint {
        iteration: u64,
        path: PathBuf,
    },
    Samples {
        iteration: u64,
        path: PathBuf,
    },
    /// An evaluation point (also appended to the run's `eval.jsonl`).
    Eval(EvalPoint),
    /// Further values of the iteration just done (the adversarial stage's loss parts, named
    /// by `gan::GAN_METRICS`).
    Metrics {
        iteration: u64,
        values: Vec<f32>,
    },
    /// The EMA weights, written as a model file.
    Finished {
        path: PathBuf,
    },
    Stopped {
        iteration: u64,
    },
}

/// How a caller follows and stops a job: events as they happen, and a flag checked before every
/// iteration (set it to stop after a checkpoint).
pub struct JobHooks<'a> {
    pub stop: &'a AtomicBool,
    pub on_event: &'a mut dyn FnMut(JobEvent),
}

/// Runs `trainer` to its end (or until `stop`), checkpointing and sampling along the way.
pub(crate) fn drive<M: burn::module::Module>(
    trainer: &mut Trainer<M>,
    run: &RunDir,
    meta: &ModelMeta,
    out_name: &str,
    hooks: JobHooks,
    mut step: impl FnMut(&mut Trainer<M>) -> Result<f32>,
    ema_model: impl Fn(&M) -> Model,
) -> Result<PathBuf> {
    let JobHooks { stop, on_event } = hooks;
    std::fs::create_dir_all(run.dir.join("samples")).map_err(|e| EngineError::io(&run.dir, e))?;
    let out_path = run.dir.join(out_name);
    let save_ema = |trainer: &Trainer<M>| -> Result<()> {
        LoadedModel {
            model: ema_model(&trainer.ema),
            meta: meta.clone(),
        }
        .save(&out_path, Storage::F32)
    };
    let mut points = match &run.eval {
        Some(ev) => {
            ev.check(meta)?;
            let mut points = read_eval_log(&run.dir.join(EVAL_LOG))?;
            points.retain(|p| p.iteration <= trainer.iteration);
            points
        }
        None => Vec::new(),
    };
    // Scores the run's weights now and records the point.
    let evaluate = |ev: &TrainingEval,
                    trainer: &Trainer<M>,
                    points: &mut Vec<EvalPoint>|
     -> Result<JobEvent> {
        let i = trainer.iteration;
        let since = points.last().map_or(0, |p| p.iteration);
        let recent: Vec<f64> = trainer
            .losses
            .iter()
            .filter(|(it, _)| *it >= since && *it < i)
            .map(|(_, l)| *l as f64)
            .collect();
        let as_model = |m: &M| LoadedModel {
            model: ema_model(m),
            meta: meta.clone(),
        };
        let point = EvalPoint {
            iteration: i,
            loss: (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64),
            ema: ev.scores(&as_model(&trainer.ema))?,
            raw: ev.scores(&as_model(&trainer.model.valid()))?,
            samples: ev.samples,
        };
        points.retain(|p| p.iteration < i);
        points.push(point.clone());
        write_eval_log(&run.dir.join(EVAL_LOG), points)?;
        Ok(JobEvent::Eval(point))
    };
    if let Some(ev) = &run.eval
        && points.is_empty()
    {
        on_event(evaluate(ev, trainer, &mut points)?);
    }
    let start = Instant::now();
    let first = trainer.iteration;
    while !trainer.done() {
        if stop.load(Ordering::Relaxed) {
            trainer.save_checkpoint(&run.checkpoint(), meta)?;
            save_ema(trainer)?;
            on_event(JobEvent::Stopped {
                iteration: trainer.iteration,
            });
            return Ok(out_path);
        }
        let loss = step(trainer)?;
        let i = trainer.iteration;
        if let Some((it, values)) = trainer.metrics.last()
            && *it + 1 == i
        {
            on_event(JobEvent::Metrics {
                iteration: i,
                values: values.clone(),
            });
        }
        let elapsed_s = start.elapsed().as_secs_f64();
        let rate = (i - first) as f64 / elapsed_s.max(1e-9);
        on_event(JobEvent::Progress {
            iteration: i,
            total: trainer.options.iterations,
            loss,
            elapsed_s,
            eta_s: (trainer.options.iterations - i) as f64 / rate.max(1e-9),
        });
        if (run.checkpoint_every > 0 && i.is_multiple_of(run.checkpoint_every)) || trainer.done() {
            trainer.save_checkpoint(&run.checkpoint(), meta)?;
            save_ema(trainer)?;
            on_event(JobEvent::Checkpoint {
                iteration: i,
                path: run.checkpoint(),
            });
        }
        if (run.sample_every > 0 && i.is_multiple_of(run.sample_every)) || trainer.done() {
            let path = run.dir.join("samples").join(format!("iter-{i:07}.png"));
            sample_grid(
                &LoadedModel {
                    model: ema_model(&trainer.ema),
                    meta: meta.clone(),
                },
                run.decoder.as_deref(),
                &path,
            )?;
            on_event(JobEvent::Samples { iteration: i, path });
        }
        if let Some(ev) = &run.eval
            && ev.due(i, trainer.done())
        {
            on_event(evaluate(ev, trainer, &mut points)?);
        }
    }
    on_event(JobEvent::Finished {
        path: out_path.clone(),
    });
    Ok(out_path)
}

/// Models up to this many parameters draw their sample grids on the CPU (a GPU's kernel
/// compilation would cost more than the sampling); larger ones on the device they train on.
const PREVIEW_ON_CPU_PARAMS: usize = 50_000_000;

/// Where the sample grids of a model with `num_params` parameters, trained on `device`, are
/// drawn (and their VAE must live).
pub fn preview_device(num_params: usize, device: &Device) -> Device {
    if num_params > PREVIEW_ON_CPU_PARAMS {
        device.clone().without_autodiff()
    } else {
        Device::flex()
    }
}

/// One image per class (at most 10), every step of the model shown left to right, sampled on
/// the CPU for models up to [`PREVIEW_ON_CPU_PARAMS`]; latents are decoded through `decoder`
/// on the decoder's own device when given.
pub fn sample_grid(
    model: &LoadedModel,
    decoder: Option<&AutoencoderKL>,
    path: &Path,
) -> Result<()> {
    let d = &model.meta.dit;
    let n = d.num_classes.min(10);
    let device = preview_device(model.num_params(), &model.device());
    let req = SampleRequest {
        noise: seeded_noise(d.batch_shape(n), 1234),
        labels: (0..n as i64).collect(),
        ddim: DdimOptions::default(),
    };
    let model = model.copy_to(&device)?;
    let out = sample(&model, &req, &device, |_| {})?;
    let steps: Vec<_> = match model.model {
        Model::Teacher(_) => out
            .steps
            .iter()
            .step_by(4)
            .chain(out.steps.last())
            .cloned()
            .collect(),
        Model::Student(_) => out.steps.clone(),
    };
    let steps = match decoder {
        Some(vae) => {
            vae.check_fits(&model.meta.dit)?;
            steps
                .iter()
                .map(|s| vae.decode_host(s, &vae.device()))
                .collect::<Result<_>>()?
        }
        None => steps,
    };
    save_png(&step_strip(&steps), path)
}

/// Trains a class-conditional teacher on `data` (epsilon prediction, label dropout for
/// guidance) with the architecture of `teacher` fitted to the data.
pub fn train_teacher(
    data: &Dataset,
    teacher: &TeacherOptions,
    run: &RunDir,
    device: &Device,
    hooks: JobHooks,
) -> Result<PathBuf> {
    let dit = &teacher.architecture(data.image_size(), data.channels(), data.class_names.len());
    dit.validate()?;
    let options = &teacher.train;
    let label_dropout = teacher.label_dropout;
    let train_device = device.clone().autodiff();
    let fresh = || -> Result<Dit> {
        let m = init_teacher(
            dit,
            Some(data.class_names.clone()),
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
    let meta = ModelMeta::pixel_teacher(dit.clone(), Some(data.class_names.clone()));
    let (resuming, _lock) = run.open(
        |stored| stored.dit == *dit,
        "was made with another architecture; resume without changing it, or use a new directory",
        TEACHER_OPTIONS_FILE,
        teacher,
    )?;
    let mut trainer = run.trainer(resuming, fresh()?, options, hooks.on_event)?;
    trainer.split_for(device, dit.num_heads, dit.num_patches());
    let alpha_bar = alpha_bar_from_betas(&linear_betas(TRAIN_TIMESTEPS));
    let batch = options.batch_size;
    drive(
        &mut trainer,
        run,
        &meta,
        "teacher.safetensors",
        hooks,
        |t| {
            let null = dit.num_classes as i64;
            t.step_sharded(
                batch,
                |rng| {
                    let idx: Vec<usize> = (0..batch)
                        .map(|_| rng.random_range(0..data.len()))
                        .collect();
                    let (x0, y) = data.batch(&idx);
                    Ok(noised_batch(&x0, &y, &alpha_bar, null, label_dropout, rng))
                },
                |model, b, rows| teacher_loss_rows(model, b, rows, &train_device),
            )
        },
        |ema| Model::Teacher(ema.clone()),
    )
}

/// Distils `teacher` into a K-step student with N history layers on a trajectory set.
pub fn distill(
    teacher: &LoadedModel,
    set: &TrajectorySet,
    distill: &DistillOptions,
    run: &RunDir,
    device: &Device,
    hooks: JobHooks,
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
        kind: crate::model::config::ModelKind::Student,
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
    let mut trainer = run.trainer(resuming, fresh()?, options, hooks.on_event)?;
    trainer.split_for(device, meta.dit.num_heads, steps * meta.dit.num_patches());
    let batch = options.batch_size;
    let n = set.labels.len();
    drive(
        &mut trainer,
        run,
        &meta,
        "student.safetensors",
        hooks,
        |t| {
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
        },
        |ema| Model::Student(ema.clone()),
    )
}
