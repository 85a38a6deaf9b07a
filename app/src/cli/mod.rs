//! The `ard` command line: parsing and the commands, callable in-process for tests. One file
//! per command family; every flag default comes from the engine's option structs.

mod dataset;
mod eval;
mod gan;
mod info;
mod sample;
mod train;
mod train_text;
mod trajectories;
mod vae;

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use ard_engine::device::DeviceChoice;
use ard_engine::diffusion::{CFG_SCALE, DDIM_STEPS, DdimOptions};
use ard_engine::dispatch::{FusedAttention, set_fused_attention};
use ard_engine::model::LoadOptions;
use ard_engine::train::{Hooks, Phase, TrainingEvent};
use clap::{Args, Parser, Subcommand};

/// The `ard` command line.
#[derive(Parser)]
#[command(
    name = "ard",
    version,
    about = "ARD Studio: DiT teachers and their 4-step ARD students"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a weight file holds: kind, architecture, parameter count.
    Info {
        file: PathBuf,
        #[command(flatten)]
        arch: ArchArgs,
    },
    /// Sample a teacher (DDIM) or a student (K autoregressive steps) and save every step.
    Sample(sample::SampleArgs),
    /// Train a class-conditional DiT teacher (Fashion-MNIST or an ImageFolder tree).
    TrainTeacher(train::TrainTeacherArgs),
    /// Run the teacher's DDIM + guidance and store the trajectory set in shards.
    Trajectories(trajectories::TrajectoriesArgs),
    /// Distil a teacher into a K-step ARD student (--history-layers 0: step distillation).
    Distill(train::DistillArgs),
    /// Stage 2: fine-tune a distilled student adversarially (discriminator on the frozen
    /// teacher's features, hinge loss on real images, adaptive weight).
    FinetuneGan(gan::FinetuneGanArgs),
    /// Train the feature network that the evaluation's metrics use.
    TrainFeatures(train::TrainFeaturesArgs),
    /// Compare a teacher and its students: FID, KID, precision/recall, class agreement, FLOPs,
    /// time per image.
    Eval(eval::EvalArgs),
    /// A student's error per step against the teacher's trajectories, fed the teacher's states
    /// (as in training) and its own (as at inference): exposure bias, measured.
    StepError(eval::StepErrorArgs),
    /// Decode latents to images with the SD VAE (diffusers AutoencoderKL weights).
    Decode(vae::DecodeArgs),
    /// Encode images to the SD VAE's latent posterior.
    Encode(vae::EncodeArgs),
    /// Print the training defaults (teacher, trajectories, distillation, feature network) as
    /// JSON: what the commands and the app's training tab use when not told otherwise.
    Defaults,
    /// Build a training set (`ard dataset emoji`: the captioned emoji set).
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Write a run folder's manifest: each job's options, data, last evaluation point and model
    /// fingerprints, the stage times a pipeline script recorded, and the defaults, as JSON.
    Manifest(train::ManifestArgs),
}

/// Parses `args` (program name first) and runs the command.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(Cli::try_parse_from(args)?)
}

/// Parses `args` (program name first) and runs the command, returning what it prints on
/// standard output (`ard info` and `ard defaults` print there; the others report on stderr).
pub fn run_args_output<I, T>(args: I) -> Result<String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    output(Cli::try_parse_from(args)?)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    print!("{}", output(cli)?);
    Ok(())
}

