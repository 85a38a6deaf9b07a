//! The trajectory set: the teacher's DDIM + guidance runs that the student learns from, stored in
//! safetensors shards. Each trajectory keeps its noise `x_T`, its class, and the anchor points
//! the student's K steps regress (the teacher's x0 predictions at the anchor indices by default,
//! or its noisy states there).
//!
//! Trajectory g has class `g mod classes` (class-balanced) and noise seeded from `(seed, g)`,
//! so shards can be made in any order, by several processes (`--shard i/n`), and a killed run
//! resumes by skipping the shards already on disk (each written atomically).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dit::Dit;
use crate::error::{EngineError, Result};
use crate::host::{HostTensor, seeded_noise};
use crate::sampler::{DdimOptions, ddim_sample};
use crate::weights::{SafetensorsWriter, Storage, TensorFile, write_atomically};

/// What an anchor point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorKind {
    /// The teacher's x0 prediction at the anchor index (the reference code's default).
    X0,
    /// The teacher's noisy state after the step at the anchor index (the paper's figure).
    State,
}

impl std::str::FromStr for AnchorKind {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "x0" => Ok(Self::X0),
            "state" | "xt" => Ok(Self::State),
            _ => Err(EngineError::Input(format!(
                "anchor kind `{s}`: use x0 or state"
            ))),
        }
    }
}

/// Everything that defines a trajectory set; stored as `manifest.json` beside the shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryManifest {
    pub count: usize,
    pub shard_size: usize,
    pub ddim_steps: usize,
    pub cfg_scale: f32,
    pub guided_channels: usize,
    /// Respaced indices of the anchors, highest first; the last is 0 (the final sample).
    pub anchors: Vec<usize>,
    pub anchor_kind: AnchorKind,
    pub seed: u64,
    pub num_classes: usize,
    /// `[C, S, S]` of one image.
    pub image_shape: Vec<usize>,
    /// Fingerprint of the teacher file the set was made with.
    pub teacher: String,
    /// x0 predictions clamped to [−1, 1] (pixel-space teachers).
    #[serde(default)]
    pub clip_denoised: bool,
}

impl TrajectoryManifest {
    pub fn num_shards(&self) -> usize {
        self.count.div_ceil(self.shard_size)
    }

    /// Trajectory indices of shard `s`.
    pub fn shard_range(&self, s: usize) -> std::ops::Range<usize> {
        s * self.shard_size..((s + 1) * self.shard_size).min(self.count)
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(EngineError::Input(m));
        if self.count == 0 || self.shard_size == 0 {
            return fail("a trajectory set needs at least one trajectory per shard".into());
        }
        if self.anchors.is_empty() || self.anchors.windows(2).any(|w| w[0] <= w[1]) {
            return fail(format!(
                "anchors {:?} must be strictly decreasing",
                self.anchors
            ));
        }
        if self.anchors.iter().any(|&a| a >= self.ddim_steps) {
            return fail(format!(
                "anchors {:?} must be below the {} DDIM steps",
                self.anchors, self.ddim_steps
            ));
        }
        Ok(())
    }
}

/// Noise of trajectory `g`: independent of shard layout.
pub fn trajectory_noise(shape: &[usize], seed: u64, g: usize) -> HostTensor {
    let mut s = vec![1];
    s.extend_from_slice(shape);
    seeded_noise(
        s,
        seed ^ (g as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17),
    )
}

/// Shard file name.
pub fn shard_path(dir: &Path, s: usize) -> PathBuf {
    dir.join(format!("shard-{s:05}.safetensors"))
}

/// Runs the teacher on trajectories `range` (in batches of `batch`) and returns the shard's
/// tensors: `x_T`, `anchor_{a}` per anchor, `y`.
pub fn make_shard(
    teacher: &Dit,
    manifest: &TrajectoryManifest,
    range: std::ops::Range<usize>,
    batch: usize,
    device: &Device,
) -> Result<SafetensorsWriter> {
    let ddim = DdimOptions {
        steps: manifest.ddim_steps,
        cfg_scale: manifest.cfg_scale,
        guided_channels: manifest.guided_channels,
        clip_denoised: manifest.clip_denoised,
    };
    let mut x_t = Vec::new();
    let mut anchors: Vec<Vec<f32>> = vec![Vec::new(); manifest.anchors.len()];
    let mut labels = Vec::new();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch.max(1)) {
        let noise: Vec<HostTensor> = chunk
            .iter()
            .map(|&g| trajectory_noise(&manifest.image_shape, manifest.seed, g))
            .collect();
        let y: Vec<i64> = chunk
            .iter()
            .map(|&g| (g % manifest.num_classes) as i64)
            .collect();
        let noise_dev: Vec<Tensor<4>> = noise
            .iter()
            .map(|n| n.to_device(device))
            .collect::<Result<_>>()?;
        let mut picked: Vec<Option<HostTensor>> = vec![None; manifest.anchors.len()];
        ddim_sample(teacher, Tensor::cat(noise_dev, 0), &y, &ddim, |s| {
            if let Some(k) = manifest.anchors.iter().position(|&a| a == s.index) {
                let t = match manifest.anchor_kind {
                    AnchorKind::X0 => &s.x0_pred,
                    AnchorKind::State => &s.state,
                };
                picked[k] = Some(HostTensor::from_tensor(t.clone()));
            }
        });
        for n in &noise {
            x_t.extend_from_slice(&n.data);
        }
        for (k, p) in picked.into_iter().enumerate() {
            anchors[k].extend(p.expect("every anchor index is visited").data);
        }
        labels.extend(y);
    }
    let n = labels.len();
    let mut shape = vec![n];
    shape.extend_from_slice(&manifest.image_shape);
    let mut w = SafetensorsWriter::new();
    w.add_f32("x_T", &HostTensor::new(shape.clone(), x_t), Storage::F32);
    for (a, data) in manifest.anchors.iter().zip(anchors) {
        w.add_f32(
            format!("anchor_{a}"),
            &HostTensor::new(shape.clone(), data),
            Storage::F32,
        );
    }
    w.add_i64("y", &labels);
    Ok(w)
}

