//! The engine thread behind the app: requests in, events out, over crossbeam channels
//! (the protocol is `protocol.rs`).
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

use crate::diffusion::ddim::DdimOptions;
use crate::diffusion::sampling::{SampleRequest, StepImage, sample_until};
use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, seeded_noise};
use crate::io::preview::batch_images;
use crate::io::weights::TensorFile;
use crate::io::writer::file_fingerprint;
use crate::model::config::{ModelKind, ModelMeta};
use crate::model::loaded::{LoadOptions, LoadedModel, Model};
use crate::model::precision::Precision;
use crate::studio::display::{difference_images, model_info};
use crate::studio::pipeline::run_pipeline;
use crate::studio::protocol::{
    Event, GenerateRequest, ModelInfo, Request, Role, StepEvent, TrainingEvent, TrainingRequest,
};
use crate::vae::{AutoencoderKL, is_vae};
use image::RgbImage;

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
                EngineThread::new(options.device, emitter, request_rx)
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

struct EngineThread {
    device: Device,
    events: Emitter,
    requests: Receiver<Request>,
    /// Requests that arrived while a generation ran.
    pending: VecDeque<Request>,
    generator: Option<Loaded>,
    teacher: Option<Loaded>,
    /// Decodes latent models' steps for display.
    vae: Option<Arc<AutoencoderKL>>,
    training: Option<Training>,
}

impl EngineThread {
    fn new(device: Device, events: Emitter, requests: Receiver<Request>) -> Self {
        Self {
            device,
            events,
            requests,
            pending: VecDeque::new(),
            generator: None,
            teacher: None,
            vae: None,
            training: None,
        }
    }