/// Runs a parsed command line; returns its standard output.
fn output(cli: Cli) -> Result<String> {
    let done = |r: Result<()>| r.map(|()| String::new());
    match cli.command {
        Command::Info { file, arch } => info::info(&file, &arch),
        Command::Sample(args) => done(sample::sample_cmd(args)),
        Command::TrainTeacher(args) => done(train::train_teacher_cmd(args)),
        Command::Trajectories(args) => done(trajectories::trajectories_cmd(args)),
        Command::Distill(args) => done(train::distill_cmd(args)),
        Command::FinetuneGan(args) => done(gan::finetune_gan_cmd(args)),
        Command::TrainFeatures(args) => done(train::train_features_cmd(args)),
        Command::Eval(args) => done(eval::eval_cmd(args)),
        Command::StepError(args) => done(eval::step_error_cmd(args)),
        Command::Decode(args) => done(vae::decode_cmd(args)),
        Command::Encode(args) => done(vae::encode_cmd(args)),
        Command::Defaults => Ok(format!("{}\n", train::defaults_json())),
        Command::Manifest(args) => train::manifest_cmd(args),
        Command::Dataset(command) => done(dataset::dataset_cmd(command)),
    }
}

/// What reference files without metadata cannot say about themselves.
#[derive(Args, Clone)]
pub struct ArchArgs {
    /// Attention heads (reference files only; ours store it).
    #[arg(long = "heads")]
    heads: Option<usize>,
    /// Lower blocks with history attention, N (reference student files only).
    #[arg(long = "history-layers")]
    history_layers: Option<usize>,
}

impl ArchArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            num_heads: self.heads,
            history_layers: self.history_layers,
        }
    }
}

/// Which attention the model uses on wgpu (`--attention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttentionChoice {
    Burn,
    Wgsl,
    WgslF16,
}

impl AttentionChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Burn => "burn",
            Self::Wgsl => "wgsl",
            Self::WgslF16 => "wgsl-f16",
        }
    }

    pub fn mode(self) -> FusedAttention {
        match self {
            Self::Burn => FusedAttention::Off,
            Self::Wgsl => FusedAttention::F32,
            Self::WgslF16 => FusedAttention::F16,
        }
    }
}

/// The teacher sampler's flags: `--steps`, `--cfg`, `--cfg-channels` (DDIM's defaults).
#[derive(Args, Clone)]
pub struct DdimArgs {
    /// Teacher DDIM steps.
    #[arg(long, default_value_t = DDIM_STEPS)]
    steps: usize,
    /// Teacher guidance scale (1 = no guidance; finite, ≥ 0).
    #[arg(long, default_value_t = CFG_SCALE, value_parser = guidance_scale)]
    cfg: f32,
    /// Output channels guided (default: the model's first 3, as the reference DiT).
    #[arg(long = "cfg-channels")]
    cfg_channels: Option<usize>,
}

impl DdimArgs {
    fn options(&self, clip_denoised: bool) -> DdimOptions {
        DdimOptions {
            steps: self.steps,
            cfg_scale: self.cfg,
            guided_channels: self.cfg_channels,
            clip_denoised,
        }
    }
}

/// `--device` and `--attention`, shared by the commands that run a model.
#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// cpu or wgpu (default: wgpu when an adapter exists).
    #[arg(long)]
    device: Option<String>,
    /// Attention on a wgpu device: burn's kernels, ours (`shaders/attention.wgsl`), or ours on
    /// f16 buffers. Default: burn, or what ARD_WGSL says (1 / f16).
    #[arg(long, value_enum, ignore_case = true)]
    attention: Option<AttentionChoice>,
}

impl DeviceArgs {
    /// The device, with the attention choice applied for this process.
    fn choose(&self) -> Result<(DeviceChoice, ard_engine::Device)> {
        let (choice, device) = choose_device(self.device.as_deref())?;
        choose_attention(self.attention, choice)?;
        Ok((choice, device))
    }
}

/// Applies `--attention` for this process; WGSL on the CPU is an error (the kernels need wgpu).
/// (Without f16 shaders, `wgsl-f16` runs on f32 buffers; the engine says so once.)
fn choose_attention(attention: Option<AttentionChoice>, choice: DeviceChoice) -> Result<()> {
    let Some(attention) = attention else {
        return Ok(());
    };
    if attention != AttentionChoice::Burn && choice == DeviceChoice::Cpu {
        bail!(
            "--attention {} runs our WGSL kernel, which needs --device wgpu",
            attention.name()
        );
    }
    set_fused_attention(attention.mode());
    eprintln!(
        "attention: {} (inference on the wgpu device, for head dimensions up to 248)",
        attention.name()
    );
    Ok(())
}

