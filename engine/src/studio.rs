//! The engine thread behind the app: requests in, events out, over crossbeam channels.
//!
//! The thread owns the loaded models. A generation streams one [`StepEvent`] per step as soon
//! as the step is computed; between steps the thread looks at its queue, so a `Cancel` (or a
//! newer `Generate`) stops the run at once. Training runs on a thread of its own and reports
//! through the same event channel, so generation stays available while a model distils.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use burn::tensor::Device;
use crossbeam_channel::{Receiver, Sender, TryRecvError, unbounded};
use image::RgbImage;

use crate::config::{ModelKind, ModelMeta, default_anchors};
use crate::data::{Split, load as load_dataset};
use crate::error::{EngineError, Result};
use crate::generate::{SampleRequest, sample_until};
use crate::host::{HostTensor, seeded_noise};
use crate::jobs::{JobEvent, JobHooks, RunDir, distill, train_teacher};
use crate::model::{LoadOptions, LoadedModel, Model};
use crate::preview::batch_images;
use crate::sampler::{DdimOptions, ddim_sample_until};
use crate::train::TrainOptions;
use crate::trajectories::{
    AnchorKind, TrajectoryManifest, TrajectorySet, write_trajectory_set_until,
};
use crate::weights::{TensorFile, file_fingerprint};

/// What the app asks of the engine.
#[derive(Clone, Debug)]
pub enum Request {
    Generate(GenerateRequest),
    /// Stops the generation in progress after its current step.
    Cancel,
    /// Loads a weight file (`.safetensors` or `.pt`). A teacher becomes both the generator and
    /// the comparison teacher; a student becomes the generator. `options` give what a file
    /// without ARD Studio metadata (reference key names only) cannot say: heads, N.
    LoadWeights {
        path: PathBuf,
        options: LoadOptions,
    },
    StartTraining(TrainingRequest),
    /// Stops the training run after its current iteration (or trajectory shard), with a
    /// checkpoint: starting the same run again resumes it.
    StopTraining,
    Shutdown,
}

/// One generation: a batch of images from seeded noise.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    pub id: u64,
    /// One label per image.
    pub labels: Vec<i64>,
    pub seed: u64,
    /// Guidance scale of the teacher's DDIM (the generator's when it is a teacher, the
    /// comparison's otherwise).
    pub cfg_scale: f32,
    /// DDIM steps when the generator is a teacher.
    pub teacher_steps: usize,
    /// Also run the teacher from the same noise and report its states at the student's anchors.
    pub compare_teacher: bool,
}

/// Which loaded model an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The model that generates (a student or a teacher).
    Generator,
    /// The teacher whose trajectory is shown beside the generator's.
    Teacher,
}

/// What the model panel shows about a loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub source: String,
    pub fingerprint: String,
    pub kind: ModelKind,
    pub architecture: String,
    pub params: usize,
    /// One name per class (synonyms comma-separated): the file's, ImageNet's for a 1000-class
    /// file without names, else `class {i}`.
    pub class_names: Vec<String>,
    pub image_size: usize,
    pub channels: usize,
    /// K for a student, the default DDIM steps for a teacher.
    pub steps: usize,
    pub history_layers: Option<usize>,
    /// The teacher DDIM indices the student's steps land on (student only).
    pub anchors: Vec<usize>,
    /// The DDIM steps of the teacher trajectories the student learnt (student only).
    pub teacher_steps: Option<usize>,
}

/// One step of a generation, ready to show.
#[derive(Clone, Debug)]
pub struct StepEvent {
    pub id: u64,
    pub source: Role,
    /// 0-based; `total` steps in all.
    pub step: usize,
    pub total: usize,
    /// Reference name of the step (`infer_z10`, `pred_z0_15`, …).
    pub name: String,
    /// Per image: what the step started from (student: x_T or the previous prediction; teacher:
    /// its noisy state at the anchor).
    pub inputs: Vec<RgbImage>,
    /// Per image: the step's clean-image estimate.
    pub predictions: Vec<RgbImage>,
    /// Milliseconds this step took (the teacher: the DDIM steps since the previous anchor).
    pub ms: f64,
    /// Teacher steps only: per image, the root-mean-square difference from the generator's
    /// prediction at the same anchor (in [−1, 1] units) and the |difference| as an image.
    pub difference: Option<Vec<(f32, RgbImage)>>,
}

