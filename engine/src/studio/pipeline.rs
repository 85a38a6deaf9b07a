//! The pipeline the app's training tab runs, teacher → trajectories → distillation → stage 2
//! (Kim et al., CVPR 2025, §3: the teacher's ODE trajectories become the student's training
//! set), each phase resuming from what its run folder already holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;

use crate::data::datasets::Split;
use crate::data::open::load_dataset;
use crate::distill::trajectories::{TrajectorySet, write_trajectory_set_until};
use crate::error::{EngineError, Result};
use crate::eval::monitor::TrainingEval;
use crate::io::writer::file_fingerprint;
use crate::jobs::{distill_student, finetune_gan, train_teacher};
use crate::model::loaded::{LoadOptions, LoadedModel, Model};
use crate::studio::protocol::{GanRequest, TeacherSource, TrainingRequest};
use crate::train::events::{Hooks, Phase, TrainingEvent};
use crate::train::run_dir::RunDir;

/// One run of the pipeline: its request, device, stop flag and event sink.
struct Pipeline<'a> {
    req: &'a TrainingRequest,
    device: &'a Device,
    stop: &'a AtomicBool,
    send: &'a dyn Fn(TrainingEvent),
}

/// Teacher (if asked), trajectory set, distillation, stage 2 (if asked): each phase resumes
/// from what `req.run_dir` already holds. Returns after a phase's checkpoint once `stop` is set.
pub fn run_pipeline(
    req: &TrainingRequest,
    device: &Device,
    stop: &AtomicBool,
    send: &dyn Fn(TrainingEvent),
) -> Result<()> {
    let dir = &req.run_dir;
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let p = Pipeline {
        req,
        device,
        stop,
        send,
    };
    let Some(teacher_path) = p.teacher()? else {
        return Ok(());
    };
    let teacher = p.load_teacher(&teacher_path)?;
    let Some(set) = p.trajectories(&teacher, &teacher_path)? else {
        return Ok(());
    };
    let student = match req.gan.as_ref().and_then(|g| g.student.clone()) {
        Some(path) => path,
        None => match p.distill(&teacher, &set)? {
            Some(path) => path,
            None => return Ok(()),
        },
    };
    let student = match &req.gan {
        None => student,
        Some(gan) => match p.stage2(&teacher, &set, &student, gan)? {
            Some(path) => path,
            None => return Ok(()),
        },
    };
    send(TrainingEvent::Finished { student });
    Ok(())
}

