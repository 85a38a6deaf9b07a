//! The training commands: `ard train-teacher`, `ard distill`, `ard train-features`. Their flag
//! defaults are the engine's [`TeacherOptions`], [`DistillOptions`] and feature-net defaults.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use ard_engine::Device;
use ard_engine::data::{
    DEFAULT_DATASET, IMAGE_FOLDER_CHANNELS, IMAGE_FOLDER_SIZE, Split, load_dataset,
};
use ard_engine::distill::TrajectorySet;
use ard_engine::distill::{DistillLoss, SelfForcing};
use ard_engine::eval::{
    DEFAULT_LAYERS, DENSE_HEAD, DenseHead, EVAL_EVERY, LEGACY_LAYERS, TRAINING_EVAL_SAMPLES,
    TrainingEval,
};
use ard_engine::gan::GanOptions;
use ard_engine::jobs::{
    DistillOptions, TeacherOptions, distill_student, feature_net_training, train_feature_net,
    train_teacher,
};
use ard_engine::model::{LoadOptions, LoadedModel, Model, ModelMeta};
use ard_engine::train::{
    CHECKPOINT_EVERY, COSINE_FINAL_FRACTION, COSINE_WARMUP, LrSchedule, Phase, RunDir,
    SAMPLE_EVERY, TrainOptions, preview_device,
};
use clap::Args;

use super::{choose_device, fmt_secs, positive, run_job};

/// Optimisation and run-directory flags of one training command, with the defaults of
/// `$defaults` (a [`TrainOptions`]): one struct per command, so each `--help` shows its own.
macro_rules! train_args {
    ($name:ident, $defaults:expr) => {
        #[derive(Args, Clone)]
        pub struct $name {
            /// Run directory: checkpoint, weights, sample grids.
            #[arg(long)]
            out: PathBuf,
            #[arg(long, default_value_t = $defaults.iterations)]
            iterations: u64,
            #[arg(long, default_value_t = $defaults.batch_size,
                                                                          value_parser = positive)]
            batch: usize,
            #[arg(long, default_value_t = $defaults.lr)]
            lr: f64,
            /// constant, or cosine (a linear warm-up, then a half cosine down to
            /// --final-lr-fraction × lr).
            #[arg(long = "lr-schedule", value_enum,
                  default_value_t = ScheduleKind::of(&$defaults.lr_schedule))]
            lr_schedule: ScheduleKind,
            /// Warm-up iterations of the cosine schedule.
            #[arg(long, default_value_t = ScheduleKind::warmup_of(&$defaults.lr_schedule))]
            warmup: u64,
            /// Where the cosine schedule ends, as a fraction of --lr.
            #[arg(long = "final-lr-fraction",
                  default_value_t = ScheduleKind::final_of(&$defaults.lr_schedule))]
            final_lr_fraction: f64,
            /// EMA decay of the weights (warmed up as min(decay, (1+i)/(10+i))).
            #[arg(long, default_value_t = $defaults.ema_decay)]
            ema: f64,
            /// Global gradient-norm clip (0 = none).
            #[arg(long = "grad-clip", default_value_t = $defaults.grad_clip)]
            grad_clip: f32,
            #[arg(long, default_value_t = $defaults.seed)]
            seed: u64,
            #[arg(long = "checkpoint-every", default_value_t = CHECKPOINT_EVERY)]
            checkpoint_every: u64,
            #[arg(long = "sample-every", default_value_t = SAMPLE_EVERY)]
            sample_every: u64,
            /// Print progress every this many iterations.
            #[arg(long = "log-every", default_value_t = 10)]
            pub(super) log_every: u64,
            /// Continue from the run directory's checkpoint.
            #[arg(long)]
            resume: bool,
            /// cpu or wgpu (default: wgpu when an adapter exists).
            #[arg(long)]
            pub(super) device: Option<String>,
        }

        impl $name {
            pub(super) fn options(&self) -> TrainOptions {
                TrainOptions {
                    iterations: self.iterations,
                    batch_size: self.batch,
                    lr: self.lr,
                    ema_decay: self.ema,
                    grad_clip: self.grad_clip,
                    seed: self.seed,
                    lr_schedule: self.lr_schedule.schedule(self.warmup, self.final_lr_fraction),
                }
            }

            pub(super) fn run_dir(&self) -> RunDir {
                RunDir {
                    prompts: None,
                    checkpoint_every: self.checkpoint_every,
                    sample_every: self.sample_every,
                    resume: self.resume,
                    ..RunDir::new(&self.out)
                }
            }
        }
    };
}

