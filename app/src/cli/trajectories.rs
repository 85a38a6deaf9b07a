//! `ard trajectories`: the teacher's DDIM + guidance runs, stored as a sharded trajectory set.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ard_engine::distill::{AnchorKind, TrajectoryOptions, write_trajectory_set};
use ard_engine::io::file_fingerprint;
use ard_engine::model::{LoadedModel, Model, Precision};
use clap::Args;

use super::{ArchArgs, DdimArgs, DeviceArgs, fmt_secs, parse_part};

fn defaults() -> TrajectoryOptions {
    TrajectoryOptions::default()
}

#[derive(Args)]
pub struct TrajectoriesArgs {
    #[arg(long)]
    teacher: PathBuf,
    #[command(flatten)]
    arch: ArchArgs,
    /// Output directory (manifest.json and shard-*.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Trajectories in the whole set (class-balanced).
    #[arg(long, default_value_t = defaults().count)]
    count: usize,
    #[arg(long = "shard-size", default_value_t = defaults().shard_size)]
    shard_size: usize,
    /// This worker's part, i/n: shards s with s mod n = i.
    #[arg(long, default_value = "0/1")]
    shard: String,
    #[command(flatten)]
    ddim: DdimArgs,
    /// Respaced indices of the anchors, highest first, ending with 0 (default: the student's
    /// K-step anchors, 15,10,5,0 for K = 4 of 25).
    #[arg(long, value_delimiter = ',')]
    anchors: Vec<usize>,
    /// Student steps K, when --anchors is not given.
    #[arg(long = "student-steps", default_value_t = defaults().student_steps)]
    student_steps: usize,
    /// x0 (the teacher's x0 predictions, default) or state (its noisy states).
    #[arg(long = "anchor-kind", default_value = "x0")]
    anchor_kind: String,
    /// Images per teacher batch.
    #[arg(long, default_value_t = defaults().batch)]
    batch: usize,
    #[arg(long, default_value_t = defaults().seed)]
    seed: u64,
    /// The teacher's precision: f32, or f16 / bf16 where the device computes in them.
    #[arg(long, default_value_t = defaults().precision)]
    precision: Precision,
    #[command(flatten)]
    device: DeviceArgs,
}

impl TrajectoriesArgs {
    /// The trajectory settings these flags give.
    pub fn options(&self) -> Result<TrajectoryOptions> {
        Ok(TrajectoryOptions {
            count: self.count,
            shard_size: self.shard_size,
            ddim: self.ddim.options(false),
            student_steps: self.student_steps,
            anchors: (!self.anchors.is_empty()).then(|| self.anchors.clone()),
            anchor_kind: self.anchor_kind.parse::<AnchorKind>()?,
            batch: self.batch,
            seed: self.seed,
            precision: self.precision,
        })
    }
}

pub(super) fn trajectories_cmd(args: TrajectoriesArgs) -> Result<()> {
    let (_, device) = args.device.choose()?;
    let teacher =
        LoadedModel::load_in(&args.teacher, &args.arch.options(), args.precision, &device)?;
    let Model::Teacher(dit) = &teacher.model else {
        bail!(
            "{}: trajectories come from a teacher, and this is a student",
            args.teacher.display()
        );
    };
    let (part, parts) = parse_part(&args.shard)?;
    let options = args.options()?;
    let manifest = options.manifest(&teacher.meta, file_fingerprint(&args.teacher)?);
    eprintln!(
        "{} trajectories in {} shards; anchors {:?} ({:?}); worker {part}/{parts}",
        manifest.count,
        manifest.num_shards(),
        manifest.anchors,
        manifest.anchor_kind
    );
    let mut last_print = 0.0;
    let done = write_trajectory_set(
        dit,
        &manifest,
        &args.out,
        (part, parts),
        options.batch,
        &device,
        |p| {
            // Every shard, and every teacher evaluation at most each 5 s in between.
            if p.shard_written || p.elapsed_s - last_print >= 5.0 {
                last_print = p.elapsed_s;
                eprintln!(
                    "trajectories {}/{} (teacher evaluation {}/{})  elapsed {}  eta {}",
                    p.already + p.done,
                    p.already + p.total,
                    p.evaluations,
                    p.total_evaluations,
                    fmt_secs(p.elapsed_s),
                    fmt_secs(p.eta_s())
                );
            }
        },
    )?;
    eprintln!("wrote {done} trajectories to {}", args.out.display());
    Ok(())
}
