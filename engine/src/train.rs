//! The training loop shared by teacher training and distillation: AdamW, gradient clipping by
//! the global norm (as PyTorch's `clip_grad_norm_`), an EMA of the weights, and checkpoints that
//! resume a killed run exactly.
//!
//! Exactness: every random draw of iteration i comes from a generator seeded with (seed, i),
//! and a checkpoint holds the live weights, the EMA weights and the optimizer moments bit for
//! bit, so a resumed run computes what the uninterrupted one would have.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::container::TensorContainer;
use burn::tensor::{Bytes, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::config::ModelMeta;
use crate::error::{EngineError, Result};
use crate::weights::{SafetensorsWriter, TensorFile};

/// Optimisation settings (the reference's: AdamW lr 1e-4, no weight decay, clip 1, EMA).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub iterations: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Target EMA decay; early on the decay is min(decay, (1+i)/(10+i)).
    pub ema_decay: f64,
    /// Global gradient-norm bound (0 = none).
    pub grad_clip: f32,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            iterations: 1000,
            batch_size: 64,
            lr: 1e-4,
            ema_decay: 0.9999,
            grad_clip: 1.0,
            seed: 0,
        }
    }
}

/// The random generator of iteration `i`.
pub fn iteration_rng(seed: u64, i: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_add(1).rotate_left(29),
    )
}

/// Squared global gradient norm, collected per parameter.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.parts.push(g.square().sum());
        }
    }
}

/// Multiplies every gradient by `scale`.
struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    scale: f32,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register::<D>(p.id, g * self.scale);
        }
    }
}

/// Clips gradients to a global L2 norm of at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let mut sq = GradSquares {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut sq);
    if sq.parts.is_empty() {
        return 0.0;
    }
    let norm = Tensor::cat(sq.parts, 0).sum().sqrt().into_scalar::<f32>();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        model.visit(&mut ScaleGrads { grads, scale });
    }
    norm
}

/// Untracked copies of a module's float parameters, by id.
struct CollectParams(TensorContainer<ParamId>);

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        // Without autodiff: an EMA built from tracked tensors would chain a graph through every
        // iteration.
        self.0
            .register::<Tensor<D>>(p.id, p.val().without_autodiff());
    }
}

/// `ema ← decay·ema + (1 − decay)·live`, pairing parameters by id.
struct EmaUpdate<'a> {
    live: &'a TensorContainer<ParamId>,
    decay: f32,
}

impl ModuleMapper for EmaUpdate<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(live) = self.live.get::<Tensor<D>>(&p.id) else {
            return p;
        };
        let d = self.decay;
        p.map(|e| (e.without_autodiff() * d + live * (1.0 - d)).without_autodiff())
    }
}

/// One training run: the live model (on an autodiff device), its EMA (no autodiff), the
/// optimizer, and the loss history.
pub struct Trainer<M: Module> {
    pub model: M,
    pub ema: M,
    optim: ModuleOptimizer,
    pub options: TrainOptions,
    /// Iterations done.
    pub iteration: u64,
    /// (iteration, loss) of every iteration.
    pub losses: Vec<(u64, f32)>,
}

fn optimizer() -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init()
}

/// What a checkpoint's header says about the run.
#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    iteration: u64,
    options: TrainOptions,
    losses: Vec<(u64, f32)>,
}

const CHECKPOINT_KEY: &str = "ard_studio_checkpoint";

fn blob<'a>(file: &'a TensorFile, key: &str) -> Result<&'a [u8]> {
    Ok(file.raw(key)?.bytes())
}

