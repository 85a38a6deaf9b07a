//! The training loop shared by teacher training and distillation: one AdamW step on a loss,
//! gradient clipping, the EMA update; checkpoints (`checkpoint.rs`) resume a killed run exactly.
//!
//! Exactness: every random draw of iteration i comes from a generator seeded with (seed, i),
//! and a checkpoint holds the live weights, the EMA weights and the optimizer moments bit for
//! bit, so a resumed run computes what the uninterrupted one would have.

use std::ops::Range;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

use crate::error::Result;
use crate::train::ema::{ema_decay_at, update_ema};
use crate::train::optim::{clip_global_norm, optimizer};
use crate::train::options::TrainOptions;

/// The random generator of iteration `i`.
pub fn iteration_rng(seed: u64, i: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_add(1).rotate_left(29),
    )
}

/// One training run: the live model (on an autodiff device), its EMA (no autodiff), the
/// optimizer, and the loss history.
pub struct Trainer<M: Module> {
    pub model: M,
    pub ema: M,
    pub(crate) optim: ModuleOptimizer,
    pub options: TrainOptions,
    /// Iterations done.
    pub iteration: u64,
    /// (iteration, loss) of every iteration.
    pub losses: Vec<(u64, f32)>,
    /// Further values a job records per iteration (the GAN stage's loss parts), kept in
    /// checkpoints like the losses.
    pub metrics: Vec<(u64, Vec<f32>)>,
    /// Threads a step's batch is split over ([`Trainer::step_sharded`]); see [`train_workers`].
    pub workers: usize,
    /// At most this many rows per forward/backward pass: larger batches are split into
    /// micro-batches whose gradients add up (see [`micro_batch_rows`]). 0 = no limit.
    pub micro_rows: usize,
}

/// Rows per micro-batch that keep one attention score tensor (`heads × L × L` floats per row,
/// for sequences of `tokens` tokens) under 32 MiB, so that its buffers come from the heap and are
/// reused step after step instead of being mapped and zeroed afresh (`ARD_MICRO_ROWS`
/// overrides; 0 = no limit).
pub fn micro_batch_rows(heads: usize, tokens: usize) -> usize {
    if let Some(n) = std::env::var("ARD_MICRO_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    let per_row = heads * tokens * tokens * 4;
    ((32usize << 20) / per_row.max(1)).max(1)
}

/// Worker threads for data-parallel steps on `device`: one per CPU core on the CPU (or
/// `ARD_TRAIN_THREADS`), one on a GPU (whose kernels already fill it).
pub fn train_workers(device: &Device) -> usize {
    if crate::device::on_wgpu(device) {
        return 1;
    }
    std::env::var("ARD_TRAIN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Rows `0..rows` in `parts` contiguous ranges of near-equal size.
pub fn split_rows(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, rows.max(1));
    (0..parts)
        .map(|i| rows * i / parts..rows * (i + 1) / parts)
        .collect()
}

/// A copy of a module whose parameters are fresh autodiff leaves (same values, same ids), so
/// that its graph is independent of the original's and a worker thread can build it alone.
pub(crate) struct Detach;

impl ModuleMapper for Detach {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| t.detach())
    }
}

/// `into ← into + from`, parameter by parameter.
struct AddGrads<'a> {
    into: &'a mut GradientsParams,
    from: &'a mut GradientsParams,
}

impl ModuleVisitor for AddGrads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        match (self.into.remove::<D>(p.id), self.from.remove::<D>(p.id)) {
            (Some(a), Some(b)) => self.into.register::<D>(p.id, a + b),
            (Some(g), None) | (None, Some(g)) => self.into.register::<D>(p.id, g),
            (None, None) => {}
        }
    }
}

impl<M: Module> Trainer<M> {
    /// Starts a run; `model` must live on an autodiff device.
    pub fn new(model: M, options: TrainOptions) -> Self {
        crate::device::keep_freed_memory();
        let ema = model.valid();
        Self {
            model,
            ema,
            optim: optimizer(),
            options,
            iteration: 0,
            losses: Vec::new(),
            metrics: Vec::new(),
            workers: 1,
            micro_rows: 0,
        }
    }

    /// Splits steps for `device` ([`train_workers`]) and for attention over sequences of
    /// `tokens` tokens in `heads` heads ([`micro_batch_rows`]).
    pub fn split_for(&mut self, device: &Device, heads: usize, tokens: usize) {
        self.workers = train_workers(device);
        self.micro_rows = micro_batch_rows(heads, tokens);
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
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        Ok(self.apply(grads, value))
    }

    /// One data-parallel optimisation step: `draw` makes the iteration's whole batch on the host
    /// (every random draw of the iteration, so the result does not depend on the split), and
    /// `loss` the mean loss of a range of its `rows`. The ranges run on [`Trainer::workers`]
    /// threads, each on its own graph; their gradients add up weighted by their share of the
    /// rows, which is the whole batch's mean. Returns the loss.
    pub fn step_sharded<B: Sync>(
        &mut self,
        rows: usize,
        draw: impl FnOnce(&mut StdRng) -> Result<B>,
        loss: impl Fn(&M, &B, Range<usize>) -> Result<Tensor<1>> + Sync,
    ) -> Result<f32>
    where
        M: Sync,
    {
        let mut rng = iteration_rng(self.options.seed, self.iteration);
        let batch = draw(&mut rng)?;
        let micro = match self.micro_rows {
            0 => 1,
            n => rows.div_ceil(n),
        };
        let shards = split_rows(rows, self.workers.max(micro));
        let part = |model: &M, range: Range<usize>| -> Result<(f32, GradientsParams)> {
            let weight = range.len() as f32 / rows.max(1) as f32;
            let loss = loss(model, &batch, range)? * weight;
            let value = loss.clone().into_scalar::<f32>();
            Ok((value, GradientsParams::from_grads(loss.backward(), model)))
        };
        let parts: Vec<Result<(f32, GradientsParams)>> = if shards.len() == 1 {
            vec![part(&self.model, shards[0].clone())]
        } else {
            let copies: Vec<M> = shards
                .iter()
                .map(|_| self.model.clone().map(&mut Detach))
                .collect();
            copies
                .par_iter()
                .zip(shards)
                .map(|(model, range)| part(model, range))
                .collect()
        };
        let mut value = 0.0;
        let mut grads: Option<GradientsParams> = None;
        for p in parts {
            let (v, mut g) = p?;
            value += v;
            grads = Some(match grads {
                None => g,
                Some(mut into) => {
                    self.model.visit(&mut AddGrads {
                        into: &mut into,
                        from: &mut g,
                    });
                    into
                }
            });
        }
        Ok(self.apply(grads.expect("at least one shard"), value))
    }

    /// Clips `grads`, takes the AdamW step, updates the EMA and records `loss`.
    fn apply(&mut self, mut grads: GradientsParams, loss: f32) -> f32 {
        clip_global_norm(&self.model, &mut grads, self.options.grad_clip);
        let model = self.model.clone();
        let lr = self.options.lr_at(self.iteration);
        self.model = self.optim.step(lr, model, grads);
        self.finish_iteration(loss)
    }

    /// Ends an iteration whose optimiser steps were taken: updates the EMA, records `loss`.
    pub(crate) fn finish_iteration(&mut self, loss: f32) -> f32 {
        self.update_ema();
        self.losses.push((self.iteration, loss));
        self.iteration += 1;
        loss
    }

    fn update_ema(&mut self) {
        let decay = ema_decay_at(self.options.ema_decay, self.iteration) as f32;
        self.ema = update_ema(self.ema.clone(), &self.model, decay);
    }
}