/// Progress of a long job.
#[derive(Clone, Debug)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub elapsed_s: f64,
}

impl Progress {
    /// Seconds left at the rate so far.
    pub fn eta_s(&self) -> f64 {
        if self.done == 0 {
            f64::NAN
        } else {
            self.elapsed_s * (self.total - self.done) as f64 / self.done as f64
        }
    }
}

/// Writes the shards of `manifest` that belong to worker `part` of `parts` and are not on disk
/// yet. Writes or checks `manifest.json` first: a directory never mixes two sets.
pub fn write_trajectory_set(
    teacher: &Dit,
    manifest: &TrajectoryManifest,
    dir: &Path,
    part: (usize, usize),
    batch: usize,
    device: &Device,
    progress: impl FnMut(&Progress),
) -> Result<usize> {
    let never = AtomicBool::new(false);
    write_trajectory_set_until(
        teacher, manifest, dir, part, batch, device, progress, &never,
    )
}

/// [`write_trajectory_set`] that returns after the shard in progress once `stop` is set; the
/// shards written so far stay, so a later call continues.
#[allow(clippy::too_many_arguments)]
pub fn write_trajectory_set_until(
    teacher: &Dit,
    manifest: &TrajectoryManifest,
    dir: &Path,
    (part, parts): (usize, usize),
    batch: usize,
    device: &Device,
    mut progress: impl FnMut(&Progress),
    stop: &AtomicBool,
) -> Result<usize> {
    manifest.validate()?;
    if parts == 0 || part >= parts {
        return Err(EngineError::Input(format!(
            "shard {part}/{parts}: need 0 ≤ i < n"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let manifest_path = dir.join("manifest.json");
    match std::fs::read_to_string(&manifest_path) {
        Ok(text) => {
            let existing: TrajectoryManifest = serde_json::from_str(&text)
                .map_err(|e| EngineError::bad_file(&manifest_path, e.to_string()))?;
            if &existing != manifest {
                return Err(EngineError::bad_file(
                    &manifest_path,
                    "this directory holds a different trajectory set (other teacher or settings); \
                     use a new directory",
                ));
            }
        }
        Err(_) => write_atomically(
            &manifest_path,
            serde_json::to_string_pretty(manifest).unwrap().as_bytes(),
        )?,
    }
    let mine: Vec<usize> = (0..manifest.num_shards())
        .filter(|s| s % parts == part)
        .collect();
    let todo: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&s| TensorFile::read(shard_path(dir, s)).is_err())
        .collect();
    let total: usize = todo.iter().map(|&s| manifest.shard_range(s).len()).sum();
    let start = Instant::now();
    let mut done = 0;
    for s in todo {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let range = manifest.shard_range(s);
        let len = range.len();
        make_shard(teacher, manifest, range, batch, device)?.write(shard_path(dir, s))?;
        done += len;
        progress(&Progress {
            done,
            total,
            elapsed_s: start.elapsed().as_secs_f64(),
        });
    }
    Ok(done)
}

/// A complete trajectory set in memory.
pub struct TrajectorySet {
    pub manifest: TrajectoryManifest,
    pub x_t: HostTensor,
    /// One tensor per anchor, highest index first.
    pub anchors: Vec<HostTensor>,
    pub labels: Vec<i64>,
}

impl TrajectorySet {
    /// Reads every shard; fails naming the first missing or damaged one.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            EngineError::Input(format!(
                "{}: not a trajectory set ({e}); make one with `ard trajectories`",
                dir.display()
            ))
        })?;
        let manifest: TrajectoryManifest = serde_json::from_str(&text)
            .map_err(|e| EngineError::bad_file(&manifest_path, e.to_string()))?;
        manifest.validate()?;
        let mut x_t = Vec::new();
        let mut anchors = vec![Vec::new(); manifest.anchors.len()];
        let mut labels = Vec::new();
        for s in 0..manifest.num_shards() {
            let path = shard_path(dir, s);
            let f = TensorFile::read(&path).map_err(|e| {
                EngineError::Input(format!(
                    "trajectory set incomplete: {e} (finish it with `ard trajectories`)"
                ))
            })?;
            let n = manifest.shard_range(s).len();
            let mut shape = vec![n];
            shape.extend_from_slice(&manifest.image_shape);
            let take = |key: &str, out: &mut Vec<f32>| -> Result<()> {
                let t = f.f32(key)?;
                if t.shape != shape {
                    return Err(EngineError::bad_file(
                        &path,
                        format!("`{key}` has shape {:?}, expected {shape:?}", t.shape),
                    ));
                }
                out.extend(t.data);
                Ok(())
            };
            take("x_T", &mut x_t)?;
            for (k, a) in manifest.anchors.iter().enumerate() {
                take(&format!("anchor_{a}"), &mut anchors[k])?;
            }
            labels.extend(f.labels("y")?);
        }
        let mut shape = vec![manifest.count];
        shape.extend_from_slice(&manifest.image_shape);
        Ok(Self {
            x_t: HostTensor::new(shape.clone(), x_t),
            anchors: anchors
                .into_iter()
                .map(|a| HostTensor::new(shape.clone(), a))
                .collect(),
            labels,
            manifest,
        })
    }
}