/// `--lr-schedule`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

impl ScheduleKind {
    fn of(s: &LrSchedule) -> Self {
        match s {
            LrSchedule::Constant => Self::Constant,
            LrSchedule::Cosine { .. } => Self::Cosine,
        }
    }

    fn warmup_of(s: &LrSchedule) -> u64 {
        match s {
            LrSchedule::Cosine { warmup, .. } => *warmup,
            LrSchedule::Constant => COSINE_WARMUP,
        }
    }

    fn final_of(s: &LrSchedule) -> f64 {
        match s {
            LrSchedule::Cosine { final_fraction, .. } => *final_fraction,
            LrSchedule::Constant => COSINE_FINAL_FRACTION,
        }
    }

    fn schedule(self, warmup: u64, final_fraction: f64) -> LrSchedule {
        match self {
            Self::Constant => LrSchedule::Constant,
            Self::Cosine => LrSchedule::Cosine {
                warmup,
                final_fraction,
            },
        }
    }
}

/// `--loss`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LossKind {
    Mse,
    PseudoHuber,
    L1,
}

impl LossKind {
    pub(super) fn of(l: DistillLoss) -> Self {
        match l {
            DistillLoss::Mse => Self::Mse,
            DistillLoss::PseudoHuber => Self::PseudoHuber,
            DistillLoss::L1 => Self::L1,
        }
    }

    pub(super) fn loss(self) -> DistillLoss {
        match self {
            Self::Mse => DistillLoss::Mse,
            Self::PseudoHuber => DistillLoss::PseudoHuber,
            Self::L1 => DistillLoss::L1,
        }
    }
}

train_args!(TeacherTrainArgs, TeacherOptions::default().train);
train_args!(DistillTrainArgs, DistillOptions::default().train);
train_args!(GanTrainArgs, GanOptions::default().train);

fn teacher_defaults() -> TeacherOptions {
    TeacherOptions::default()
}

/// Evaluation during training (`eval.jsonl` in the run directory).
#[derive(Args, Clone)]
pub struct EvalDuringArgs {
    /// Feature network (from `ard train-features`): with it, the run scores its EMA and raw
    /// weights (FID, class agreement) every --eval-every iterations.
    #[arg(long = "feature-net")]
    feature_net: Option<PathBuf>,
    #[arg(long = "eval-every", default_value_t = EVAL_EVERY, value_parser = positive_u64)]
    eval_every: u64,
    /// Samples per model and evaluation point.
    #[arg(long = "eval-samples", default_value_t = TRAINING_EVAL_SAMPLES, value_parser = positive)]
    eval_samples: usize,
    /// Real images for the evaluation (their test split).
    #[arg(long = "eval-data", default_value = DEFAULT_DATASET)]
    eval_data: String,
}

impl EvalDuringArgs {
    /// Whether an evaluation during training was asked for.
    pub(super) fn is_set(&self) -> bool {
        self.feature_net.is_some()
    }

    /// The evaluation these flags ask for, of models like those of `meta`.
    pub(super) fn load(
        &self,
        meta: &ModelMeta,
        device: &Device,
    ) -> Result<Option<Arc<TrainingEval>>> {
        let Some(net) = &self.feature_net else {
            return Ok(None);
        };
        let ev = TrainingEval::load(
            net,
            &self.eval_data,
            meta,
            self.eval_every,
            self.eval_samples,
            device,
        )?;
        Ok(Some(Arc::new(ev)))
    }
}

fn unit_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn positive_u64(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a whole number > 0, got {s:?}")),
    }
}

