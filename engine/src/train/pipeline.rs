//! The pipeline the app's training tab runs, teacher → trajectories → distillation (Kim et al.,
//! CVPR 2025, §3: the teacher's ODE trajectories become the student's training set), each phase
//! resuming from what its run folder already holds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use image::RgbImage;

use crate::data::datasets::{Split, load as load_dataset};
use crate::distill::trajectories::{TrajectoryOptions, TrajectorySet, write_trajectory_set_until};
use crate::error::{EngineError, Result};
use crate::eval::monitor::{EvalPoint, TrainingEval};
use crate::gan::finetune::finetune_gan;
use crate::io::writer::file_fingerprint;
use crate::model::loaded::{LoadOptions, LoadedModel, Model};
use crate::train::jobs::{JobEvent, JobHooks, RunDir, distill, train_teacher};
use crate::train::options::{
    DistillOptions, EVAL_EVERY, GanOptions, TRAINING_EVAL_SAMPLES, TeacherOptions,
};

/// Where the teacher of a pipeline run comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TeacherSource {
    File(PathBuf),
    /// Train one first on a dataset (`fashion-mnist`, an IDX folder or an ImageFolder tree;
    /// `image_size` and `channels` apply to ImageFolder images).
    Train {
        dataset: String,
        image_size: usize,
        channels: usize,
        options: TeacherOptions,
    },
}

/// A distillation run, launched from the training tab; every setting has the same default as
/// the `ard` command that runs that phase alone.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingRequest {
    /// Everything of the run goes here; starting again with the same folder resumes.
    pub run_dir: PathBuf,
    pub teacher: TeacherSource,
    /// The trajectory set (its `student_steps` is the student's K).
    pub trajectories: TrajectoryOptions,
    pub distill: DistillOptions,
    /// Sample previews every this many iterations.
    pub preview_every: u64,
    /// Score the student along the way, when given.
    pub eval: Option<EvalRequest>,
    /// Fine-tune the distilled student adversarially afterwards, when given.
    pub gan: Option<GanRequest>,
}

/// The adversarial phase of a run (`ard finetune-gan`'s settings).
#[derive(Clone, Debug, PartialEq)]
pub struct GanRequest {
    /// Start from this distilled student; the run's own distillation phase is then skipped.
    pub student: Option<PathBuf>,
    /// Real images for the discriminator: `fashion-mnist`, an IDX folder or an ImageFolder tree
    /// (training split, read at the teacher's image size).
    pub data: String,
    pub options: GanOptions,
}

/// Evaluation during the distillation phase: a feature network and the real images it compares
/// samples with (their test split).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRequest {
    pub feature_net: PathBuf,
    /// `fashion-mnist`, an IDX folder or an ImageFolder tree (read at the teacher's image size).
    pub data: String,
    pub every: u64,
    pub samples: usize,
}

impl EvalRequest {
    /// Every [`EVAL_EVERY`] iterations on [`TRAINING_EVAL_SAMPLES`] samples.
    pub fn new(feature_net: impl Into<PathBuf>, data: impl Into<String>) -> Self {
        Self {
            feature_net: feature_net.into(),
            data: data.into(),
            every: EVAL_EVERY,
            samples: TRAINING_EVAL_SAMPLES,
        }
    }
}

impl TrainingRequest {
    /// A run in `run_dir` distilling the teacher in `teacher` with every default.
    pub fn new(run_dir: impl Into<PathBuf>, teacher: TeacherSource) -> Self {
        Self {
            run_dir: run_dir.into(),
            teacher,
            trajectories: TrajectoryOptions::default(),
            distill: DistillOptions::default(),
            preview_every: crate::train::options::SAMPLE_EVERY,
            eval: None,
            gan: None,
        }
    }
}

/// The phases of a training run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Teacher,
    Trajectories,
    Distillation,
    /// Stage 2: adversarial fine-tuning.
    Adversarial,
}

/// Progress of a training run.
#[derive(Clone, Debug)]
pub enum TrainingEvent {
    Phase {
        phase: Phase,
    },
    Progress {
        phase: Phase,
        done: u64,
        total: u64,
        elapsed_s: f64,
        eta_s: f64,
    },
    Loss {
        phase: Phase,
        iteration: u64,
        loss: f32,
    },
    Resumed {
        phase: Phase,
        iteration: u64,
    },
    Preview {
        phase: Phase,
        iteration: u64,
        image: RgbImage,
    },
    /// The adversarial phase's loss parts of one iteration (named by `gan::GAN_METRICS`).
    Metrics {
        phase: Phase,
        iteration: u64,
        values: Vec<f32>,
    },
    /// An evaluation point of the run (EMA and raw weights).
    Eval {
        phase: Phase,
        point: EvalPoint,
    },
    /// The run goes on without evaluation points, for this reason.
    EvalUnavailable {
        reason: String,
    },
    /// The distilled student (EMA weights).
    Finished {
        student: PathBuf,
    },
    Stopped {
        phase: Phase,
    },
    Failed {
        message: String,
    },
}

