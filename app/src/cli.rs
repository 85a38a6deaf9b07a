//! The `ard` command line: parsing and the commands, callable in-process for tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use ard_engine::classes::match_prompt;
use ard_engine::classes::{display_name, resolve_label};
use ard_engine::config::{DitConfig, default_anchors};
use ard_engine::data::Split;
use ard_engine::device::DeviceChoice;
use ard_engine::eval::evaluate;
use ard_engine::feature_net::{FeatureNet, train_feature_net};
use ard_engine::generate::{SampleRequest, sample};
use ard_engine::host::seeded_noise;
use ard_engine::jobs::{JobEvent, JobHooks, RunDir, distill, train_teacher};
use ard_engine::model::{LoadOptions, LoadedModel, Model, resolve_meta};
use ard_engine::png_settings::{self, GenerationSettings};
use ard_engine::preview::{batch_grid, save_png, step_strip};
use ard_engine::sampler::DdimOptions;
use ard_engine::train::TrainOptions;
use ard_engine::trajectories::{
    AnchorKind, TrajectoryManifest, TrajectorySet, write_trajectory_set,
};
use ard_engine::weights::file_fingerprint;
use ard_engine::weights::{SafetensorsWriter, Storage, TensorFile};
use ard_engine::wgsl_attention::{FusedAttention, set_fused_attention};
use clap::{Args, Parser, Subcommand};
use std::sync::atomic::AtomicBool;

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
    Sample(SampleArgs),
    /// Train a class-conditional DiT teacher (Fashion-MNIST or an ImageFolder tree).
    TrainTeacher(TrainTeacherArgs),
    /// Run the teacher's DDIM + guidance and store the trajectory set in shards.
    Trajectories(TrajectoriesArgs),
    /// Distil a teacher into a K-step ARD student (--history-layers 0: step distillation).
    Distill(DistillArgs),
    /// Train the feature network that the evaluation's metrics use.
    TrainFeatures(TrainFeaturesArgs),
    /// Compare a teacher and its students: FID, KID, precision/recall, class agreement, FLOPs,
    /// time per image.
    Eval(EvalArgs),
}

#[derive(Args)]
struct TrainFeaturesArgs {
    /// Output file (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// `fashion-mnist`, a folder of IDX files, or an ImageFolder tree.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// ImageFolder test split (default: the training tree itself).
    #[arg(long = "test-data")]
    test_data: Option<String>,
    #[arg(long, default_value_t = 32)]
    size: usize,
    #[arg(long, default_value_t = 3)]
    channels: usize,
    #[arg(long, default_value_t = 1500)]
    iterations: u64,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// The teacher (first row, the FID reference for the degradation column).
    #[arg(long)]
    teacher: PathBuf,
    /// Students to compare, comma-separated.
    #[arg(long, value_delimiter = ',')]
    students: Vec<PathBuf>,
    #[arg(long = "feature-net")]
    feature_net: PathBuf,
    /// Real images: `fashion-mnist` (test split), IDX folder or ImageFolder tree.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Samples per model.
    #[arg(long, default_value_t = 10000)]
    samples: usize,
    #[arg(long, default_value_t = 25)]
    steps: usize,
    #[arg(long, default_value_t = 1.5)]
    cfg: f32,
    #[arg(long = "cfg-channels", default_value_t = 3)]
    cfg_channels: usize,
    /// Write the results as JSON here (and as Markdown beside it, `.md`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    device: Option<String>,
    /// Attention on a wgpu device: burn's kernels, ours (`shaders/attention.wgsl`), or ours on
    /// f16 buffers. Default: burn, or what ARD_WGSL says (1 / f16).
    #[arg(long, value_enum, ignore_case = true)]
    attention: Option<AttentionChoice>,
}

/// Optimisation and run-directory settings shared by the training commands.
#[derive(Args, Clone)]
struct TrainArgs {
    /// Run directory: checkpoint, weights, sample grids.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// EMA decay of the weights (warmed up as min(decay, (1+i)/(10+i))).
    #[arg(long, default_value_t = 0.9999)]
    ema: f64,
    /// Global gradient-norm clip (0 = none).
    #[arg(long = "grad-clip", default_value_t = 1.0)]
    grad_clip: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long = "checkpoint-every", default_value_t = 100)]
    checkpoint_every: u64,
    #[arg(long = "sample-every", default_value_t = 500)]
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