#[derive(Args)]
pub struct TrainTeacherArgs {
    #[command(flatten)]
    pub(super) train: TeacherTrainArgs,
    #[command(flatten)]
    pub(super) eval: EvalDuringArgs,
    /// `fashion-mnist` (Debian's dataset-fashion-mnist), a folder of IDX files, or an
    /// ImageFolder tree (one sub-folder per class).
    #[arg(long, default_value = DEFAULT_DATASET)]
    pub(super) data: String,
    /// Image side for ImageFolder data (Fashion-MNIST is 28).
    #[arg(long, default_value_t = IMAGE_FOLDER_SIZE)]
    pub(super) size: usize,
    /// 1 (grey) or 3 (RGB) for ImageFolder data.
    #[arg(long, default_value_t = IMAGE_FOLDER_CHANNELS)]
    pub(super) channels: usize,
    /// Patch size (default 4, class and text models alike).
    #[arg(long)]
    patch: Option<usize>,
    /// Hidden width (default 64; 96 for a text model).
    #[arg(long)]
    hidden: Option<usize>,
    /// Blocks (default 4; 6 for a text model).
    #[arg(long)]
    depth: Option<usize>,
    /// Attention heads (default 4).
    #[arg(long)]
    heads: Option<usize>,
    /// Probability of training a batch element with the null class, or a text model's with the
    /// empty prompt (for guidance).
    #[arg(long = "label-dropout", default_value_t = teacher_defaults().label_dropout)]
    label_dropout: f64,
    /// Train a text-conditioned teacher on a captioned set (`ard dataset emoji`, a
    /// captions.tsv, or a .txt beside each image): prompts through the text encoder.
    #[arg(long)]
    text: bool,
    /// The text encoder's folder (config.json, tokenizer.json, weights; default: the shipped
    /// all-MiniLM-L6-v2 in assets/text-encoder).
    #[arg(long = "text-encoder")]
    pub(super) text_encoder: Option<PathBuf>,
}

impl TrainTeacherArgs {
    /// The teacher settings these flags give (the text preset's architecture with --text).
    pub fn options(&self) -> TeacherOptions {
        let base = match self.text {
            true => TeacherOptions::emoji_text(),
            false => teacher_defaults(),
        };
        TeacherOptions {
            patch_size: self.patch.unwrap_or(base.patch_size),
            hidden_size: self.hidden.unwrap_or(base.hidden_size),
            depth: self.depth.unwrap_or(base.depth),
            num_heads: self.heads.unwrap_or(base.num_heads),
            label_dropout: self.label_dropout,
            train: self.train.options(),
        }
    }
}

#[derive(Args)]
pub struct DistillArgs {
    #[command(flatten)]
    train: DistillTrainArgs,
    #[command(flatten)]
    eval: EvalDuringArgs,
    #[arg(long)]
    teacher: PathBuf,
    /// Attention heads of a teacher file without ARD Studio metadata.
    #[arg(long = "heads")]
    heads: Option<usize>,
    /// N: lower blocks that attend to the trajectory history (0 = step distillation).
    #[arg(long = "history-layers", default_value_t = DistillOptions::default().history_layers)]
    history_layers: usize,
    /// Trajectory set directory (from `ard trajectories`).
    #[arg(long)]
    trajectories: PathBuf,
    /// Train on a trajectory set made by another teacher file than --teacher.
    #[arg(long = "allow-other-teacher")]
    allow_other_teacher: bool,
    /// Distance between each step's output and its anchor: mse (the paper's), pseudo-huber
    /// (iCT's) or l1.
    #[arg(long, value_enum, default_value_t = LossKind::of(DistillOptions::default().loss))]
    loss: LossKind,
    /// A latent teacher's VAE (diffusers AutoencoderKL): sample grids are decoded through it.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Self-forcing: the share of each batch whose history is the student's own rollout from
    /// the same x_T instead of the teacher's anchors (0 = teacher forcing, the paper's).
    #[arg(long = "self-forcing", default_value_t = DistillOptions::default().self_forcing.fraction,
          value_parser = unit_fraction)]
    self_forcing: f64,
    /// First iteration with self-forced trajectories.
    #[arg(long = "self-forcing-start", default_value_t = DistillOptions::default().self_forcing.start)]
    self_forcing_start: u64,
    /// Iterations over which the self-forced share grows linearly to `--self-forcing`.
    #[arg(long = "self-forcing-ramp", default_value_t = DistillOptions::default().self_forcing.ramp)]
    self_forcing_ramp: u64,
}