fn choose_device(name: Option<&str>) -> Result<(DeviceChoice, ard_engine::Device)> {
    let choice = match name {
        Some(n) => n.parse::<DeviceChoice>()?,
        None => DeviceChoice::auto(),
    };
    let device = choice.device()?;
    eprintln!("device: {}", choice.describe());
    Ok((choice, device))
}

/// `i/n` (a worker's part of a sharded job) → (i, n).
fn parse_part(s: &str) -> Result<(usize, usize)> {
    s.split_once('/')
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--shard `{s}`: expected i/n"))
}

/// `FILE:KEY` → (file, key)
fn split_tensor_ref(s: &str) -> Result<(PathBuf, String)> {
    let (f, k) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{s}`: expected FILE:KEY"))?;
    Ok((PathBuf::from(f), k.to_string()))
}

/// A count that must be at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("`{s}`: {e}")),
    }
}

/// A guidance scale: finite and ≥ 0 (1 = no guidance).
fn guidance_scale(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}`: the guidance scale must be a finite number ≥ 0 (1 = no guidance)"
        ))
    }
}

fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Runs a training job (of `phase`) from the command line: events printed every `log_every`
/// iterations, never stopped from outside (Ctrl-C ends the process; `--resume` continues from
/// the last checkpoint).
fn run_job<T, E>(
    phase: Phase,
    log_every: u64,
    job: impl FnOnce(Hooks) -> std::result::Result<T, E>,
) -> Result<()>
where
    anyhow::Error: From<E>,
{
    let stop = std::sync::atomic::AtomicBool::new(false);
    job(Hooks {
        phase,
        stop: &stop,
        on_event: &mut print_event(log_every),
    })?;
    Ok(())
}

/// Prints a job's events; progress every `log_every` iterations.
fn print_event(log_every: u64) -> impl FnMut(TrainingEvent) {
    let every = log_every.max(1);
    move |e| match e {
        TrainingEvent::Progress {
            done,
            total,
            loss,
            elapsed_s,
            eta_s,
            ..
        } if done % every == 0 || done == total => {
            let loss = loss.map_or(String::new(), |l| format!("  loss {l:.5}"));
            eprintln!(
                "iter {done}/{total}{loss}  elapsed {}  eta {}",
                fmt_secs(elapsed_s),
                fmt_secs(eta_s)
            );
        }
        TrainingEvent::Resumed { iteration, .. } => eprintln!("resumed at iteration {iteration}"),
        TrainingEvent::Preview { path, .. } => eprintln!("samples: {}", path.display()),
        TrainingEvent::Saved { path, .. } => eprintln!("done: {}", path.display()),
        TrainingEvent::Stopped { iteration, .. } => eprintln!("stopped at iteration {iteration}"),
        TrainingEvent::Metrics {
            iteration, values, ..
        } if iteration % every == 0 => {
            eprintln!(
                "iter {iteration}  {}",
                ard_engine::gan::describe_metrics(&values, "  ")
            );
        }
        TrainingEvent::Eval { point: p, .. } => eprintln!(
            "eval at iteration {}: EMA FID {:.2}, class agreement {:.1}%; raw FID {:.2}, {:.1}% ({} samples)",
            p.iteration,
            p.ema.fid,
            100.0 * p.ema.class_agreement,
            p.raw.fid,
            100.0 * p.raw.class_agreement,
            p.samples
        ),
        TrainingEvent::EvalUnavailable { reason } => eprintln!("no evaluation: {reason}"),
        TrainingEvent::Failed { message } => eprintln!("failed: {message}"),
        TrainingEvent::Finished { student } => eprintln!("done: {}", student.display()),
        _ => {}
    }
}
