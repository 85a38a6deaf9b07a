//! `ard sample`: a teacher's DDIM or a student's K steps, every step saved.

use std::path::PathBuf;
use std::time::Instant;

use crate::assets::text_encoder_dir;
use anyhow::{Result, bail};
use ard_engine::HostTensor;
use ard_engine::conditioning::{display_name, first_class_name, resolve_label, resolve_prompt};
use ard_engine::diffusion::PromptRequest;
use ard_engine::diffusion::{SampleOutput, SampleRequest, sample};
use ard_engine::io::png_settings::{self, GenerationSettings};
use ard_engine::io::{
    SafetensorsWriter, Storage, TensorFile, batch_grid, file_fingerprint, save_png, seeded_noise,
    step_strip,
};
use ard_engine::model::{LoadedModel, Model, Precision};
use ard_engine::text::TextEncoder;
use clap::Args;

use super::{ArchArgs, DdimArgs, DeviceArgs, positive, split_tensor_ref};

#[derive(Args)]
pub struct SampleArgs {
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
    /// Free text: a text model encodes it ("" samples unconditionally); a class model resolves
    /// it to a class by its class names and synonyms.
    #[arg(long, conflicts_with = "labels_from")]
    prompt: Option<String>,
    /// Images to make from --prompt (at least 1).
    #[arg(long, default_value_t = 1, requires = "prompt",
          value_parser = positive)]
    batch: usize,
    /// Starting noise from a tensor file: FILE.safetensors:KEY.
    #[arg(long)]
    noise: Option<String>,
    /// Labels from a tensor file: FILE.safetensors:KEY.
    #[arg(long = "labels-from")]
    labels_from: Option<String>,
    #[command(flatten)]
    ddim: DdimArgs,
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
    /// A VAE (diffusers AutoencoderKL) that decodes a latent model's samples and steps for
    /// `--png` (the latents ÷ its scaling factor); `--save-steps` keeps the latents.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// The model's precision: f32, or f16 / bf16 (weights and activations; the sampler and the
    /// outputs stay f32) where the device computes in them.
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// A text model's encoder folder (default: the shipped all-MiniLM-L6-v2).
    #[arg(long = "text-encoder")]
    text_encoder: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
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

pub(super) fn sample_cmd(args: SampleArgs) -> Result<()> {
    let (_, device) = args.device.choose()?;
    let model = LoadedModel::load_in(&args.weights, &args.arch.options(), args.precision, &device)?;
    let vae = match &args.vae {
        Some(path) => {
            let vae = super::vae::load_vae(path, &device)?;
            vae.check_fits(&model.meta.dit)?;
            Some(vae)
        }
        None => None,
    };
    let (labels, prompts) = match model.meta.dit.is_text() {
        true => (Vec::new(), Some(prompt_request(&args, &model)?)),
        false => (labels(&args, &model)?, None),
    };
    let batch = prompts.as_ref().map_or(labels.len(), |p| p.text.len());
    let noise = match &args.noise {
        Some(r) => {
            let (f, k) = split_tensor_ref(r)?;
            TensorFile::read(&f)?.f32(&k)?
        }
        None => seeded_noise(model.meta.dit.batch_shape(batch), args.seed.unwrap_or(0)),
    };
    let req = SampleRequest {
        prompts,
        noise,
        labels,
        ddim: args.ddim.options(args.clip),
    };
    let out = run(&args, &model, &req, &device)?;
    if let Some(path) = &args.save_steps {
        save_steps(path, &model, &req, &out)?;
    }
    if let Some(path) = &args.png {
        let pixels = |t: &HostTensor| -> Result<HostTensor> {
            Ok(match &vae {
                Some(vae) => vae.decode_host(t, &device)?,
                None => t.clone(),
            })
        };
        save_pngs(path, &args, &model, &req, &out, pixels)?;
    }
    Ok(())
}

/// A text model's `--prompt`, once per image, through the text encoder (the empty prompt
/// samples unconditionally).
fn prompt_request(args: &SampleArgs, model: &LoadedModel) -> Result<PromptRequest> {
    let text = model.meta.dit.text.as_ref().expect("a text model");
    if !args.labels.is_empty() || args.labels_from.is_some() {
        bail!(
            "{}: this model is text-conditioned; give --prompt TEXT, not classes",
            args.weights.display()
        );
    }
    let Some(prompt) = args.prompt.clone() else {
        bail!(
            "{}: this model is text-conditioned; give --prompt TEXT",
            args.weights.display()
        )
    };
    let dir = args.text_encoder.clone().unwrap_or_else(text_encoder_dir);
    let encoder = TextEncoder::read_for(&dir, text, &ard_engine::Device::flex())?;
    let tokens = encoder.tokenizer.tokenize(&prompt)?;
    match (prompt.trim().is_empty(), tokens.truncated) {
        (true, _) => eprintln!("the empty prompt: unconditional samples"),
        (false, true) => eprintln!(
            "the prompt is longer than the model reads: cut to its first {} tokens",
            text.max_tokens
        ),
        _ => {}
    }
    let prompts = vec![prompt; args.batch];
    Ok(PromptRequest {
        encoded: encoder.encode_prompts(&prompts)?,
        null: encoder.null_prompt()?,
        text: prompts,
    })
}