impl DistillArgs {
    /// The distillation settings these flags give.
    pub fn options(&self) -> DistillOptions {
        DistillOptions {
            history_layers: self.history_layers,
            self_forcing: SelfForcing {
                fraction: self.self_forcing,
                start: self.self_forcing_start,
                ramp: self.self_forcing_ramp,
            },
            loss: self.loss.loss(),
            train: self.train.options(),
        }
    }
}

#[derive(Args)]
pub(super) struct TrainFeaturesArgs {
    /// Output file (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// `fashion-mnist`, a folder of IDX files, or an ImageFolder tree.
    #[arg(long, default_value = DEFAULT_DATASET)]
    data: String,
    /// ImageFolder test split (default: the training tree itself).
    #[arg(long = "test-data")]
    test_data: Option<String>,
    #[arg(long, default_value_t = IMAGE_FOLDER_SIZE)]
    size: usize,
    #[arg(long, default_value_t = IMAGE_FOLDER_CHANNELS)]
    channels: usize,
    #[arg(long, default_value_t = feature_net_training().iterations)]
    iterations: u64,
    #[arg(long, default_value_t = feature_net_training().batch_size,
          value_parser = positive)]
    batch: usize,
    #[arg(long, default_value_t = feature_net_training().lr)]
    lr: f64,
    #[arg(long, default_value_t = feature_net_training().seed)]
    seed: u64,
    /// The network: `dense` (five 3×3 convolutions, two per resolution, then a dense layer of 256
    /// on the last map pooled to 4×4: those are the features; 91.2% on Fashion-MNIST),
    /// `five-conv` (the same convolutions, the last map's average as the features; 86.7%) or
    /// `three-conv` (the first networks' three convolutions; 80.1%): the last two are differently
    /// built second opinions for `ard eval`.
    #[arg(long, value_enum, default_value_t = FeatureArch::Dense)]
    arch: FeatureArch,
    /// constant, or cosine (a linear warm-up, then a half cosine).
    #[arg(long = "lr-schedule", value_enum,
          default_value_t = ScheduleKind::of(&feature_net_training().lr_schedule))]
    lr_schedule: ScheduleKind,
    #[arg(long)]
    device: Option<String>,
}

/// `--arch`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum FeatureArch {
    Dense,
    FiveConv,
    ThreeConv,
}

impl FeatureArch {
    fn layers(self) -> &'static [(usize, usize)] {
        match self {
            Self::Dense | Self::FiveConv => &DEFAULT_LAYERS,
            Self::ThreeConv => &LEGACY_LAYERS,
        }
    }

    fn dense(self) -> Option<DenseHead> {
        (self == Self::Dense).then_some(DENSE_HEAD)
    }
}

/// Every training default, as `ard defaults` prints it.
pub(super) fn defaults_json() -> String {
    let defaults = serde_json::json!({
        "teacher": TeacherOptions::default(),
        "trajectories": ard_engine::distill::TrajectoryOptions::default(),
        "distill": DistillOptions::default(),
        "finetune_gan": GanOptions::default(),
        "feature_net": feature_net_training(),
        "checkpoint_every": CHECKPOINT_EVERY,
        "sample_every": SAMPLE_EVERY,
    });
    serde_json::to_string_pretty(&defaults).expect("plain data")
}

