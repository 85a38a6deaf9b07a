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

use crate::diffusion::ddim::{DdimOptions, ddim_sample};
use crate::error::{EngineError, Result};
use crate::io::host::{HostTensor, seeded_noise};
use crate::io::weights::TensorFile;
use crate::io::writer::{SafetensorsWriter, Storage, check_or_write_manifest, file_fingerprint};
use crate::model::config::{ModelMeta, default_anchors};
use crate::model::dit::Dit;
use crate::model::precision::Precision;

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
            _ => Err(EngineError::InvalidSetting(format!(
                "anchor kind `{s}`: use x0 or state"
            ))),
        }
    }
}

/// How a trajectory set is made: the defaults of `ard trajectories` and of the app's pipeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrajectoryOptions {
    /// Trajectories in the whole set (class-balanced).
    pub count: usize,
    /// Trajectories per shard file (a stopped run ends after the shard in progress).
    pub shard_size: usize,
    /// The teacher's sampler: the paper's 25 DDIM steps with guidance 1.5 by default.
    pub ddim: DdimOptions,
    /// K: the anchors are the K-step student's (15, 10, 5, 0 of 25 for K = 4)…
    pub student_steps: usize,
    /// …unless given here (respaced indices, highest first, ending with 0).
    pub anchors: Option<Vec<usize>>,
    pub anchor_kind: AnchorKind,
    /// Images per teacher batch.
    pub batch: usize,
    pub seed: u64,
    /// The teacher's precision while it makes the set (f16 / bf16 on GPUs at ImageNet scale).
    pub precision: Precision,
}

/// Trajectories in a default set: 1600 per Fashion-MNIST class, so that a 24 000-iteration
/// distillation at batch 32 sees each about 48 times.
pub const DEFAULT_TRAJECTORIES: usize = 16_000;