impl<M: Module> Trainer<M> {
    /// Starts a run; `model` must live on an autodiff device.
    pub fn new(model: M, options: TrainOptions) -> Self {
        let ema = model.valid();
        Self {
            model,
            ema,
            optim: optimizer(),
            options,
            iteration: 0,
            losses: Vec::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.iteration >= self.options.iterations
    }

    /// One optimisation step on the loss `loss_fn` builds; returns the loss.
    pub fn step(
        &mut self,
        loss_fn: impl FnOnce(&M, &mut StdRng) -> Result<Tensor<1>>,
    ) -> Result<f32> {
        let mut rng = iteration_rng(self.options.seed, self.iteration);
        let loss = loss_fn(&self.model, &mut rng)?;
        let value = loss.clone().into_scalar::<f32>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        clip_global_norm(&self.model, &mut grads, self.options.grad_clip);
        let model = self.model.clone();
        self.model = self.optim.step(self.options.lr, model, grads);
        self.update_ema();
        self.losses.push((self.iteration, value));
        self.iteration += 1;
        Ok(value)
    }

    fn update_ema(&mut self) {
        let i = self.iteration as f64;
        let decay = self.options.ema_decay.min((1.0 + i) / (10.0 + i)) as f32;
        let mut live = CollectParams(TensorContainer::new());
        self.model.visit(&mut live);
        let ema = self.ema.clone();
        self.ema = ema.map(&mut EmaUpdate {
            live: &live.0,
            decay,
        });
    }

    /// Writes live weights, EMA weights, optimizer state and history to `path` atomically,
    /// with the model's description (so a resume can rebuild its structure).
    pub fn save_checkpoint(&self, path: &Path, meta: &ModelMeta) -> Result<()> {
        let to_bytes = |r: std::result::Result<Bytes, _>, what: &str| {
            r.map(|b: Bytes| b.to_vec())
                .map_err(|e| EngineError::Input(format!("cannot serialise the {what}: {e:?}")))
        };
        let model = to_bytes(self.model.clone().into_record().into_bytes(), "model")?;
        let ema = to_bytes(self.ema.clone().into_record().into_bytes(), "EMA")?;
        let optim = to_bytes(self.optim.into_bytes(), "optimizer")?;
        let mut w = SafetensorsWriter::new();
        let header = CheckpointHeader {
            iteration: self.iteration,
            options: self.options.clone(),
            losses: self.losses.clone(),
        };
        w.set_metadata(CHECKPOINT_KEY, serde_json::to_string(&header).unwrap());
        w.set_meta(meta);
        for (key, bytes) in [("model", model), ("ema", ema), ("optimizer", optim)] {
            w.add_bytes(key, bytes);
        }
        w.write(path)
    }

    /// Resumes from a checkpoint into `model` (a freshly built module of the same structure on
    /// the training device). The options stored in the checkpoint win, except `iterations`, which
    /// the caller may extend.
    pub fn resume(model: M, path: &Path, iterations: Option<u64>) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let header: CheckpointHeader = file
            .header_json(CHECKPOINT_KEY)?
            .ok_or_else(|| EngineError::bad_file(path, "not an ARD Studio training checkpoint"))?;
        let record = |key: &str| -> Result<ModuleRecord> {
            let bytes = blob(&file, key)?.to_vec();
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
                .map_err(|e| EngineError::bad_file(path, format!("damaged `{key}` record: {e:?}")))
        };
        let ema_template = model.valid();
        let model = model.try_load_record(record("model")?).map_err(|e| {
            EngineError::bad_file(path, format!("checkpoint does not fit the model: {e:?}"))
        })?;
        let ema = ema_template.try_load_record(record("ema")?).map_err(|e| {
            EngineError::bad_file(path, format!("checkpoint does not fit the model: {e:?}"))
        })?;
        let optim_bytes = blob(&file, "optimizer")?.to_vec();
        let optim = optimizer()
            .from_bytes(Bytes::from_bytes_vec(optim_bytes))
            .map_err(|e| EngineError::bad_file(path, format!("damaged optimizer state: {e:?}")))?;
        let mut options = header.options;
        if let Some(n) = iterations {
            options.iterations = n;
        }
        Ok(Self {
            model,
            ema,
            optim,
            options,
            iteration: header.iteration,
            losses: header.losses,
        })
    }

    /// Mean loss over the last `n` iterations.
    pub fn recent_loss(&self, n: usize) -> f32 {
        let tail = &self.losses[self.losses.len().saturating_sub(n)..];
        tail.iter().map(|(_, l)| l).sum::<f32>() / tail.len().max(1) as f32
    }
}

/// The model description stored in a checkpoint.
pub fn checkpoint_meta(path: &Path) -> Result<ModelMeta> {
    TensorFile::read(path)?
        .model_meta()?
        .ok_or_else(|| EngineError::bad_file(path, "checkpoint without a model description"))
}

/// Loss points thinned to at most `n` (for plots and manifests).
pub fn thin_losses(losses: &[(u64, f32)], n: usize) -> BTreeMap<u64, f32> {
    let stride = losses.len().div_ceil(n.max(1)).max(1);
    losses
        .chunks(stride)
        .map(|c| {
            let mean = c.iter().map(|(_, l)| l).sum::<f32>() / c.len() as f32;
            (c[c.len() - 1].0, mean)
        })
        .collect()
}