impl Pipeline<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A phase's run folder in the run's directory.
    fn run_dir(&self, name: &str) -> RunDir {
        RunDir {
            prompts: None,
            sample_every: self.req.preview_every,
            ..RunDir::new(self.req.run_dir.join(name))
        }
    }

    /// Runs `job` as `phase`, its events forwarded; `None` when it was stopped.
    fn phase(
        &self,
        phase: Phase,
        job: impl FnOnce(Hooks) -> Result<PathBuf>,
    ) -> Result<Option<PathBuf>> {
        (self.send)(TrainingEvent::Phase { phase });
        let mut forward = |e| (self.send)(e);
        let path = job(Hooks {
            phase,
            stop: self.stop,
            on_event: &mut forward,
        })?;
        Ok((!self.stopped()).then_some(path))
    }

    /// The teacher's file: the given one, or one trained first (`None` if stopped).
    fn teacher(&self) -> Result<Option<PathBuf>> {
        let (dataset, image_size, channels, options) = match &self.req.teacher {
            TeacherSource::File(path) => return Ok(Some(path.clone())),
            TeacherSource::Train {
                dataset,
                image_size,
                channels,
                options,
            } => (dataset, image_size, channels, options),
        };
        let data = load_dataset(dataset, *image_size, *channels, Split::Train)?;
        // A finished run resumes at its last iteration and returns at once.
        let run = self.run_dir("teacher");
        self.phase(Phase::Teacher, |hooks| {
            train_teacher(&data, options, &run, self.device, hooks)
        })
    }

    fn load_teacher(&self, path: &Path) -> Result<LoadedModel> {
        let teacher = LoadedModel::load(path, &LoadOptions::default(), self.device)?;
        if !matches!(teacher.model, Model::Teacher(_)) {
            return Err(EngineError::WrongKind(format!(
                "{}: distillation needs a teacher, and this is a student",
                path.display()
            )));
        }
        Ok(teacher)
    }

    /// The teacher's trajectory set, written (or completed) first (`None` if stopped).
    fn trajectories(
        &self,
        teacher: &LoadedModel,
        teacher_path: &Path,
    ) -> Result<Option<TrajectorySet>> {
        let phase = Phase::Trajectories;
        (self.send)(TrainingEvent::Phase { phase });
        let Model::Teacher(dit) = &teacher.model else {
            unreachable!("checked by load_teacher")
        };
        let opts = &self.req.trajectories;
        let manifest = opts.manifest(&teacher.meta, file_fingerprint(teacher_path)?);
        let dir = self.req.run_dir.join("trajectories");
        let mut written = 0;
        write_trajectory_set_until(
            dit,
            &manifest,
            &dir,
            (0, 1),
            opts.batch,
            self.device,
            |p| {
                written = (p.already as f64 + p.total as f64 * p.done_fraction()) as u64;
                (self.send)(TrainingEvent::Progress {
                    phase,
                    done: written,
                    total: (p.already + p.total) as u64,
                    loss: None,
                    elapsed_s: p.elapsed_s,
                    eta_s: p.eta_s(),
                })
            },
            self.stop,
        )?;
        if self.stopped() {
            (self.send)(TrainingEvent::Stopped {
                phase,
                iteration: written,
            });
            return Ok(None);
        }
        TrajectorySet::load(&dir).map(Some)
    }

    /// `run` with the evaluation the request asks for, or the reason it has none.
    fn evaluated(&self, mut run: RunDir, teacher: &LoadedModel) -> RunDir {
        let Some(e) = &self.req.eval else { return run };
        let meta = &teacher.meta;
        match TrainingEval::load(
            &e.feature_net,
            &e.data,
            meta,
            e.every,
            e.samples,
            self.device,
        ) {
            Ok(ev) => run.eval = Some(Arc::new(ev)),
            Err(e) => (self.send)(TrainingEvent::EvalUnavailable {
                reason: e.to_string(),
            }),
        }
        run
    }

    /// The distilled student (`None` if stopped).
    fn distill(&self, teacher: &LoadedModel, set: &TrajectorySet) -> Result<Option<PathBuf>> {
        let distill = &self.req.distill;
        let run = self.run_dir(&format!("student-n{}", distill.history_layers));
        let run = self.evaluated(run, teacher);
        self.phase(Phase::Distillation, |hooks| {
            distill_student(teacher, set, distill, &run, self.device, hooks)
        })
    }

    /// The student fine-tuned by stage 2 (`None` if stopped).
    fn stage2(
        &self,
        teacher: &LoadedModel,
        set: &TrajectorySet,
        student: &Path,
        gan: &GanRequest,
    ) -> Result<Option<PathBuf>> {
        let distilled = LoadedModel::load(student, &LoadOptions::default(), self.device)?;
        let d = &teacher.meta.dit;
        let real = load_dataset(&gan.data, d.input_size, d.in_channels, Split::Train)?;
        let n = distilled
            .meta
            .student
            .as_ref()
            .map_or(0, |s| s.history_layers);
        let run = self.evaluated(self.run_dir(&format!("gan-n{n}")), teacher);
        self.phase(Phase::Adversarial, |hooks| {
            finetune_gan(
                teacher,
                &distilled,
                set,
                &real,
                &gan.options,
                &run,
                self.device,
                hooks,
            )
        })
    }
}