/// One label per image: from a tensor file, `--labels`, or the class `--prompt` means.
fn labels(args: &SampleArgs, model: &LoadedModel) -> Result<Vec<i64>> {
    let names = model.meta.class_names.as_deref();
    if let Some(r) = &args.labels_from {
        let (f, k) = split_tensor_ref(r)?;
        return Ok(TensorFile::read(&f)?.labels(&k)?);
    }
    if !args.labels.is_empty() {
        return parse_labels(&args.labels, model.meta.dit.num_classes, names);
    }
    let Some(prompt) = args.prompt.as_deref() else {
        bail!("give the classes to sample: --labels 3,7, --prompt TEXT or --labels-from FILE:KEY")
    };
    let matches = resolve_prompt(prompt, names)?;
    let (best, names) = (&matches[0], names.unwrap_or_default());
    let others: Vec<&str> = matches
        .iter()
        .skip(1)
        .take(4)
        .map(|m| display_name(&names[m.label]))
        .collect();
    eprintln!(
        "prompt `{prompt}` -> class {} ({}); also: {}",
        best.label,
        display_name(&names[best.label]),
        others.join(", ")
    );
    Ok(vec![best.label as i64; args.batch])
}

/// `text` cut to `chars` characters, with `…` when cut (for logs).
fn shortened(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Samples `req`, reporting each step and the time per image.
fn run(
    args: &SampleArgs,
    model: &LoadedModel,
    req: &SampleRequest,
    device: &ard_engine::Device,
) -> Result<SampleOutput> {
    let kind = match &model.model {
        Model::Teacher(_) => format!(
            "teacher: {}-step DDIM, guidance {}",
            args.ddim.steps, args.ddim.cfg
        ),
        Model::Student(s) => format!(
            "ARD student: {} steps, N = {}",
            s.steps(),
            s.config().history_layers
        ),
    };
    let n = req.batch();
    match &req.prompts {
        Some(p) => eprintln!("{kind}; {n} images of `{}`", shortened(&p.text[0], 60)),
        None => eprintln!("{kind}; {n} images of classes {:?}", req.labels),
    }
    let start = Instant::now();
    let out = sample(model, req, device, |s| {
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
        "sampled {n} images in {secs:.2} s ({:.1} ms per image)",
        secs * 1e3 / n as f64
    );
    Ok(out)
}

/// Every step's tensors under the reference names, with the starting noise and the labels.
fn save_steps(
    path: &std::path::Path,
    model: &LoadedModel,
    req: &SampleRequest,
    out: &SampleOutput,
) -> Result<()> {
    let mut w = SafetensorsWriter::new();
    let noise_key = if matches!(model.model, Model::Student(_)) {
        "zT"
    } else {
        "noise"
    };
    w.add_f32(noise_key, &req.noise, Storage::F32);
    if !req.labels.is_empty() {
        w.add_i64("y", &req.labels);
    }
    for (name, t) in &out.tensors {
        w.add_f32(name, t, Storage::F32);
    }
    w.write(path)?;
    eprintln!(
        "wrote {} tensors to {}",
        out.tensors.len() + 2,
        path.display()
    );
    Ok(())
}

/// The final images at `path` (with the settings of a seeded run, which the app restores) and
/// the strip of steps beside it, through `pixels` (a latent model's VAE).
fn save_pngs(
    path: &std::path::Path,
    args: &SampleArgs,
    model: &LoadedModel,
    req: &SampleRequest,
    out: &SampleOutput,
    pixels: impl Fn(&HostTensor) -> Result<HostTensor>,
) -> Result<()> {
    let grid = batch_grid(&pixels(&out.images)?);
    match (args.noise.is_none(), file_fingerprint(&args.weights)) {
        (true, Ok(fingerprint)) => png_settings::save_png_with_settings(
            &grid,
            &settings(args, model, &req.labels, fingerprint),
            path,
        )?,
        _ => save_png(&grid, path)?,
    }
    let mut strip = vec![pixels(&req.noise)?];
    for step in &out.steps {
        strip.push(pixels(step)?);
    }
    let strip_path = path.with_extension("steps.png");
    save_png(&step_strip(&strip), &strip_path)?;
    eprintln!("wrote {} and {}", path.display(), strip_path.display());
    Ok(())
}

/// What a PNG of a seeded run records, so the app can restore it.
fn settings(
    args: &SampleArgs,
    model: &LoadedModel,
    labels: &[i64],
    fingerprint: String,
) -> GenerationSettings {
    GenerationSettings {
        model_file: args
            .weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_fingerprint: fingerprint,
        labels: labels.to_vec(),
        class_name: first_class_name(
            labels,
            model.meta.class_names.as_deref().unwrap_or_default(),
        ),
        prompt: args.prompt.clone(),
        seed: args.seed.unwrap_or(0),
        steps: match &model.model {
            Model::Teacher(_) => args.ddim.steps,
            Model::Student(s) => s.steps(),
        },
        cfg_scale: args.ddim.cfg,
    }
}
