//! The `ard` command line: parsing and the commands, callable in-process for tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use ard_engine::classes::{display_name, resolve_label};
use ard_engine::device::DeviceChoice;
use ard_engine::generate::{SampleRequest, sample};
use ard_engine::host::seeded_noise;
use ard_engine::model::{LoadOptions, LoadedModel, Model, resolve_meta};
use ard_engine::preview::{batch_grid, save_png, step_strip};
use ard_engine::sampler::DdimOptions;
use ard_engine::weights::{SafetensorsWriter, Storage, TensorFile};
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
    Sample(SampleArgs),
}

/// What reference files without metadata cannot say about themselves.
#[derive(Args, Clone)]
struct ArchArgs {
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
    #[arg(long, value_delimiter = ',', conflicts_with = "labels_from")]
    labels: Vec<String>,
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
    /// Write every step's tensors here (reference names).
    #[arg(long = "save-steps")]
    save_steps: Option<PathBuf>,
    /// Write the final images here, and the strip of steps beside it (`NAME.steps.png`).
    #[arg(long)]
    png: Option<PathBuf>,
    /// cpu or wgpu (default: wgpu when an adapter exists).
    #[arg(long)]
    device: Option<String>,
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
    }
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
    let (_, device) = choose_device(args.device.as_deref())?;
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
        None => bail!("give the classes to sample: --labels 3,7 or --labels-from FILE:KEY"),
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
        save_png(&batch_grid(&out.images), path)?;
        let mut strip = vec![noise];
        strip.extend(out.steps.iter().cloned());
        let strip_path = path.with_extension("steps.png");
        save_png(&step_strip(&strip), &strip_path)?;
        eprintln!("wrote {} and {}", path.display(), strip_path.display());
    }
    Ok(())
}
