//! An ImageFolder tree (ImageNet's layout: one folder per class, sorted names give the labels)
//! encoded once into the SD VAE's latent space, as a latent DiT is trained on it (Peebles & Xie
//! 2023; fast-DiT's pre-extracted features): each image's short side resized to `size`
//! (bicubic, antialiased) and its centre cropped, mapped to [−1, 1], encoded, and one draw of
//! the posterior kept × the latent scale (0.18215). The real data of the adversarial stage at
//! ImageNet scale.
//!
//! Written in shards (`shard-00000.safetensors`: `latent` `[n, 4, size/8, size/8]`, `y`) beside
//! a `latents.json` manifest, so that workers split the shards (`i/n`), a killed run continues
//! where it stopped, and every image's draw is independent of the layout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::data::datasets::{Dataset, list_image_folder};
use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, seeded_noise};
use crate::io::weights::TensorFile;
use crate::io::writer::{SafetensorsWriter, Storage, check_or_write_manifest};
use crate::vae::AutoencoderKL;

/// The manifest's file name; a folder holding it is a latent dataset.
pub const LATENTS_MANIFEST: &str = "latents.json";

/// Images per shard, by default.
pub const LATENT_SHARD_SIZE: usize = 1000;

/// Image side, by default: ImageNet 256 (DiT-XL/2-256's 32×32 latents).
pub const LATENT_IMAGE_SIZE: usize = 256;

/// How an ImageFolder is encoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentOptions {
    /// Image side in pixels (a multiple of 8).
    pub size: usize,
    /// At most this many images per class (the first ones by file name), when given.
    pub per_class: Option<usize>,
    pub shard_size: usize,
    /// Seed of the posterior draws.
    pub seed: u64,
}

impl Default for LatentOptions {
    fn default() -> Self {
        Self {
            size: LATENT_IMAGE_SIZE,
            per_class: None,
            shard_size: LATENT_SHARD_SIZE,
            seed: 0,
        }
    }
}

/// What a latent folder holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentManifest {
    pub options: LatentOptions,
    pub count: usize,
    /// `[C, h, w]` of one latent.
    pub latent_shape: [usize; 3],
    pub scaling_factor: f32,
    /// Folder names, in label order.
    pub class_names: Vec<String>,
    /// Fingerprint of the VAE's weights file.
    pub vae_fingerprint: String,
}

impl LatentManifest {
    pub fn num_shards(&self) -> usize {
        self.count.div_ceil(self.options.shard_size)
    }
}

