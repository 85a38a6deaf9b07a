//! The training commands: `ard train-teacher`, `ard distill`, `ard train-features`. Their flag
//! defaults are the engine's [`TeacherOptions`], [`DistillOptions`] and feature-net defaults.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Result, bail};
use ard_engine::data::{
    DEFAULT_DATASET, IMAGE_FOLDER_CHANNELS, IMAGE_FOLDER_SIZE, Split, load as load_dataset,
};
use ard_engine::distill::TrajectorySet;
use ard_engine::eval::{feature_net_training, train_feature_net};
use ard_engine::model::{LoadOptions, LoadedModel, Model};
use ard_engine::train::{
    CHECKPOINT_EVERY, DistillOptions, JobHooks, RunDir, SAMPLE_EVERY, TeacherOptions, TrainOptions,
    distill, train_teacher,
};
use clap::Args;

use super::{choose_device, fmt_secs, positive, print_event};

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
            log_every: u64,
            /// Continue from the run directory's checkpoint.
            #[arg(long)]
            resume: bool,
            /// cpu or wgpu (default: wgpu when an adapter exists).
            #[arg(long)]
            device: Option<String>,
        }

        impl $name {
            fn options(&self) -> TrainOptions {
                TrainOptions {
                    iterations: self.iterations,
                    batch_size: self.batch,
                    lr: self.lr,
                    ema_decay: self.ema,
                    grad_clip: self.grad_clip,
                    seed: self.seed,
                }
            }

            fn run_dir(&self) -> RunDir {
                RunDir {
                    checkpoint_every: self.checkpoint_every,
                    sample_every: self.sample_every,
                    resume: self.resume,
                    ..RunDir::new(&self.out)
                }
            }
        }
    };
}

train_args!(TeacherTrainArgs, TeacherOptions::default().train);
train_args!(DistillTrainArgs, DistillOptions::default().train);

fn teacher_defaults() -> TeacherOptions {
    TeacherOptions::default()
}

#[derive(Args)]
pub struct TrainTeacherArgs {
    #[command(flatten)]
    train: TeacherTrainArgs,
    /// `fashion-mnist` (Debian's dataset-fashion-mnist), a folder of IDX files, or an
    /// ImageFolder tree (one sub-folder per class).
    #[arg(long, default_value = DEFAULT_DATASET)]
    data: String,
    /// Image side for ImageFolder data (Fashion-MNIST is 28).
    #[arg(long, default_value_t = IMAGE_FOLDER_SIZE)]
    size: usize,
    /// 1 (grey) or 3 (RGB) for ImageFolder data.
    #[arg(long, default_value_t = IMAGE_FOLDER_CHANNELS)]
    channels: usize,
    #[arg(long, default_value_t = teacher_defaults().patch_size)]
    patch: usize,
    #[arg(long, default_value_t = teacher_defaults().hidden_size)]
    hidden: usize,
    #[arg(long, default_value_t = teacher_defaults().depth)]
    depth: usize,
    #[arg(long, default_value_t = teacher_defaults().num_heads)]
    heads: usize,
    /// Probability of training a batch element with the null class (for guidance).
    #[arg(long = "label-dropout", default_value_t = teacher_defaults().label_dropout)]
    label_dropout: f64,
}

impl TrainTeacherArgs {
    /// The teacher settings these flags give.
    pub fn options(&self) -> TeacherOptions {
        TeacherOptions {
            patch_size: self.patch,
            hidden_size: self.hidden,
            depth: self.depth,
            num_heads: self.heads,
            label_dropout: self.label_dropout,
            train: self.train.options(),
        }
    }
}

#[derive(Args)]
pub struct DistillArgs {
    #[command(flatten)]
    train: DistillTrainArgs,
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
}

impl DistillArgs {
    /// The distillation settings these flags give.
    pub fn options(&self) -> DistillOptions {
        DistillOptions {
            history_layers: self.history_layers,
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
    #[arg(long)]
    device: Option<String>,
}

/// Every training default, as `ard defaults` prints it.
pub(super) fn defaults_json() -> String {
    let defaults = serde_json::json!({
        "teacher": TeacherOptions::default(),
        "trajectories": ard_engine::distill::TrajectoryOptions::default(),
        "distill": DistillOptions::default(),
        "feature_net": feature_net_training(),
        "checkpoint_every": CHECKPOINT_EVERY,
        "sample_every": SAMPLE_EVERY,
    });
    serde_json::to_string_pretty(&defaults).expect("plain data")
}

pub(super) fn train_teacher_cmd(args: TrainTeacherArgs) -> Result<()> {
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
    let stop = AtomicBool::new(false);
    train_teacher(
        &data,
        &args.options(),
        &args.train.run_dir(),
        &device,
        JobHooks {
            stop: &stop,
            on_event: &mut print_event(args.train.log_every),
        },
    )?;
    Ok(())
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
    let set = TrajectorySet::load(&args.trajectories)?;
    eprintln!(
        "{} trajectories, K = {} steps, N = {}",
        set.labels.len(),
        set.manifest.anchors.len(),
        args.history_layers
    );
    let stop = AtomicBool::new(false);
    distill(
        &teacher,
        &set,
        &args.options(),
        &args.train.run_dir(),
        &device,
        JobHooks {
            stop: &stop,
            on_event: &mut print_event(args.train.log_every),
        },
    )?;
    Ok(())
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
        ..feature_net_training()
    };
    let start = std::time::Instant::now();
    let total = args.iterations;
    let net = train_feature_net(&train, &test, &options, &device, |i, loss| {
        if i % 50 == 0 || i == total {
            let el = start.elapsed().as_secs_f64();
            eprintln!(
                "iter {i}/{total}  loss {loss:.4}  elapsed {}  eta {}",
                fmt_secs(el),
                fmt_secs(el * (total - i) as f64 / i as f64)
            );
        }
    })?;
    net.save(&args.out)?;
    eprintln!(
        "test accuracy {:.2}% on {} images; wrote {}",
        100.0 * net.config.test_accuracy.unwrap_or(f64::NAN),
        test.len(),
        args.out.display()
    );
    Ok(())
}
