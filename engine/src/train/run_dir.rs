//! A run folder: where a job keeps its checkpoint, options, sample grids and evaluation log,
//! and how often it writes them.

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Module;

use crate::diffusion::sampling::PromptRequest;
use crate::error::{EngineError, Result};
use crate::eval::monitor::TrainingEval;
use crate::model::config::ModelMeta;
use crate::train::checkpoint::{RunLock, checkpoint_meta, keep_run_options, lock_run_folder};
use crate::train::events::{Hooks, TrainingEvent};
use crate::train::options::TrainOptions;
use crate::train::trainer::Trainer;
use crate::vae::AutoencoderKL;

/// Checkpoint (live + EMA weights, optimiser) every this many iterations: a killed run loses
/// at most this many.
pub const CHECKPOINT_EVERY: u64 = 100;
/// Sample grid every this many iterations.
pub const SAMPLE_EVERY: u64 = 500;

/// Where and how often a run writes.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub checkpoint_every: u64,
    /// Sample grid every this many iterations (0 = only at the end).
    pub sample_every: u64,
    /// Continue from `dir/checkpoint.safetensors` when it exists.
    pub resume: bool,
    /// Score the EMA and raw weights along the way (`eval.jsonl`), when given.
    pub eval: Option<Arc<TrainingEval>>,
    /// A latent model's sample grids are decoded through this VAE (on its own device), when
    /// given; otherwise latents are previewed with a fixed latent→RGB map.
    pub decoder: Option<Arc<AutoencoderKL>>,
    /// The prompts a text model's sample grids show (a class model shows its classes).
    pub prompts: Option<Arc<PromptRequest>>,
}

impl RunDir {
    /// `dir`, with the default checkpoint and sample intervals, resuming when it can.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            checkpoint_every: CHECKPOINT_EVERY,
            sample_every: SAMPLE_EVERY,
            resume: true,
            eval: None,
            decoder: None,
            prompts: None,
        }
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    /// Takes the run folder for this job ([`lock_run_folder`]: the lock lives as long as the
    /// returned [`RunLock`]) and says whether the run resumes (asked to, and a checkpoint
    /// exists). Refuses a checkpoint whose model description fails `same_model` (`other` tells
    /// the user why, after the checkpoint's path) and, through [`keep_run_options`], other
    /// settings than the run's own, which it keeps in `options_file`.
    pub fn open<T: serde::Serialize>(
        &self,
        same_model: impl FnOnce(&ModelMeta) -> bool,
        other: &str,
        options_file: &str,
        options: &T,
    ) -> Result<(bool, RunLock)> {
        let lock = lock_run_folder(&self.dir)?;
        let resuming = self.resume && self.checkpoint().exists();
        if resuming && !same_model(&checkpoint_meta(&self.checkpoint())?) {
            return Err(EngineError::RunFolder(format!(
                "{} {other}",
                self.checkpoint().display()
            )));
        }
        keep_run_options(&self.dir.join(options_file), options, resuming)?;
        Ok((resuming, lock))
    }

    /// The job's trainer for `model` (freshly built): continued from the checkpoint when
    /// `resuming` (reporting the iteration it continues from), otherwise new with `options`.
    pub fn trainer<M: Module>(
        &self,
        resuming: bool,
        model: M,
        options: &TrainOptions,
        hooks: &mut Hooks,
    ) -> Result<Trainer<M>> {
        if !resuming {
            return Ok(Trainer::new(model, options.clone()));
        }
        let t = Trainer::resume(model, &self.checkpoint(), Some(options.iterations))?;
        hooks.send(TrainingEvent::Resumed {
            phase: hooks.phase,
            iteration: t.iteration,
        });
        Ok(t)
    }
}