impl TrainArgs {
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
            dir: self.out.clone(),
            checkpoint_every: self.checkpoint_every,
            sample_every: self.sample_every,
            resume: self.resume,
        }
    }
}

#[derive(Args)]
struct TrainTeacherArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// `fashion-mnist` (Debian's dataset-fashion-mnist), a folder of IDX files, or an
    /// ImageFolder tree (one sub-folder per class).
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Image side for ImageFolder data (Fashion-MNIST is 28).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// 1 (grey) or 3 (RGB) for ImageFolder data.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    #[arg(long, default_value_t = 4)]
    patch: usize,
    #[arg(long, default_value_t = 96)]
    hidden: usize,
    #[arg(long, default_value_t = 6)]
    depth: usize,
    #[arg(long, default_value_t = 3)]
    heads: usize,
    /// Probability of training a batch element with the null class (for guidance).
    #[arg(long = "label-dropout", default_value_t = 0.1)]
    label_dropout: f64,
}

#[derive(Args)]
struct TrajectoriesArgs {
    #[arg(long)]
    teacher: PathBuf,
    #[command(flatten)]
    arch: ArchArgs,
    /// Output directory (manifest.json and shard-*.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Trajectories in the whole set (class-balanced).
    #[arg(long)]
    count: usize,
    #[arg(long = "shard-size", default_value_t = 250)]
    shard_size: usize,
    /// This worker's part, i/n: shards s with s mod n = i.
    #[arg(long, default_value = "0/1")]
    shard: String,
    #[arg(long, default_value_t = 25)]
    steps: usize,
    #[arg(long, default_value_t = 1.5)]
    cfg: f32,
    #[arg(long = "cfg-channels", default_value_t = 3)]
    cfg_channels: usize,
    /// Respaced indices of the anchors, highest first, ending with 0 (default: the student's
    /// K-step anchors, 15,10,5,0 for K = 4 of 25).
    #[arg(long, value_delimiter = ',')]
    anchors: Vec<usize>,
    /// Student steps K, when --anchors is not given.
    #[arg(long = "student-steps", default_value_t = 4)]
    student_steps: usize,
    /// x0 (the teacher's x0 predictions, default) or state (its noisy states).
    #[arg(long = "anchor-kind", default_value = "x0")]
    anchor_kind: String,
    /// Images per teacher batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Attention on a wgpu device: burn's kernels, ours (`shaders/attention.wgsl`), or ours on
    /// f16 buffers. Default: burn, or what ARD_WGSL says (1 / f16).
    #[arg(long, value_enum, ignore_case = true)]
    attention: Option<AttentionChoice>,
}

#[derive(Args)]
struct DistillArgs {
    #[command(flatten)]
    train: TrainArgs,
    #[arg(long)]
    teacher: PathBuf,
    #[command(flatten)]
    arch: ArchArgs,
    /// Trajectory set directory (from `ard trajectories`).
    #[arg(long)]
    trajectories: PathBuf,
}