/// `ard manifest`.
#[derive(Args)]
pub struct ManifestArgs {
    /// The run folder (a pipeline's jobs in its subfolders, e.g. runs/defaults).
    #[arg(long)]
    run: PathBuf,
    /// The command that made the run, recorded as given.
    #[arg(long)]
    command: Option<String>,
    /// Write the manifest here (atomically) instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The run folder's manifest with the defaults of this build (what each job did not override).
pub(super) fn manifest_cmd(args: ManifestArgs) -> Result<String> {
    let mut manifest = ard_engine::train::run_manifest(&args.run)?;
    manifest["command"] = serde_json::json!(args.command);
    manifest["defaults"] = serde_json::from_str(&defaults_json()).expect("our own JSON");
    let text = serde_json::to_string_pretty(&manifest).expect("plain data") + "\n";
    match args.out {
        Some(out) => {
            ard_engine::io::write_atomically(&out, text.as_bytes())?;
            Ok(String::new())
        }
        None => Ok(text),
    }
}

pub(super) fn train_teacher_cmd(args: TrainTeacherArgs) -> Result<()> {
    if args.text {
        return super::train_text::train_text_teacher_cmd(args);
    }
    let (_, device) = choose_device(args.train.device.as_deref())?;
    let data = load_dataset(&args.data, args.size, args.channels, Split::Train)?;
    eprintln!(
        "data: {} images {}x{}x{}, {} classes (fingerprint {})",
        data.len(),
        data.channels(),
        data.image_size(),
        data.image_size(),
        data.class_names.len(),
        data.fingerprint()
    );
    let mut run = args.train.run_dir();
    let options = args.options();
    let dit = options.architecture(data.image_size(), data.channels(), data.class_names.len());
    let meta = ModelMeta::pixel_teacher(dit, Some(data.class_names.clone()));
    run.eval = args.eval.load(&meta, &device)?;
    run_job(Phase::Teacher, args.train.log_every, |hooks| {
        train_teacher(&data, &options, &run, &device, hooks)
    })
}

pub(super) fn distill_cmd(args: DistillArgs) -> Result<()> {
    let (_, device) = choose_device(args.train.device.as_deref())?;
    let teacher = LoadedModel::load(
        &args.teacher,
        &LoadOptions {
            num_heads: args.heads,
            history_layers: None,
        },
        &device,
    )?;
    if !matches!(teacher.model, Model::Teacher(_)) {
        bail!(
            "{}: distillation starts from a teacher, and this is a student",
            args.teacher.display()
        );
    }
    let set = TrajectorySet::load_for_teacher(
        &args.trajectories,
        &args.teacher,
        args.allow_other_teacher,
    )?;
    eprintln!(
        "{} trajectories, K = {} steps, N = {}",
        set.labels.len(),
        set.manifest.anchors.len(),
        args.history_layers
    );
    let mut run = args.train.run_dir();
    run.eval = args.eval.load(&teacher.meta, &device)?;
    if let Some(path) = &args.vae {
        let vae = super::vae::load_vae(path, &preview_device(teacher.num_params(), &device))?;
        vae.check_fits(&teacher.meta.dit)?;
        run.decoder = Some(Arc::new(vae));
    }
    run_job(Phase::Distillation, args.train.log_every, |hooks| {
        distill_student(&teacher, &set, &args.options(), &run, &device, hooks)
    })
}

pub(super) fn train_features_cmd(args: TrainFeaturesArgs) -> Result<()> {
    let (_, device) = choose_device(args.device.as_deref())?;
    let train = load_dataset(&args.data, args.size, args.channels, Split::Train)?;
    let test = load_dataset(
        args.test_data.as_deref().unwrap_or(&args.data),
        args.size,
        args.channels,
        Split::Test,
    )?;
    let options = TrainOptions {
        iterations: args.iterations,
        batch_size: args.batch,
        lr: args.lr,
        seed: args.seed,
        lr_schedule: {
            let d = feature_net_training().lr_schedule;
            args.lr_schedule
                .schedule(ScheduleKind::warmup_of(&d), ScheduleKind::final_of(&d))
        },
        ..feature_net_training()
    };
    let start = std::time::Instant::now();
    let total = args.iterations;
    let net = train_feature_net(
        &train,
        &test,
        args.arch.layers(),
        args.arch.dense(),
        &options,
        &device,
        |i, loss| {
            if i % 50 == 0 || i == total {
                let el = start.elapsed().as_secs_f64();
                eprintln!(
                    "iter {i}/{total}  loss {loss:.4}  elapsed {}  eta {}",
                    fmt_secs(el),
                    fmt_secs(el * (total - i) as f64 / i as f64)
                );
            }
        },
    )?;
    net.save(&args.out)?;
    eprintln!(
        "test accuracy {:.2}% on {} images; wrote {}",
        100.0 * net.config.test_accuracy.unwrap_or(f64::NAN),
        test.len(),
        args.out.display()
    );
    Ok(())
}
