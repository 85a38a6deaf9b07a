//! `ard decode` and `ard encode`: the SD VAE between latents and pixels.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ard_engine::HostTensor;
use ard_engine::data::{LatentOptions, encode_image_folder};
use ard_engine::io::{
    SafetensorsWriter, Storage, TensorFile, batch_grid, file_fingerprint, save_png,
};
use ard_engine::vae::AutoencoderKL;
use clap::Args;

use std::sync::atomic::AtomicBool;

use super::{DeviceArgs, fmt_secs, parse_part, split_tensor_ref};

/// `FILE.safetensors:KEY` — one tensor of a file.
#[derive(Clone, Debug)]
pub struct TensorRef {
    pub file: PathBuf,
    pub key: String,
}

impl std::str::FromStr for TensorRef {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match split_tensor_ref(s) {
            Ok((file, key)) if !file.as_os_str().is_empty() && !key.is_empty() => {
                Ok(Self { file, key })
            }
            _ => Err(format!("expected FILE.safetensors:KEY, got `{s}`")),
        }
    }
}

impl TensorRef {
    /// The tensor, which must be `[B, channels, H, W]`.
    fn read(&self, channels: usize, what: &str) -> Result<HostTensor> {
        let file = TensorFile::read(&self.file)?;
        let t = file.f32(&self.key)?;
        if t.shape.len() != 4 || t.shape[1] != channels {
            bail!(
                "{}:{} has shape {:?}; the VAE's {what} is [batch, {channels}, height, width]",
                self.file.display(),
                self.key,
                t.shape
            );
        }
        if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}:{} holds a non-finite value at {bad}",
                self.file.display(),
                self.key
            );
        }
        Ok(t)
    }
}