/// What reference files without metadata cannot say about themselves.
#[derive(Args, Clone)]
struct ArchArgs {
    /// Attention heads (reference files only; ours store it).
    #[arg(long = "heads")]
    heads: Option<usize>,
    /// Lower blocks with history attention, N (reference student files; the student to
    /// distil).
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

#[derive(Args)]
struct SampleArgs {
    /// Teacher or student weights (.safetensors or .pt).
    #[arg(long)]
    weights: PathBuf,
    #[command(flatten)]
    arch: ArchArgs,
    /// Seed of the starting noise.
    #[arg(long, conflicts_with = "noise")]
    seed: Option<u64>,
    /// Class labels, comma-separated (indices or class names); one image each.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["labels_from", "prompt"])]
    labels: Vec<String>,
    /// Free text resolved to a class by the model's class names and synonyms.
    #[arg(long, conflicts_with = "labels_from")]
    prompt: Option<String>,
    /// Images to make from --prompt.
    #[arg(long, default_value_t = 1, requires = "prompt")]
    batch: usize,
    /// Starting noise from a tensor file: FILE.safetensors:KEY.
    #[arg(long)]
    noise: Option<String>,
    /// Labels from a tensor file: FILE.safetensors:KEY.
    #[arg(long = "labels-from")]
    labels_from: Option<String>,
    /// Teacher DDIM steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Teacher guidance scale (1 = no guidance).
    #[arg(long, default_value_t = 1.5)]
    cfg: f32,
    /// Output channels guided (3 as the reference DiT; more means all).
    #[arg(long = "cfg-channels", default_value_t = 3)]
    cfg_channels: usize,
    /// Clamp x0 predictions to [−1, 1] while sampling (always on for pixel-space models trained
    /// by ARD Studio).
    #[arg(long)]
    clip: bool,
    /// Write every step's tensors here (reference names).
    #[arg(long = "save-steps")]
    save_steps: Option<PathBuf>,
    /// Write the final images here, and the strip of steps beside it (`NAME.steps.png`).
    #[arg(long)]
    png: Option<PathBuf>,
    /// cpu or wgpu (default: wgpu when an adapter exists).
    #[arg(long)]
    device: Option<String>,
    /// Attention on a wgpu device: burn's kernels, ours (`shaders/attention.wgsl`), or ours on
    /// f16 buffers. Default: burn, or what ARD_WGSL says (1 / f16).
    #[arg(long, value_enum, ignore_case = true)]
    attention: Option<AttentionChoice>,
}

/// Parses `args` (program name first) and runs the command.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(Cli::try_parse_from(args)?)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { file, arch } => info(&file, &arch),
        Command::Sample(args) => sample_cmd(args),
        Command::TrainTeacher(args) => train_teacher_cmd(args),
        Command::Trajectories(args) => trajectories_cmd(args),
        Command::Distill(args) => distill_cmd(args),
        Command::TrainFeatures(args) => train_features_cmd(args),
        Command::Eval(args) => eval_cmd(args),
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

fn info(path: &Path, arch: &ArchArgs) -> Result<()> {
    let mut file = TensorFile::read(path)?;
    file.strip_prefix_to("x_embedder.proj.weight");
    let stored = file.model_meta()?.is_some();
    let heads_known = stored || arch.heads.is_some();
    let history_known = stored || arch.history_layers.is_some();
    // The shapes do not depend on what is not known: read them with placeholders.
    let options = LoadOptions {
        num_heads: arch.heads.or(Some(1)),
        history_layers: arch.history_layers.or(Some(0)),
    };
    let options = if stored { arch.options() } else { options };
    let meta = resolve_meta(&file, &options)?;
    let params: usize = file
        .tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let d = &meta.dit;
    println!("file:        {}", path.display());
    println!(
        "format:      {:?}{}",
        file.format,
        if stored {
            " (ARD Studio metadata)"
        } else {
            " (reference names, no metadata)"
        }
    );
    println!("kind:        {}", meta.kind);
    println!(
        "parameters:  {params} ({:.2} M) in {} tensors",
        params as f64 / 1e6,
        file.tensors.len()
    );
    println!(
        "input:       {} channels x {}x{}, patch {} ({} tokens per image)",
        d.in_channels,
        d.input_size,
        d.input_size,
        d.patch_size,
        d.num_patches()
    );
    println!(
        "transformer: hidden {}, depth {}, heads {}, MLP {}",
        d.hidden_size,
        d.depth,
        if heads_known {
            d.num_heads.to_string()
        } else {
            "not stored (give --heads to load)".into()
        },
        d.mlp_hidden
    );
    println!("classes:     {} (+ null class for guidance)", d.num_classes);
    println!(
        "learn_sigma: {} ({} output channels)",
        d.learn_sigma,
        d.out_channels()
    );
    if let Some(s) = &meta.student {
        let n = if history_known {
            s.history_layers.to_string()
        } else {
            "not stored (give --history-layers to load)".into()
        };
        println!("student:     K = {} steps, history layers N = {n}", s.steps);
        println!("markers:     {:?}", s.time_markers);
        println!("outputs:     {}", s.output_names("infer").join(", "));
    }
    if let Some(names) = &meta.class_names {
        let shown: Vec<&str> = names.iter().take(12).map(|n| display_name(n)).collect();
        println!(
            "class names: {}{}",
            shown.join(", "),
            if names.len() > 12 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// `FILE:KEY` → (file, key)
fn split_tensor_ref(s: &str) -> Result<(PathBuf, String)> {
    let (f, k) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{s}`: expected FILE:KEY"))?;
    Ok((PathBuf::from(f), k.to_string()))
}

fn parse_labels(
    items: &[String],
    num_classes: usize,
    names: Option<&[String]>,
) -> Result<Vec<i64>> {
    Ok(items
        .iter()
        .map(|item| resolve_label(item, num_classes, names))
        .collect::<Result<Vec<_>, _>>()?)
}

fn sample_cmd(args: SampleArgs) -> Result<()> {
    let (choice, device) = choose_device(args.device.as_deref())?;
    choose_attention(args.attention, choice)?;
    let model = LoadedModel::load(&args.weights, &args.arch.options(), &device)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    let d = model.meta.dit.clone();

    let labels = match &args.labels_from {
        Some(r) => {
            let (f, k) = split_tensor_ref(r)?;
            TensorFile::read(&f)?.labels(&k)?
        }
        None if !args.labels.is_empty() => parse_labels(
            &args.labels,
            d.num_classes,
            model.meta.class_names.as_deref(),
        )?,
        None if args.prompt.is_some() => {
            let prompt = args.prompt.as_deref().unwrap_or_default();
            let names = model.meta.class_names.clone().ok_or_else(|| {
                anyhow!("this model has no class names to match a prompt against: use --labels")
            })?;
            let matches = match_prompt(prompt, &names);
            let Some(best) = matches.first() else {
                bail!(
                    "no class of this model matches `{prompt}`; classes: {}",
                    names
                        .iter()
                        .map(|n| display_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            eprintln!(
                "prompt `{prompt}` -> class {} ({}); also: {}",
                best.label,
                display_name(&names[best.label]),
                matches
                    .iter()
                    .skip(1)
                    .take(4)
                    .map(|m| display_name(&names[m.label]).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            vec![best.label as i64; args.batch.max(1)]
        }
        None => bail!(
            "give the classes to sample: --labels 3,7, --prompt TEXT or --labels-from FILE:KEY"
        ),
    };
    let noise = match &args.noise {
        Some(r) => {
            let (f, k) = split_tensor_ref(r)?;
            TensorFile::read(&f)?.f32(&k)?
        }
        None => {
            let seed = args.seed.unwrap_or(0);
            seeded_noise(
                vec![labels.len(), d.in_channels, d.input_size, d.input_size],
                seed,
            )
        }
    };
    let req = SampleRequest {
        noise: noise.clone(),
        labels: labels.clone(),
        ddim: DdimOptions {
            steps: args.steps,
            cfg_scale: args.cfg,
            guided_channels: args.cfg_channels,
            clip_denoised: args.clip,
        },
    };
    let kind = match &model.model {
        Model::Teacher(_) => format!("teacher: {}-step DDIM, guidance {}", args.steps, args.cfg),
        Model::Student(s) => format!(
            "ARD student: {} steps, N = {}",
            s.steps(),
            s.config().history_layers
        ),
    };
    eprintln!("{kind}; {} images of classes {labels:?}", labels.len());
    let start = Instant::now();
    let out = sample(&model, &req, &device, |s| {
        eprintln!(
            "  step {}/{}: {} ({:.2} s)",
            s.step + 1,
            s.total,
            s.name,
            start.elapsed().as_secs_f64()
        );
    })?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "sampled {} images in {secs:.2} s ({:.1} ms per image)",
        labels.len(),
        secs * 1e3 / labels.len() as f64
    );

    if let Some(path) = &args.save_steps {
        let mut w = SafetensorsWriter::new();
        let noise_key = if matches!(model.model, Model::Student(_)) {
            "zT"
        } else {
            "noise"
        };
        w.add_f32(noise_key, &noise, Storage::F32);
        w.add_i64("y", &labels);
        for (name, t) in &out.tensors {
            w.add_f32(name, t, Storage::F32);
        }
        w.write(path)?;
        eprintln!(
            "wrote {} tensors to {}",
            out.tensors.len() + 2,
            path.display()
        );
    }
    if let Some(path) = &args.png {
        // Seeded runs record their settings, so the app can restore them from the PNG.
        match (args.noise.is_none(), file_fingerprint(&args.weights)) {
            (true, Ok(fingerprint)) => png_settings::save_png(
                &batch_grid(&out.images),
                &GenerationSettings {
                    model_file: args
                        .weights
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    model_fingerprint: fingerprint,
                    labels: labels.clone(),
                    class_name: model
                        .meta
                        .class_names
                        .as_ref()
                        .and_then(|n| n.get(labels[0] as usize))
                        .map(|n| display_name(n).to_string()),
                    prompt: args.prompt.clone(),
                    seed: args.seed.unwrap_or(0),
                    steps: match &model.model {
                        Model::Teacher(_) => args.steps,
                        Model::Student(s) => s.steps(),
                    },
                    cfg_scale: args.cfg,
                },
                path,
            )?,
            _ => save_png(&batch_grid(&out.images), path)?,
        }
        let mut strip = vec![noise];
        strip.extend(out.steps.iter().cloned());
        let strip_path = path.with_extension("steps.png");
        save_png(&step_strip(&strip), &strip_path)?;
        eprintln!("wrote {} and {}", path.display(), strip_path.display());
    }
    Ok(())
}

fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Prints job events; progress every `log_every` iterations.
fn print_event(log_every: u64) -> impl FnMut(JobEvent) {
    move |e| match e {
        JobEvent::Progress {
            iteration,
            total,
            loss,
            elapsed_s,
            eta_s,
        } => {
            if iteration % log_every.max(1) == 0 || iteration == total {
                eprintln!(
                    "iter {iteration}/{total}  loss {loss:.5}  elapsed {}  eta {}",
                    fmt_secs(elapsed_s),
                    fmt_secs(eta_s)
                );
            }
        }
        JobEvent::Resumed { iteration } => eprintln!("resumed at iteration {iteration}"),
        JobEvent::Checkpoint { .. } => {}
        JobEvent::Samples { path, .. } => eprintln!("samples: {}", path.display()),
        JobEvent::Finished { path } => eprintln!("done: {}", path.display()),
        JobEvent::Stopped { iteration } => eprintln!("stopped at iteration {iteration}"),
    }
}

fn train_teacher_cmd(args: TrainTeacherArgs) -> Result<()> {
    let (_, device) = choose_device(args.train.device.as_deref())?;
    let data = ard_engine::data::load(&args.data, args.size, args.channels, Split::Train)?;
    eprintln!(
        "data: {} images {}x{}x{}, {} classes (fingerprint {})",
        data.len(),
        data.channels(),
        data.image_size(),
        data.image_size(),
        data.class_names.len(),
        data.fingerprint()
    );
    let dit = DitConfig::new(
        data.image_size(),
        args.patch,
        data.channels(),
        args.hidden,
        args.depth,
        args.heads,
        data.class_names.len(),
        false,
    );
    dit.validate()?;
    let stop = AtomicBool::new(false);
    train_teacher(
        &data,
        &dit,
        args.label_dropout,
        &args.train.options(),
        &args.train.run_dir(),
        &device,
        JobHooks {
            stop: &stop,
            on_event: &mut print_event(args.train.log_every),
        },
    )?;
    Ok(())
}

fn trajectories_cmd(args: TrajectoriesArgs) -> Result<()> {
    let (choice, device) = choose_device(args.device.as_deref())?;
    choose_attention(args.attention, choice)?;
    let teacher = LoadedModel::load(&args.teacher, &args.arch.options(), &device)?;
    let Model::Teacher(dit) = &teacher.model else {
        bail!(
            "{}: trajectories come from a teacher, and this is a student",
            args.teacher.display()
        );
    };
    let (part, parts) = args
        .shard
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| anyhow!("--shard `{}`: expected i/n", args.shard))?;
    let anchors = if args.anchors.is_empty() {
        default_anchors(args.student_steps, args.steps)
    } else {
        args.anchors.clone()
    };
    let d = &teacher.meta.dit;
    let manifest = TrajectoryManifest {
        count: args.count,
        shard_size: args.shard_size,
        ddim_steps: args.steps,
        cfg_scale: args.cfg,
        guided_channels: args.cfg_channels,
        anchors,
        anchor_kind: args.anchor_kind.parse::<AnchorKind>()?,
        seed: args.seed,
        num_classes: d.num_classes,
        image_shape: vec![d.in_channels, d.input_size, d.input_size],
        teacher: file_fingerprint(&args.teacher)?,
        clip_denoised: teacher.meta.clip_denoised,
    };
    eprintln!(
        "{} trajectories in {} shards; anchors {:?} ({:?}); worker {part}/{parts}",
        manifest.count,
        manifest.num_shards(),
        manifest.anchors,
        manifest.anchor_kind
    );
    let done = write_trajectory_set(
        dit,
        &manifest,
        &args.out,
        (part, parts),
        args.batch,
        &device,
        |p| {
            eprintln!(
                "trajectories {}/{}  elapsed {}  eta {}",
                p.done,
                p.total,
                fmt_secs(p.elapsed_s),
                fmt_secs(p.eta_s())
            );
        },
    )?;
    eprintln!("wrote {done} trajectories to {}", args.out.display());
    Ok(())
}

fn distill_cmd(args: DistillArgs) -> Result<()> {
    let (_, device) = choose_device(args.train.device.as_deref())?;
    let n = args.arch.history_layers.ok_or_else(|| {
        anyhow!("give the student's history layers: --history-layers N (0 = step distillation)")
    })?;
    let teacher = LoadedModel::load(
        &args.teacher,
        &LoadOptions {
            num_heads: args.arch.heads,
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
        "{} trajectories, K = {} steps, N = {n}",
        set.labels.len(),
        set.manifest.anchors.len()
    );
    let stop = AtomicBool::new(false);
    distill(
        &teacher,
        &set,
        n,
        &args.train.options(),
        &args.train.run_dir(),
        &device,
        JobHooks {
            stop: &stop,
            on_event: &mut print_event(args.train.log_every),
        },
    )?;
    Ok(())
}

fn train_features_cmd(args: TrainFeaturesArgs) -> Result<()> {
    let (_, device) = choose_device(args.device.as_deref())?;
    let train = ard_engine::data::load(&args.data, args.size, args.channels, Split::Train)?;
    let test = ard_engine::data::load(
        args.test_data.as_deref().unwrap_or(&args.data),
        args.size,
        args.channels,
        Split::Test,
    )?;
    let options = TrainOptions {
        iterations: args.iterations,
        batch_size: args.batch,
        lr: args.lr,
        ema_decay: 0.0,
        grad_clip: 0.0,
        seed: args.seed,
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

fn eval_cmd(args: EvalArgs) -> Result<()> {
    let (choice, device) = choose_device(args.device.as_deref())?;
    choose_attention(args.attention, choice)?;
    let net = FeatureNet::load(&args.feature_net, &device)?;
    let mut models = vec![LoadedModel::load(
        &args.teacher,
        &LoadOptions::default(),
        &device,
    )?];
    for s in &args.students {
        models.push(LoadedModel::load(s, &LoadOptions::default(), &device)?);
    }
    let size = models[0].meta.dit.input_size;
    let channels = models[0].meta.dit.in_channels;
    let real = ard_engine::data::load(&args.data, size, channels, Split::Test)?;
    let ddim = DdimOptions {
        steps: args.steps,
        cfg_scale: args.cfg,
        guided_channels: args.cfg_channels,
        clip_denoised: false,
    };
    let mut report = evaluate(
        &models,
        &real.images,
        &net,
        args.samples,
        &ddim,
        &device,
        |row| {
            eprintln!(
                "{}: FID {:.2}, class agreement {:.1}%, {:.2} ms/image",
                row.model,
                row.fid,
                100.0 * row.class_agreement,
                row.ms_per_image
            );
        },
    )?;
    report.device = choice.describe();
    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &args.out {
        ard_engine::weights::write_atomically(
            out,
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
        ard_engine::weights::write_atomically(&out.with_extension("md"), md.as_bytes())?;
        eprintln!(
            "wrote {} and {}",
            out.display(),
            out.with_extension("md").display()
        );
    }
    Ok(())
}