/// One image as `[3, size, size]` in [−1, 1]: the short side resized to `size` (bicubic; the
/// filter widens with the reduction, so large images are antialiased) and the centre cropped.
pub fn load_centre_crop(path: &Path, size: usize) -> Result<HostTensor> {
    let img = crate::data::datasets::open_image(path)?;
    let (w, h) = (img.width() as f64, img.height() as f64);
    let scale = size as f64 / w.min(h);
    let (rw, rh) = (
        ((w * scale).round() as u32).max(size as u32),
        ((h * scale).round() as u32).max(size as u32),
    );
    let img = img.resize_exact(rw, rh, FilterType::CatmullRom);
    let (x, y) = ((rw - size as u32) / 2, (rh - size as u32) / 2);
    let rgb = img.crop_imm(x, y, size as u32, size as u32).to_rgb8();
    let mut data = Vec::with_capacity(3 * size * size);
    for c in 0..3 {
        data.extend(rgb.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
    }
    Ok(HostTensor::new(vec![3, size, size], data))
}

/// Progress of an encoding run: `done` of the `total` images this call encodes.
#[derive(Clone, Debug)]
pub struct LatentProgress {
    pub done: usize,
    pub total: usize,
    pub elapsed_s: f64,
}

/// Shard file name.
pub fn latent_shard_path(dir: &Path, s: usize) -> PathBuf {
    dir.join(format!("shard-{s:05}.safetensors"))
}

fn check_options(options: &LatentOptions, factor: usize) -> Result<()> {
    if options.size == 0 || !options.size.is_multiple_of(factor) {
        return Err(EngineError::InvalidSetting(format!(
            "image size {} must be a positive multiple of {factor} (the VAE's down-sampling)",
            options.size
        )));
    }
    if options.shard_size == 0 || options.per_class == Some(0) {
        return Err(EngineError::InvalidSetting(
            "shard size and images per class must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Encodes the shards of `root` that belong to worker `part` of `parts` and are not in `out`
/// yet, `batch` images at a time; returns how many images this call encoded. Writes or checks
/// the manifest first: a folder never mixes two encodings. Returns after the shard in progress
/// once `stop` is set.
#[allow(clippy::too_many_arguments)]
pub fn encode_image_folder(
    vae: &AutoencoderKL,
    vae_fingerprint: String,
    root: &Path,
    out: &Path,
    options: &LatentOptions,
    (part, parts): (usize, usize),
    batch: usize,
    device: &Device,
    mut progress: impl FnMut(&LatentProgress),
    stop: &AtomicBool,
) -> Result<usize> {
    let factor = vae.config.downsampling();
    check_options(options, factor)?;
    if parts == 0 || part >= parts {
        return Err(EngineError::InvalidSetting(format!(
            "shard {part}/{parts}: need 0 ≤ i < n"
        )));
    }
    let (class_names, items) = list_image_folder(root, options.per_class)?;
    let side = options.size / factor;
    let manifest = LatentManifest {
        options: options.clone(),
        count: items.len(),
        latent_shape: [vae.config.latent_channels, side, side],
        scaling_factor: vae.config.scaling_factor,
        class_names,
        vae_fingerprint,
    };
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    check_or_write_manifest(
        &out.join(LATENTS_MANIFEST),
        &manifest,
        "this folder holds another encoding (other images, VAE or settings); use a new folder",
    )?;
    let todo: Vec<usize> = (0..manifest.num_shards())
        .filter(|s| s % parts == part)
        .filter(|&s| TensorFile::read(latent_shard_path(out, s)).is_err())
        .collect();
    let shard_range = |s: usize| {
        let start = s * options.shard_size;
        start..(start + options.shard_size).min(items.len())
    };
    let total = todo.iter().map(|&s| shard_range(s).len()).sum();
    let start = Instant::now();
    let mut done = 0;
    for s in todo {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let range = shard_range(s);
        let mut latents = Vec::new();
        let ids: Vec<usize> = range.clone().collect();
        for chunk in ids.chunks(batch.max(1)) {
            let images = chunk
                .iter()
                .map(|&g| load_centre_crop(&items[g].0, options.size)?.to_device::<3>(device))
                .collect::<Result<Vec<Tensor<3>>>>()?;
            let posterior = vae.encode(Tensor::stack(images, 0));
            let eps: Vec<Tensor<4>> = chunk
                .iter()
                .map(|&g| {
                    posterior_noise(&manifest.latent_shape, options.seed, g).to_device(device)
                })
                .collect::<Result<_>>()?;
            let z = posterior.mean + (posterior.logvar * 0.5).exp() * Tensor::cat(eps, 0);
            latents.extend(HostTensor::from_tensor(z * manifest.scaling_factor).data);
            done += chunk.len();
            progress(&LatentProgress {
                done,
                total,
                elapsed_s: start.elapsed().as_secs_f64(),
            });
        }
        let mut shape = vec![range.len()];
        shape.extend_from_slice(&manifest.latent_shape);
        let mut w = SafetensorsWriter::new();
        w.add_f32("latent", &HostTensor::new(shape, latents), Storage::F32);
        w.add_i64("y", &range.map(|g| items[g].1).collect::<Vec<_>>());
        w.write(latent_shard_path(out, s))?;
    }
    Ok(done)
}

/// The posterior draw's noise for image `g`: independent of shards, batches and workers.
fn posterior_noise(shape: &[usize], seed: u64, g: usize) -> HostTensor {
    let mut s = vec![1];
    s.extend_from_slice(shape);
    seeded_noise(s, seed ^ (g as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Whether `dir` is a latent folder (holds `latents.json`).
pub fn is_latent_folder(dir: &Path) -> bool {
    dir.join(LATENTS_MANIFEST).is_file()
}

/// Reads a whole latent folder as a dataset of `[N, C, h, w]` latents; every shard must be
/// there.
pub fn load_latents(dir: &Path) -> Result<Dataset> {
    let manifest_path = dir.join(LATENTS_MANIFEST);
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| EngineError::io(&manifest_path, e))?;
    let manifest: LatentManifest = serde_json::from_str(&text)
        .map_err(|e| EngineError::bad_file(&manifest_path, e.to_string()))?;
    if manifest.options.shard_size == 0 {
        return Err(EngineError::bad_file(
            &manifest_path,
            "shard size 0: not written by `ard encode`",
        ));
    }
    let shards = manifest.num_shards();
    let missing: Vec<usize> = (0..shards)
        .filter(|&s| !latent_shard_path(dir, s).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::bad_file(
            dir,
            format!(
                "{} of {shards} shards are not written yet (first missing: {}); run `ard encode` \
                 on this folder again to finish",
                missing.len(),
                missing[0]
            ),
        ));
    }
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for s in 0..shards {
        let file = TensorFile::read(latent_shard_path(dir, s))?;
        data.extend(file.f32("latent")?.data);
        labels.extend(file.labels("y")?);
    }
    let [c, h, w] = manifest.latent_shape;
    if data.len() != labels.len() * c * h * w || labels.len() != manifest.count {
        return Err(EngineError::bad_file(
            dir,
            "the shards do not add up to the manifest's count and shape",
        ));
    }
    Ok(Dataset {
        images: HostTensor::new(vec![labels.len(), c, h, w], data),
        labels,
        class_names: manifest.class_names,
    })
}