/// What the engine reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// The engine thread runs on this device.
    Ready {
        device: String,
    },
    ModelLoaded {
        role: Role,
        info: ModelInfo,
    },
    /// The file was not loaded; the models loaded before stay.
    LoadFailed {
        path: PathBuf,
        message: String,
    },
    Step(StepEvent),
    /// The generator finished: final images, one per label.
    Done {
        id: u64,
        images: Vec<RgbImage>,
        total_ms: f64,
    },
    Cancelled {
        id: u64,
    },
    GenerateFailed {
        id: u64,
        message: String,
    },
    Training(TrainingEvent),
}

/// Where the teacher of a training run comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TeacherSource {
    File(PathBuf),
    /// Train one first on a dataset (`fashion-mnist` or a folder), with this architecture.
    Train {
        dataset: String,
        iterations: u64,
        hidden: usize,
        depth: usize,
        heads: usize,
        patch: usize,
        image_size: usize,
        channels: usize,
    },
}

/// A distillation run, launched from the training panel.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingRequest {
    /// Everything of the run goes here; starting again with the same folder resumes.
    pub run_dir: PathBuf,
    pub teacher: TeacherSource,
    /// N: lower blocks with history attention (0 = step distillation).
    pub history_layers: usize,
    /// K: student steps.
    pub steps: usize,
    pub teacher_steps: usize,
    pub cfg_scale: f32,
    pub trajectories: usize,
    pub batch: usize,
    pub iterations: u64,
    pub lr: f64,
    pub seed: u64,
    /// Sample previews every this many iterations.
    pub preview_every: u64,
}

/// The phases of a training run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Teacher,
    Trajectories,
    Distillation,
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

/// How the engine thread starts.
pub struct StudioOptions {
    pub device: Device,
    /// Shown in the status bar ("CPU (burn flex)", the adapter's name…).
    pub device_label: String,
    /// Loaded in order at start (typically the default teacher, then the default student).
    pub initial_models: Vec<PathBuf>,
    /// Called after every event is sent (the app passes its repaint request).
    pub notify: Arc<dyn Fn() + Send + Sync>,
}

