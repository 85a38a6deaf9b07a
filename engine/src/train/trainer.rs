//! The training loop shared by teacher training and distillation: one AdamW step on a loss,
//! gradient clipping, the EMA update; checkpoints (`checkpoint.rs`) resume a killed run exactly.
//!
//! Exactness: every random draw of iteration i comes from a generator seeded with (seed, i),
//! and a checkpoint holds the live weights, the EMA weights and the optimizer moments bit for
//! bit, so a resumed run computes what the uninterrupted one would have.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;

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
        let decay = ema_decay_at(self.options.ema_decay, self.iteration) as f32;
        self.ema = update_ema(self.ema.clone(), &self.model, decay);
    }
}