/// The flags of `ard decode`.
#[derive(Args)]
pub struct DecodeArgs {
    /// The VAE: diffusers AutoencoderKL weights (safetensors or .pt; `config.json` beside them
    /// is read when present).
    #[arg(long)]
    vae: PathBuf,
    /// The latents, `[B, 4, h, w]`, as FILE.safetensors:KEY.
    #[arg(long)]
    latent: TensorRef,
    /// The latents are a diffusion model's (× the VAE's scaling factor, 0.18215 for SD): divide
    /// before decoding.
    #[arg(long)]
    scaled: bool,
    /// Write `decoded` `[B, 3, 8h, 8w]` here (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Also write the images as a PNG grid.
    #[arg(long)]
    png: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The flags of `ard encode`.
#[derive(Args)]
pub struct EncodeArgs {
    /// The VAE (as for `ard decode`).
    #[arg(long)]
    vae: PathBuf,
    /// Images in [-1, 1], `[B, 3, H, W]` (H, W multiples of 8), as FILE.safetensors:KEY.
    #[arg(long, required_unless_present = "folder", conflicts_with = "folder")]
    image: Option<TensorRef>,
    /// An ImageFolder tree (ImageNet's train/: one folder per class) to encode into a latent
    /// folder, the real data of `ard finetune-gan --data` for latent models.
    #[arg(long)]
    folder: Option<PathBuf>,
    /// With --image: write `posterior_mean`, `posterior_logvar` (and `latent`: the mean × the
    /// scaling factor, what a latent DiT sees) here. With --folder: the latent folder
    /// (`latents.json` and `shard-*.safetensors`).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    folder_args: FolderArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `ard encode --folder`'s settings.
#[derive(Args)]
struct FolderArgs {
    /// Image side: the short side is resized to it and the centre cropped (256 for DiT-XL/2-256).
    #[arg(long, default_value_t = LatentOptions::default().size, requires = "folder")]
    size: usize,
    /// At most this many images per class (the first by file name).
    #[arg(long = "per-class", requires = "folder")]
    per_class: Option<usize>,
    #[arg(long = "shard-size", default_value_t = LatentOptions::default().shard_size, requires = "folder")]
    shard_size: usize,
    /// This worker's part, i/n: shards s with s mod n = i.
    #[arg(long, default_value = "0/1", requires = "folder")]
    shard: String,
    /// Images per VAE batch.
    #[arg(long, default_value_t = 16, requires = "folder")]
    batch: usize,
    /// Seed of the posterior draws.
    #[arg(long, default_value_t = LatentOptions::default().seed, requires = "folder")]
    seed: u64,
}

pub(super) fn load_vae(path: &Path, device: &ard_engine::Device) -> Result<AutoencoderKL> {
    AutoencoderKL::from_file(path, device)
        .with_context(|| format!("loading the VAE {}", path.display()))
}

pub(super) fn decode_cmd(args: DecodeArgs) -> Result<()> {
    let (_, device) = args.device.choose()?;
    let vae = load_vae(&args.vae, &device)?;
    let latent = args.latent.read(vae.config.latent_channels, "latent")?;
    let x = latent.to_device::<4>(&device)?;
    let image = if args.scaled {
        vae.decode_scaled(x)
    } else {
        vae.decode(x)
    };
    let decoded = HostTensor::from_tensor(image);
    let mut w = SafetensorsWriter::new();
    w.add_f32("decoded", &decoded, Storage::F32);
    w.write(&args.out)?;
    eprintln!(
        "decoded {:?} → {:?}: {}",
        latent.shape,
        decoded.shape,
        args.out.display()
    );
    if let Some(png) = &args.png {
        save_png(&batch_grid(&decoded), png)?;
        eprintln!("images: {}", png.display());
    }
    Ok(())
}

pub(super) fn encode_cmd(args: EncodeArgs) -> Result<()> {
    let (_, device) = args.device.choose()?;
    let vae = load_vae(&args.vae, &device)?;
    let Some(image) = &args.image else {
        return encode_folder(&args, &vae, &device);
    };
    let image = image.read(vae.config.in_channels, "image")?;
    let factor = vae.config.downsampling();
    if image.shape[2] % factor != 0 || image.shape[3] % factor != 0 {
        bail!(
            "images of {}×{} do not divide into the VAE's {factor}× down-sampling",
            image.shape[2],
            image.shape[3]
        );
    }
    let posterior = vae.encode(image.to_device::<4>(&device)?);
    let mean = HostTensor::from_tensor(posterior.mean);
    let logvar = HostTensor::from_tensor(posterior.logvar);
    let scale = vae.config.scaling_factor;
    let latent = HostTensor::new(
        mean.shape.clone(),
        mean.data.iter().map(|v| v * scale).collect(),
    );
    let mut w = SafetensorsWriter::new();
    w.add_f32("posterior_mean", &mean, Storage::F32);
    w.add_f32("posterior_logvar", &logvar, Storage::F32);
    w.add_f32("latent", &latent, Storage::F32);
    w.write(&args.out)?;
    eprintln!(
        "encoded {:?} → {:?}: {}",
        image.shape,
        mean.shape,
        args.out.display()
    );
    Ok(())
}

fn encode_folder(
    args: &EncodeArgs,
    vae: &AutoencoderKL,
    device: &ard_engine::Device,
) -> Result<()> {
    let f = &args.folder_args;
    let root = args.folder.as_ref().expect("--image or --folder");
    let options = LatentOptions {
        size: f.size,
        per_class: f.per_class,
        shard_size: f.shard_size,
        seed: f.seed,
    };
    let part = parse_part(&f.shard)?;
    let mut last_print = 0.0;
    let done = encode_image_folder(
        vae,
        file_fingerprint(&args.vae)?,
        root,
        &args.out,
        &options,
        part,
        f.batch,
        device,
        |p| {
            if p.done == p.total || p.elapsed_s - last_print >= 5.0 {
                last_print = p.elapsed_s;
                eprintln!(
                    "encoded {}/{}  elapsed {}  eta {}",
                    p.done,
                    p.total,
                    fmt_secs(p.elapsed_s),
                    fmt_secs(p.elapsed_s * (p.total - p.done) as f64 / p.done.max(1) as f64)
                );
            }
        },
        &AtomicBool::new(false),
    )?;
    eprintln!("encoded {done} images into {}", args.out.display());
    Ok(())
}
