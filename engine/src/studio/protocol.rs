//! The request/event protocol between the app and its engine thread: what the window asks
//! ([`Request`]) and what the engine reports ([`Event`]), each step of a generation as soon as it
//! is computed. A training run reports the training loop's own events ([`TrainingEvent`],
//! defined with the loop in `train/events.rs`), unchanged.

use std::path::PathBuf;

use image::RgbImage;

use crate::distill::trajectories::TrajectoryOptions;
use crate::eval::monitor::{EVAL_EVERY, TRAINING_EVAL_SAMPLES};
use crate::gan::finetune::GanOptions;
use crate::jobs::{DistillOptions, TeacherOptions};
use crate::model::config::ModelKind;
use crate::model::loaded::LoadOptions;
use crate::model::precision::Precision;
use crate::train::run_dir::SAMPLE_EVERY;

pub use crate::train::events::{Phase, TrainingEvent};

/// What the app asks of the engine.
#[derive(Clone, Debug)]
pub enum Request {
    Generate(GenerateRequest),
    /// Stops the generation in progress after its current step.
    Cancel,
    /// Loads a weight file (`.safetensors` or `.pt`). A teacher becomes both the generator and
    /// the comparison teacher; a student becomes the generator; a VAE (diffusers
    /// AutoencoderKL) decodes latent models' steps. `options` give what a file
    /// without ARD Studio metadata (reference key names only) cannot say: heads, N.
    LoadWeights {
        path: PathBuf,
        options: LoadOptions,
        /// The model's precision (a VAE stays f32).
        precision: Precision,
    },
    StartTraining(Box<TrainingRequest>),
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
    /// What the weights are held and computed in.
    pub precision: Precision,
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
    /// A VAE was loaded: the steps of latent models (as many channels as its latents) are
    /// decoded through it from now on.
    VaeLoaded {
        source: String,
        /// Widths, latent channels, scaling factor.
        description: String,
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
            preview_every: SAMPLE_EVERY,
            eval: None,
            gan: None,
        }
    }
}