fn job_forwarder<'a>(phase: Phase, send: &'a dyn Fn(TrainingEvent)) -> impl FnMut(JobEvent) + 'a {
    move |event| match event {
        JobEvent::Progress {
            iteration,
            total,
            loss,
            elapsed_s,
            eta_s,
        } => {
            send(TrainingEvent::Loss {
                phase,
                iteration,
                loss,
            });
            send(TrainingEvent::Progress {
                phase,
                done: iteration,
                total,
                elapsed_s,
                eta_s,
            });
        }
        JobEvent::Resumed { iteration } => send(TrainingEvent::Resumed { phase, iteration }),
        JobEvent::Samples { iteration, path } => {
            if let Ok(img) = image::open(&path) {
                send(TrainingEvent::Preview {
                    phase,
                    iteration,
                    image: img.to_rgb8(),
                });
            }
        }
        JobEvent::Stopped { .. } => send(TrainingEvent::Stopped { phase }),
        JobEvent::Eval(point) => send(TrainingEvent::Eval { phase, point }),
        JobEvent::Metrics { iteration, values } => send(TrainingEvent::Metrics {
            phase,
            iteration,
            values,
        }),
        JobEvent::Checkpoint { .. } | JobEvent::Finished { .. } => {}
    }
}

/// Teacher (if asked), trajectory set, distillation: each phase resumes from what `run_dir`
/// already holds. Returns after a phase's checkpoint once `stop` is set.
pub fn run_pipeline(
    req: &TrainingRequest,
    device: &Device,
    stop: &AtomicBool,
    send: &dyn Fn(TrainingEvent),
) -> Result<()> {
    let dir = &req.run_dir;
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let run_dir = |name: &str| RunDir {
        sample_every: req.preview_every,
        ..RunDir::new(dir.join(name))
    };
    let stopped = |phase| {
        if stop.load(Ordering::Relaxed) {
            send(TrainingEvent::Stopped { phase });
            true
        } else {
            false
        }
    };

    let teacher_path = match &req.teacher {
        TeacherSource::File(path) => path.clone(),
        TeacherSource::Train {
            dataset,
            image_size,
            channels,
            options,
        } => {
            send(TrainingEvent::Phase {
                phase: Phase::Teacher,
            });
            let data = load_dataset(dataset, *image_size, *channels, Split::Train)?;
            // A finished run resumes at its last iteration and returns at once.
            let teacher_file = train_teacher(
                &data,
                options,
                &run_dir("teacher"),
                device,
                JobHooks {
                    stop,
                    on_event: &mut job_forwarder(Phase::Teacher, send),
                },
            )?;
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            teacher_file
        }
    };

    send(TrainingEvent::Phase {
        phase: Phase::Trajectories,
    });
    let teacher = LoadedModel::load(&teacher_path, &LoadOptions::default(), device)?;
    let Model::Teacher(dit) = &teacher.model else {
        return Err(EngineError::Input(format!(
            "{}: distillation needs a teacher, and this is a student",
            teacher_path.display()
        )));
    };
    let manifest = req
        .trajectories
        .manifest(&teacher.meta, file_fingerprint(&teacher_path)?);
    let trajectories = dir.join("trajectories");
    write_trajectory_set_until(
        dit,
        &manifest,
        &trajectories,
        (0, 1),
        req.trajectories.batch,
        device,
        |p| {
            send(TrainingEvent::Progress {
                phase: Phase::Trajectories,
                done: (p.already as f64 + p.total as f64 * p.done_fraction()) as u64,
                total: (p.already + p.total) as u64,
                elapsed_s: p.elapsed_s,
                eta_s: p.eta_s(),
            })
        },
        stop,
    )?;
    if stopped(Phase::Trajectories) {
        return Ok(());
    }

    let set = TrajectorySet::load(&trajectories)?;
    let evaluation = |run: &mut RunDir| {
        let Some(e) = &req.eval else { return };
        let ev = TrainingEval::load(
            &e.feature_net,
            &e.data,
            &teacher.meta,
            e.every,
            e.samples,
            device,
        );
        match ev {
            Ok(ev) => run.eval = Some(std::sync::Arc::new(ev)),
            Err(e) => send(TrainingEvent::EvalUnavailable {
                reason: e.to_string(),
            }),
        }
    };
    let given_student = req.gan.as_ref().and_then(|g| g.student.clone());
    let student = match given_student {
        Some(path) => path,
        None => {
            send(TrainingEvent::Phase {
                phase: Phase::Distillation,
            });
            let mut student_dir = run_dir(&format!("student-n{}", req.distill.history_layers));
            evaluation(&mut student_dir);
            let student = distill(
                &teacher,
                &set,
                &req.distill,
                &student_dir,
                device,
                JobHooks {
                    stop,
                    on_event: &mut job_forwarder(Phase::Distillation, send),
                },
            )?;
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            student
        }
    };
    let student = match &req.gan {
        None => student,
        Some(gan) => {
            send(TrainingEvent::Phase {
                phase: Phase::Adversarial,
            });
            let distilled = LoadedModel::load(&student, &LoadOptions::default(), device)?;
            let d = &teacher.meta.dit;
            let real = load_dataset(&gan.data, d.input_size, d.in_channels, Split::Train)?;
            let n = distilled
                .meta
                .student
                .as_ref()
                .map_or(0, |s| s.history_layers);
            let mut gan_dir = run_dir(&format!("gan-n{n}"));
            evaluation(&mut gan_dir);
            let tuned = finetune_gan(
                &teacher,
                &distilled,
                &set,
                &real,
                &gan.options,
                &gan_dir,
                device,
                JobHooks {
                    stop,
                    on_event: &mut job_forwarder(Phase::Adversarial, send),
                },
            )?;
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            tuned
        }
    };
    send(TrainingEvent::Finished { student });
    Ok(())
}