    fn run(mut self, device_label: String, initial: Vec<PathBuf>) {
        self.events.send(Event::Ready {
            device: device_label,
        });
        for path in initial {
            self.load(&path, &LoadOptions::default(), Precision::F32);
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
                Request::LoadWeights {
                    path,
                    options,
                    precision,
                } => self.load(&path, &options, precision),
                Request::Generate(req) => self.generate(req),
                Request::StartTraining(req) => self.start_training(*req),
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

    fn load(&mut self, path: &Path, options: &LoadOptions, precision: Precision) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            load_file(path, options, precision, &self.device)
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::BadFile {
                path: path.into(),
                message: "the loader failed on this file".into(),
            })
        });
        match result {
            Ok(LoadedFile::Vae(vae)) => {
                let c = &vae.config;
                let description = format!(
                    "VAE: levels {:?}, {} latent channels, scaling factor {}",
                    c.block_out_channels, c.latent_channels, c.scaling_factor
                );
                self.vae = Some(Arc::from(vae));
                self.events.send(Event::VaeLoaded {
                    source: file_label(path),
                    description,
                });
            }
            Ok(LoadedFile::Model(loaded)) => {
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
                self.generator = Some(*loaded);
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

    /// How `meta`'s samples are shown: through the VAE when one is loaded whose latents have
    /// the model's channels, else as images.
    fn display(&self, meta: &ModelMeta) -> Display {
        let vae = self
            .vae
            .clone()
            .filter(|v| v.config.latent_channels == meta.dit.in_channels);
        Display {
            vae,
            device: self.device.clone(),
        }
    }

    /// Sends a step, then looks at the queue: breaks the run when it should stop.
    fn stream(&mut self, event: StepEvent) -> ControlFlow<()> {
        self.events.send(Event::Step(event));
        if self.should_stop() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
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
            return Err(EngineError::NothingLoaded(
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
                return Err(EngineError::NothingLoaded(
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
        seeded_noise(meta.dit.batch_shape(req.labels.len()), req.seed)
    }

    /// Streams the generator's steps; returns each step's prediction, or `None` if cancelled.
    fn run_generator(
        &mut self,
        generator: &Loaded,
        req: &GenerateRequest,
    ) -> Result<Option<Vec<HostTensor>>> {
        let meta = &generator.model.meta;
        let request = SampleRequest {
            prompts: None,
            noise: Self::noise(meta, req),
            labels: req.labels.clone(),
            ddim: DdimOptions {
                steps: req.teacher_steps,
                cfg_scale: req.cfg_scale,
                ..DdimOptions::default()
            },
        };
        let device = self.device.clone();
        let display = self.display(meta);
        let start = Instant::now();
        let mut last = Instant::now();
        let mut predictions = Vec::new();
        let out = sample_until(&generator.model, &request, &device, |s| {
            predictions.push(s.image.clone());
            let event =
                display.step_event(req.id, Role::Generator, (s.step, s.total), s, &mut last);
            self.stream(event)
        })?;
        let Some(out) = out else { return Ok(None) };
        self.events.send(Event::Done {
            id: req.id,
            images: display.images(&out.images),
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
        let (s, t) = (&student_meta.dit, &teacher.model.meta.dit);
        if (s.input_size, s.in_channels, s.num_classes)
            != (t.input_size, t.in_channels, t.num_classes)
        {
            return Err(EngineError::Mismatch(format!(
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
        let request = SampleRequest {
            prompts: None,
            noise: Self::noise(student_meta, req),
            labels: req.labels.clone(),
            ddim: DdimOptions {
                steps: student.teacher_steps,
                cfg_scale: req.cfg_scale,
                guided_channels: None,
                clip_denoised: student_meta.clip_denoised,
            },
        };
        let total = student.anchors.len();
        let device = self.device.clone();
        let display = self.display(student_meta);
        let mut last = Instant::now();
        let finished = sample_until(&teacher.model, &request, &device, |step| {
            let Some(k) = student.anchors.iter().position(|&a| a == step.index) else {
                return ControlFlow::Continue(());
            };
            let event = StepEvent {
                difference: student_predictions
                    .get(k)
                    .map(|p| difference_images(p, &step.image)),
                ..display.step_event(req.id, Role::Teacher, (k, total), step, &mut last)
            };
            self.stream(event)
        })?;
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
                    run_pipeline(&req, &device, &flag, &send)
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

/// How samples become images: decoded through a VAE (latent models) or shown as they are.
struct Display {
    vae: Option<Arc<AutoencoderKL>>,
    device: Device,
}

impl Display {
    /// One image per batch element of `t: [B, C, H, W]`.
    fn images(&self, t: &HostTensor) -> Vec<RgbImage> {
        let Some(vae) = &self.vae else {
            return batch_images(t);
        };
        match t.to_device::<4>(&self.device) {
            Ok(x) => batch_images(&HostTensor::from_tensor(vae.decode_scaled(x))),
            Err(_) => batch_images(t),
        }
    }

    /// The event of one sampled step, shown as step `k` of `total`; `last` is when the
    /// previous step was shown (reset to now).
    fn step_event(
        &self,
        id: u64,
        source: Role,
        (step, total): (usize, usize),
        s: &StepImage,
        last: &mut Instant,
    ) -> StepEvent {
        let inputs = self.images(&s.input);
        let predictions = self.images(&s.image);
        let ms = last.elapsed().as_secs_f64() * 1e3;
        *last = Instant::now();
        StepEvent {
            id,
            source,
            step,
            total,
            name: s.name.clone(),
            inputs,
            predictions,
            ms,
            difference: None,
        }
    }
}

/// What a dropped or opened weight file turned out to be.
enum LoadedFile {
    Model(Box<Loaded>),
    Vae(Box<AutoencoderKL>),
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads a weight file: a VAE (diffusers key names, f32) or a teacher / student in
/// `precision`.
fn load_file(
    path: &Path,
    options: &LoadOptions,
    precision: Precision,
    device: &Device,
) -> Result<LoadedFile> {
    let file = TensorFile::read(path)?;
    if is_vae(&file) {
        let vae = AutoencoderKL::from_tensor_file(path, &file, device)?;
        return Ok(LoadedFile::Vae(Box::new(vae)));
    }
    Ok(LoadedFile::Model(Box::new(load_model(
        path, file, options, precision, device,
    )?)))
}

/// Loads a model file with what the model panel shows about it.
fn load_model(
    path: &Path,
    file: TensorFile,
    options: &LoadOptions,
    precision: Precision,
    device: &Device,
) -> Result<Loaded> {
    precision.check(device)?;
    let fingerprint = file_fingerprint(path)?;
    let model = LoadedModel::from_file_in(file, options, precision, device)?;
    let info = model_info(&model, file_label(path), fingerprint);
    Ok(Loaded { model, info })
}
