//! `ard finetune-gan`: stage 2, the adversarial fine-tuning of a distilled student. Its flag
//! defaults are the engine's [`GanOptions`].

use std::path::PathBuf;

use anyhow::Result;
use ard_engine::data::{DEFAULT_DATASET, Split, load_dataset};
use ard_engine::distill::TrajectorySet;
use ard_engine::gan::{DiscriminatorConfig, GanOptions};
use ard_engine::jobs::finetune_gan;
use ard_engine::model::{LoadOptions, LoadedModel};
use ard_engine::train::Phase;
use clap::Args;

use super::train::{EvalDuringArgs, GanTrainArgs, LossKind};
use super::{choose_device, positive, run_job};

fn gan_defaults() -> GanOptions {
    GanOptions::default()
}

#[derive(Args)]
pub struct FinetuneGanArgs {
    #[command(flatten)]
    train: GanTrainArgs,
    #[command(flatten)]
    eval: EvalDuringArgs,
    /// The distilled student to fine-tune (from `ard distill`).
    #[arg(long)]
    student: PathBuf,
    /// Its teacher: the discriminator's frozen feature extractor.
    #[arg(long)]
    teacher: PathBuf,
    /// Attention heads of files without ARD Studio metadata.
    #[arg(long = "heads")]
    heads: Option<usize>,
    /// N of a student file without metadata.
    #[arg(long = "history-layers")]
    history_layers: Option<usize>,
    /// The trajectory set the student was distilled on (the regression term).
    #[arg(long)]
    trajectories: PathBuf,
    /// Train on a trajectory set made by another teacher file than --teacher.
    #[arg(long = "allow-other-teacher")]
    allow_other_teacher: bool,
    /// Real images for the discriminator: `fashion-mnist`, an IDX folder or an ImageFolder tree
    /// (training split).
    #[arg(long, default_value = DEFAULT_DATASET)]
    data: String,
    /// The discriminator's learning rate (AdamW, constant).
    #[arg(long = "disc-lr", default_value_t = gan_defaults().disc_lr)]
    disc_lr: f64,
    /// Factor on the adaptive weight ‖∇L_reg‖ / ‖∇L_adv‖ (taken at the last head's weight).
    #[arg(long = "weight-factor", default_value_t = gan_defaults().weight_factor)]
    weight_factor: f64,
    /// Clamp of the adaptive weight before the factor.
    #[arg(long = "max-weight", default_value_t = gan_defaults().max_weight)]
    max_weight: f64,
    /// Iterations at the start with adversarial weight 0 (the discriminator learns alone).
    #[arg(long = "gan-warmup", default_value_t = gan_defaults().warmup)]
    gan_warmup: u64,
    /// Lowest re-noising timestep of the samples the teacher sees (of 1000).
    #[arg(long = "noise-min", default_value_t = gan_defaults().noise_range[0])]
    noise_min: usize,
    /// Re-noising timesteps are drawn uniformly below this one.
    #[arg(long = "noise-max", default_value_t = gan_defaults().noise_range[1])]
    noise_max: usize,
    /// The regression term's distance.
    #[arg(long, value_enum, default_value_t = LossKind::of(gan_defaults().loss))]
    loss: LossKind,
    /// Width of the heads' class/time projection.
    #[arg(long = "cmap-dim", default_value_t = gan_defaults().disc.cmap_dim, value_parser = positive)]
    cmap_dim: usize,
    /// Kernel of the heads' 1-D convolution over tokens (odd).
    #[arg(long = "disc-kernel", default_value_t = gan_defaults().disc.kernel, value_parser = positive)]
    disc_kernel: usize,
}

impl FinetuneGanArgs {
    /// The adversarial stage's settings these flags give.
    pub fn options(&self) -> GanOptions {
        GanOptions {
            train: self.train.options(),
            loss: self.loss.loss(),
            disc_lr: self.disc_lr,
            weight_factor: self.weight_factor,
            max_weight: self.max_weight,
            warmup: self.gan_warmup,
            noise_range: [self.noise_min, self.noise_max],
            disc: DiscriminatorConfig {
                cmap_dim: self.cmap_dim,
                kernel: self.disc_kernel,
                ..gan_defaults().disc
            },
        }
    }
}

pub(super) fn finetune_gan_cmd(args: FinetuneGanArgs) -> Result<()> {
    let (_, device) = choose_device(args.train.device.as_deref())?;
    let load = |path: &PathBuf| {
        LoadedModel::load(
            path,
            &LoadOptions {
                num_heads: args.heads,
                history_layers: args.history_layers,
            },
            &device,
        )
    };
    let teacher = load(&args.teacher)?;
    let student = load(&args.student)?;
    let set = TrajectorySet::load_for_teacher(
        &args.trajectories,
        &args.teacher,
        args.allow_other_teacher,
    )?;
    let d = &teacher.meta.dit;
    let real = load_dataset(&args.data, d.input_size, d.in_channels, Split::Train)?;
    eprintln!(
        "{} trajectories, {} real images; discriminator: {} heads on the teacher's blocks",
        set.labels.len(),
        real.len(),
        d.depth
    );
    let mut run = args.train.run_dir();
    run.eval = args.eval.load(&teacher.meta, &device)?;
    run_job(Phase::Adversarial, args.train.log_every, |hooks| {
        finetune_gan(
            &teacher,
            &student,
            &set,
            &real,
            &args.options(),
            &run,
            &device,
            hooks,
        )
    })
}