/// The app's side of the engine thread.
pub struct Studio {
    pub requests: Sender<Request>,
    pub events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl Studio {
    /// Starts the engine thread.
    pub fn spawn(options: StudioOptions) -> Self {
        let (requests, request_rx) = unbounded();
        let (event_tx, events) = unbounded();
        let thread = std::thread::Builder::new()
            .name("ard-engine".into())
            .spawn(move || {
                let emitter = Emitter {
                    tx: event_tx,
                    notify: options.notify.clone(),
                };
                Engine::new(options.device, emitter, request_rx)
                    .run(options.device_label, options.initial_models);
            })
            .expect("spawn the engine thread");
        Self {
            requests,
            events,
            thread: Some(thread),
        }
    }

    /// Sends a request; the engine thread lives as long as the `Studio`, so this never fails.
    pub fn send(&self, request: Request) {
        let _ = self.requests.send(request);
    }
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Emitter {
    tx: Sender<Event>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl Emitter {
    fn send(&self, event: Event) {
        let _ = self.tx.send(event);
        (self.notify)();
    }
}

struct Loaded {
    model: LoadedModel,
    info: ModelInfo,
}

struct Training {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Engine {
    device: Device,
    events: Emitter,
    requests: Receiver<Request>,
    /// Requests that arrived while a generation ran.
    pending: VecDeque<Request>,
    generator: Option<Loaded>,
    teacher: Option<Loaded>,
    training: Option<Training>,
}

impl Engine {
    fn new(device: Device, events: Emitter, requests: Receiver<Request>) -> Self {
        Self {
            device,
            events,
            requests,
            pending: VecDeque::new(),
            generator: None,
            teacher: None,
            training: None,
        }
    }

    fn run(mut self, device_label: String, initial: Vec<PathBuf>) {
        self.events.send(Event::Ready {
            device: device_label,
        });
        for path in initial {
            self.load(&path, &LoadOptions::default());
        }
        loop {
            let request = match self.pending.pop_front() {
                Some(r) => r,
                None => match self.requests.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            match request {
                Request::Shutdown => break,
                Request::Cancel => {}
                Request::LoadWeights { path, options } => self.load(&path, &options),
                Request::Generate(req) => self.generate(req),
                Request::StartTraining(req) => self.start_training(req),
                Request::StopTraining => {
                    if let Some(t) = &self.training {
                        t.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Some(t) = self.training.take() {
            t.stop.store(true, Ordering::Relaxed);
            let _ = t.thread.join();
        }
    }

    fn load(&mut self, path: &Path, options: &LoadOptions) {
        let result = catch_unwind(AssertUnwindSafe(|| load_model(path, options, &self.device)))
            .unwrap_or_else(|_| {
                Err(EngineError::BadFile {
                    path: path.into(),
                    message: "the loader failed on this file".into(),
                })
            });
        match result {
            Ok(loaded) => {
                let info = loaded.info.clone();
                // The teacher slot shares the generator's parameters (inference never
                // changes them), so a teacher is held once.
                if let Model::Teacher(dit) = &loaded.model.model {
                    self.teacher = Some(Loaded {
                        model: LoadedModel {
                            model: Model::Teacher(dit.clone()),
                            meta: loaded.model.meta.clone(),
                        },
                        info: info.clone(),
                    });
                    self.events.send(Event::ModelLoaded {
                        role: Role::Teacher,
                        info: info.clone(),
                    });
                }
                self.generator = Some(loaded);
                self.events.send(Event::ModelLoaded {
                    role: Role::Generator,
                    info,
                });
            }
            Err(e) => self.events.send(Event::LoadFailed {
                path: path.into(),
                message: e.to_string(),
            }),
        }
    }

    /// Looks at the queue between two steps: `Cancel` is taken, a newer `Generate` or a
    /// `Shutdown` stays queued; either way the current run stops.
    fn should_stop(&mut self) -> bool {
        let mut stop = false;
        loop {
            match self.requests.try_recv() {
                Ok(Request::Cancel) => stop = true,
                Ok(r @ (Request::Generate(_) | Request::Shutdown)) => {
                    stop = true;
                    self.pending.push_back(r);
                }
                Ok(r) => self.pending.push_back(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return stop,
            }
        }
    }

    fn generate(&mut self, req: GenerateRequest) {
        let id = req.id;
        match catch_unwind(AssertUnwindSafe(|| self.try_generate(&req))) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => self.events.send(Event::Cancelled { id }),
            Ok(Err(e)) => self.events.send(Event::GenerateFailed {
                id,
                message: e.to_string(),
            }),
            Err(_) => self.events.send(Event::GenerateFailed {
                id,
                message: "the engine failed on this request".into(),
            }),
        }
    }

    /// `Ok(false)` when cancelled.
    fn try_generate(&mut self, req: &GenerateRequest) -> Result<bool> {
        let Some(generator) = self.generator.take() else {
            return Err(EngineError::Input(
                "no model is loaded: open or drop a weight file".into(),
            ));
        };
        let result = self.run_generator(&generator, req);
        self.generator = Some(generator);
        let Some(predictions) = result? else {
            return Ok(false);
        };
        let generator = self.generator.as_ref().expect("just put back");
        if req.compare_teacher && generator.info.kind == ModelKind::Student {
            let Some(teacher) = self.teacher.take() else {
                return Err(EngineError::Input(
                    "no teacher loaded to compare with: open or drop the teacher's file".into(),
                ));
            };
            let meta = generator.model.meta.clone();
            let result = self.run_comparison(&teacher, &meta, req, &predictions);
            self.teacher = Some(teacher);
            return result;
        }
        Ok(true)
    }

    fn noise(meta: &ModelMeta, req: &GenerateRequest) -> HostTensor {
        let d = &meta.dit;
        seeded_noise(
            vec![req.labels.len(), d.in_channels, d.input_size, d.input_size],
            req.seed,
        )
    }

    fn ddim_options(meta: &ModelMeta, steps: usize, cfg_scale: f32) -> DdimOptions {
        DdimOptions {
            steps,
            cfg_scale,
            guided_channels: meta.dit.in_channels.min(3),
            clip_denoised: meta.clip_denoised,
        }
    }

    /// Streams the generator's steps; returns each step's prediction, or `None` if cancelled.
    fn run_generator(
        &mut self,
        generator: &Loaded,
        req: &GenerateRequest,
    ) -> Result<Option<Vec<HostTensor>>> {
        let meta = &generator.model.meta;
        let request = SampleRequest {
            noise: Self::noise(meta, req),
            labels: req.labels.clone(),
            ddim: Self::ddim_options(meta, req.teacher_steps, req.cfg_scale),
        };
        let device = self.device.clone();
        let start = Instant::now();
        let mut last = Instant::now();
        let mut predictions = Vec::new();
        let out = sample_until(&generator.model, &request, &device, |s| {
            predictions.push(s.image.clone());
            self.events.send(Event::Step(StepEvent {
                id: req.id,
                source: Role::Generator,
                step: s.step,
                total: s.total,
                name: s.name.clone(),
                inputs: batch_images(&s.input),
                predictions: batch_images(&s.image),
                ms: last.elapsed().as_secs_f64() * 1e3,
                difference: None,
            }));
            last = Instant::now();
            if self.should_stop() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        let Some(out) = out else { return Ok(None) };
        self.events.send(Event::Done {
            id: req.id,
            images: batch_images(&out.images),
            total_ms: start.elapsed().as_secs_f64() * 1e3,
        });
        Ok(Some(predictions))
    }

    /// Runs the teacher from the same noise and streams its states at the student's anchors,
    /// each with its difference from the student's prediction there.
    fn run_comparison(
        &mut self,
        teacher: &Loaded,
        student_meta: &ModelMeta,
        req: &GenerateRequest,
        student_predictions: &[HostTensor],
    ) -> Result<bool> {
        let Model::Teacher(dit) = &teacher.model.model else {
            unreachable!("the teacher slot holds teachers")
        };
        let (s, t) = (&student_meta.dit, &teacher.model.meta.dit);
        if (s.input_size, s.in_channels, s.num_classes)
            != (t.input_size, t.in_channels, t.num_classes)
        {
            return Err(EngineError::Input(format!(
                "the loaded teacher ({}) makes {}×{}×{} images of {} classes, the student {}×{}×{} \
                 of {}: load the student's own teacher to compare",
                teacher.info.source,
                t.in_channels,
                t.input_size,
                t.input_size,
                t.num_classes,
                s.in_channels,
                s.input_size,
                s.input_size,
                s.num_classes
            )));
        }
        let student = student_meta
            .student
            .as_ref()
            .expect("a student has its config");
        let noise = Self::noise(student_meta, req).to_device::<4>(&self.device)?;
        let mut options =
            Self::ddim_options(&teacher.model.meta, student.teacher_steps, req.cfg_scale);
        options.clip_denoised |= student_meta.clip_denoised;
        let total = student.anchors.len();
        let mut last = Instant::now();
        let finished = ddim_sample_until(dit, noise, &req.labels, &options, |step| {
            let Some(k) = student.anchors.iter().position(|&a| a == step.index) else {
                return ControlFlow::Continue(());
            };
            let x0 = HostTensor::from_tensor(step.x0_pred.clone());
            let state = HostTensor::from_tensor(step.state.clone());
            let difference = student_predictions
                .get(k)
                .map(|p| difference_images(p, &x0));
            self.events.send(Event::Step(StepEvent {
                id: req.id,
                source: Role::Teacher,
                step: k,
                total,
                name: format!("pred_z0_{}", step.index),
                inputs: batch_images(&state),
                predictions: batch_images(&x0),
                ms: last.elapsed().as_secs_f64() * 1e3,
                difference,
            }));
            last = Instant::now();
            if self.should_stop() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        Ok(finished.is_some())
    }

    fn start_training(&mut self, req: TrainingRequest) {
        if let Some(t) = &self.training
            && !t.thread.is_finished()
        {
            self.events.send(Event::Training(TrainingEvent::Failed {
                message: "a training run is already going: stop it first".into(),
            }));
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let events = self.events.clone();
        let device = self.device.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ard-training".into())
            .spawn(move || {
                let send = |e| events.send(Event::Training(e));
                let result = catch_unwind(AssertUnwindSafe(|| {
                    run_training(&req, &device, &flag, &send)
                }));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => send(TrainingEvent::Failed {
                        message: e.to_string(),
                    }),
                    Err(_) => send(TrainingEvent::Failed {
                        message: "the training run failed unexpectedly".into(),
                    }),
                }
            })
            .expect("spawn the training thread");
        self.training = Some(Training { stop, thread });
    }
}

/// Loads a model file with what the model panel shows about it.
fn load_model(path: &Path, options: &LoadOptions, device: &Device) -> Result<Loaded> {
    let fingerprint = file_fingerprint(path)?;
    let file = TensorFile::read(path)?;
    let model = LoadedModel::from_file(file, options, device)?;
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let info = model_info(&model, source, fingerprint);
    Ok(Loaded { model, info })
}

/// What the model panel shows about `model`.
pub fn model_info(model: &LoadedModel, source: String, fingerprint: String) -> ModelInfo {
    let meta = &model.meta;
    let d = &meta.dit;
    // A 1000-class file without names is taken for ImageNet (DiT's own checkpoints).
    let class_names = meta
        .class_names
        .clone()
        .filter(|n| n.len() == d.num_classes)
        .or_else(|| (d.num_classes == 1000).then(crate::classes::imagenet))
        .unwrap_or_else(|| (0..d.num_classes).map(|i| format!("class {i}")).collect());
    let student = meta.student.as_ref();
    ModelInfo {
        source,
        fingerprint,
        kind: meta.kind,
        architecture: format!(
            "DiT {}×{}×{}, patch {}, hidden {}, depth {}, {} heads{}",
            d.in_channels,
            d.input_size,
            d.input_size,
            d.patch_size,
            d.hidden_size,
            d.depth,
            d.num_heads,
            match student {
                Some(s) => format!(
                    "; {} steps, N = {} history layers",
                    s.steps, s.history_layers
                ),
                None => String::new(),
            }
        ),
        params: model.num_params(),
        class_names,
        image_size: d.input_size,
        channels: d.in_channels,
        steps: student.map_or(25, |s| s.steps),
        history_layers: student.map(|s| s.history_layers),
        anchors: student.map(|s| s.anchors.clone()).unwrap_or_default(),
        teacher_steps: student.map(|s| s.teacher_steps),
    }
}

/// Per image: RMSE between two `[B, C, H, W]` batches and |a − b| as an image (black = equal,
/// white = a difference of 1 or more, half the value range).
fn difference_images(a: &HostTensor, b: &HostTensor) -> Vec<(f32, RgbImage)> {
    let diff = HostTensor::new(
        a.shape.clone(),
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs().min(1.0) * 2.0 - 1.0)
            .collect(),
    );
    let per_image = a.len() / a.shape[0].max(1);
    let rmse = a
        .data
        .chunks(per_image)
        .zip(b.data.chunks(per_image))
        .map(|(x, y)| {
            let sq: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
            (sq / per_image as f32).sqrt()
        });
    let grey = HostTensor::new(
        vec![diff.shape[0], 1, diff.shape[2], diff.shape[3]],
        diff.data
            .chunks(per_image)
            .flat_map(|img| {
                let plane = diff.shape[2] * diff.shape[3];
                let channels = diff.shape[1];
                (0..plane).map(move |i| {
                    (0..channels)
                        .map(|c| img[c * plane + i])
                        .fold(-1.0, f32::max)
                })
            })
            .collect(),
    );
    rmse.zip(batch_images(&grey)).collect()
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
        JobEvent::Checkpoint { .. } | JobEvent::Finished { .. } => {}
    }
}

/// Teacher (if asked), trajectory set, distillation: each phase resumes from what `run_dir`
/// already holds.
fn run_training(
    req: &TrainingRequest,
    device: &Device,
    stop: &AtomicBool,
    send: &dyn Fn(TrainingEvent),
) -> Result<()> {
    let dir = &req.run_dir;
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let options = |iterations, lr| TrainOptions {
        iterations,
        batch_size: req.batch,
        lr,
        ema_decay: 0.999,
        grad_clip: 1.0,
        seed: req.seed,
    };
    let run_dir = |name: &str| RunDir {
        dir: dir.join(name),
        checkpoint_every: 50,
        sample_every: req.preview_every,
        resume: true,
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
            iterations,
            hidden,
            depth,
            heads,
            patch,
            image_size,
            channels,
        } => {
            send(TrainingEvent::Phase {
                phase: Phase::Teacher,
            });
            let data = load_dataset(dataset, *image_size, *channels, Split::Train)?;
            let dit = crate::config::DitConfig::new(
                data.image_size(),
                *patch,
                data.channels(),
                *hidden,
                *depth,
                *heads,
                data.class_names.len(),
                false,
            );
            dit.validate()?;
            let run = run_dir("teacher");
            // A finished run resumes at its last iteration and returns at once.
            let teacher_file = train_teacher(
                &data,
                &dit,
                0.1,
                &options(*iterations, 1e-3),
                &run,
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
    let d = &teacher.meta.dit;
    let manifest = TrajectoryManifest {
        count: req.trajectories,
        shard_size: 100.min(req.trajectories.max(1)),
        ddim_steps: req.teacher_steps,
        cfg_scale: req.cfg_scale,
        guided_channels: d.in_channels.min(3),
        anchors: default_anchors(req.steps, req.teacher_steps),
        anchor_kind: AnchorKind::X0,
        seed: req.seed,
        num_classes: d.num_classes,
        image_shape: vec![d.in_channels, d.input_size, d.input_size],
        teacher: file_fingerprint(&teacher_path)?,
        clip_denoised: teacher.meta.clip_denoised,
    };
    let trajectories = dir.join("trajectories");
    let already = (0..manifest.num_shards())
        .filter(|&s| crate::trajectories::shard_path(&trajectories, s).exists())
        .map(|s| manifest.shard_range(s).len())
        .sum::<usize>() as u64;
    let total = req.trajectories as u64;
    write_trajectory_set_until(
        dit,
        &manifest,
        &trajectories,
        (0, 1),
        32,
        device,
        |p| {
            send(TrainingEvent::Progress {
                phase: Phase::Trajectories,
                done: already + p.done as u64,
                total,
                elapsed_s: p.elapsed_s,
                eta_s: p.eta_s(),
            })
        },
        stop,
    )?;
    if stopped(Phase::Trajectories) {
        return Ok(());
    }

    send(TrainingEvent::Phase {
        phase: Phase::Distillation,
    });
    let set = TrajectorySet::load(&trajectories)?;
    let student = distill(
        &teacher,
        &set,
        req.history_layers,
        &options(req.iterations, req.lr),
        &run_dir(&format!("student-n{}", req.history_layers)),
        device,
        JobHooks {
            stop,
            on_event: &mut job_forwarder(Phase::Distillation, send),
        },
    )?;
    if !stop.load(Ordering::Relaxed) {
        send(TrainingEvent::Finished { student });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DitConfig;
    use crate::init::{InitOptions, init_teacher};

    #[test]
    fn a_thousand_unnamed_classes_are_imagenet() {
        let model = init_teacher(
            &DitConfig::new(8, 4, 1, 16, 1, 2, 1000, false),
            None,
            InitOptions {
                seed: 0,
                zero_init: true,
            },
            &Device::flex(),
        )
        .unwrap();
        let info = model_info(&model, "dit.pt".into(), "0".into());
        assert!(info.class_names[207].starts_with("golden retriever"));
        let model = init_teacher(
            &DitConfig::new(8, 4, 1, 16, 1, 2, 3, false),
            None,
            InitOptions {
                seed: 0,
                zero_init: true,
            },
            &Device::flex(),
        )
        .unwrap();
        let info = model_info(&model, "x".into(), "0".into());
        assert_eq!(info.class_names, ["class 0", "class 1", "class 2"]);
    }
}