impl Default for TrajectoryOptions {
    fn default() -> Self {
        Self {
            count: DEFAULT_TRAJECTORIES,
            shard_size: 250,
            ddim: DdimOptions::default(),
            student_steps: 4,
            anchors: None,
            anchor_kind: AnchorKind::X0,
            batch: 50,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

impl TrajectoryOptions {
    /// The manifest of the set these options make from `teacher` (whose file has
    /// `teacher_fingerprint`).
    pub fn manifest(&self, teacher: &ModelMeta, teacher_fingerprint: String) -> TrajectoryManifest {
        let d = &teacher.dit;
        TrajectoryManifest {
            count: self.count,
            shard_size: self.shard_size,
            ddim_steps: self.ddim.steps,
            cfg_scale: self.ddim.cfg_scale,
            guided_channels: self.ddim.guided_channels_for(d),
            anchors: self
                .anchors
                .clone()
                .unwrap_or_else(|| default_anchors(self.student_steps, self.ddim.steps)),
            anchor_kind: self.anchor_kind,
            seed: self.seed,
            num_classes: d.num_classes,
            image_shape: d.image_shape().to_vec(),
            teacher: teacher_fingerprint,
            clip_denoised: teacher.clip_denoised || self.ddim.clip_denoised,
            precision: self.precision,
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
    /// The teacher's precision (absent: f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl TrajectoryManifest {
    pub fn num_shards(&self) -> usize {
        self.count.div_ceil(self.shard_size)
    }

    /// The shards of worker `part` of `parts` (s mod parts = part): those already in `dir`
    /// (complete and readable), and those still to make.
    pub fn shard_status(&self, dir: &Path, (part, parts): (usize, usize)) -> ShardStatus {
        let (done, todo) = (0..self.num_shards())
            .filter(|s| s % parts.max(1) == part)
            .partition(|&s| TensorFile::read(shard_path(dir, s)).is_ok());
        ShardStatus { done, todo }
    }

    /// Trajectories in `shards`.
    pub fn trajectories_in(&self, shards: &[usize]) -> usize {
        shards.iter().map(|&s| self.shard_range(s).len()).sum()
    }

    /// Trajectory indices of shard `s`.
    pub fn shard_range(&self, s: usize) -> std::ops::Range<usize> {
        s * self.shard_size..((s + 1) * self.shard_size).min(self.count)
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(EngineError::InvalidSetting(m));
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

/// Which of a worker's shards are on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    pub done: Vec<usize>,
    pub todo: Vec<usize>,
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
/// tensors: `x_T`, `anchor_{a}` per anchor, `y`. `on_evaluation` is called after every network
/// evaluation (one guided DDIM step of one batch).
pub fn make_shard(
    teacher: &Dit,
    manifest: &TrajectoryManifest,
    range: std::ops::Range<usize>,
    batch: usize,
    device: &Device,
    on_evaluation: &mut dyn FnMut(),
) -> Result<SafetensorsWriter> {
    let ddim = DdimOptions {
        steps: manifest.ddim_steps,
        cfg_scale: manifest.cfg_scale,
        guided_channels: Some(manifest.guided_channels),
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
            on_evaluation();
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

/// Progress of a trajectory run: `done` of the `total` trajectories this call makes (in whole
/// shards), beside the `already` ones an earlier run left on disk; `evaluations` of the
/// `total_evaluations` teacher network evaluations (guided DDIM steps of a batch) this call
/// makes. Reported after every evaluation: at ImageNet scale one takes seconds.
#[derive(Clone, Debug)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub already: usize,
    pub evaluations: usize,
    pub total_evaluations: usize,
    /// Whether a shard was just written (`done` moved).
    pub shard_written: bool,
    pub elapsed_s: f64,
}

impl Progress {
    /// Trajectories done, counting the shard in progress by its evaluations.
    pub fn done_fraction(&self) -> f64 {
        if self.total_evaluations == 0 {
            return 1.0;
        }
        self.evaluations as f64 / self.total_evaluations as f64
    }

    /// Seconds left at the rate so far.
    pub fn eta_s(&self) -> f64 {
        if self.evaluations == 0 {
            f64::NAN
        } else {
            let left = self.total_evaluations - self.evaluations;
            self.elapsed_s * left as f64 / self.evaluations as f64
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
        return Err(EngineError::InvalidSetting(format!(
            "shard {part}/{parts}: need 0 ≤ i < n"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    check_or_write_manifest(
        &dir.join("manifest.json"),
        manifest,
        "this directory holds a different trajectory set (other teacher or settings); use a new \
         directory",
    )?;
    let status = manifest.shard_status(dir, (part, parts));
    let already = manifest.trajectories_in(&status.done);
    let todo = status.todo;
    let total = manifest.trajectories_in(&todo);
    let batch = batch.max(1);
    let total_evaluations = todo
        .iter()
        .map(|&s| manifest.shard_range(s).len().div_ceil(batch) * manifest.ddim_steps)
        .sum();
    let start = Instant::now();
    let mut p = Progress {
        done: 0,
        total,
        already,
        evaluations: 0,
        total_evaluations,
        shard_written: false,
        elapsed_s: 0.0,
    };
    for s in todo {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let range = manifest.shard_range(s);
        let len = range.len();
        let mut on_evaluation = || {
            p.evaluations += 1;
            p.shard_written = false;
            p.elapsed_s = start.elapsed().as_secs_f64();
            progress(&p);
        };
        let shard = make_shard(teacher, manifest, range, batch, device, &mut on_evaluation)?;
        shard.write(shard_path(dir, s))?;
        p.done += len;
        p.shard_written = true;
        p.elapsed_s = start.elapsed().as_secs_f64();
        progress(&p);
    }
    Ok(p.done)
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
    /// Fails unless the set's images and classes are those of a teacher of shape `dit`.
    pub fn check_teacher(&self, dit: &crate::model::config::DitConfig) -> Result<()> {
        let m = &self.manifest;
        if m.image_shape != dit.image_shape() || m.num_classes != dit.num_classes {
            return Err(EngineError::Mismatch(
                "the trajectory set was not made by a teacher of this shape".into(),
            ));
        }
        Ok(())
    }

    /// Fails unless the set was made by the teacher file at `teacher` (the same bytes): a
    /// student started from one teacher's weights and taught another's trajectories learns a
    /// mix of the two.
    pub fn check_made_by(&self, teacher: &Path) -> Result<()> {
        let fingerprint = file_fingerprint(teacher)?;
        if fingerprint != self.manifest.teacher {
            return Err(EngineError::Mismatch(format!(
                "the trajectory set was made by another teacher file (fingerprint {}; {} is \
                 {fingerprint}): make one with this teacher (`ard trajectories --teacher {}`), \
                 or pass --allow-other-teacher to train on it anyway",
                self.manifest.teacher,
                teacher.display(),
                teacher.display()
            )));
        }
        Ok(())
    }

    /// Reads the set at `dir` for a student of the teacher file at `teacher`: fails as
    /// [`Self::check_made_by`] does unless `allow_other_teacher`.
    pub fn load_for_teacher(dir: &Path, teacher: &Path, allow_other_teacher: bool) -> Result<Self> {
        let set = Self::load(dir)?;
        if !allow_other_teacher {
            set.check_made_by(teacher)?;
        }
        Ok(set)
    }

    /// Reads every shard; fails naming the first missing or damaged one.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            EngineError::DataNotFound(format!(
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
                EngineError::DataNotFound(format!(
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
