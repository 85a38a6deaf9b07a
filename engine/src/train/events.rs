//! What a training run reports, as it happens: one event type for the teacher, the trajectory
//! set, distillation and stage 2, which the CLI prints and the app plots.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use image::RgbImage;

use crate::eval::monitor::EvalPoint;

/// The phases of a training run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Teacher,
    Trajectories,
    Distillation,
    /// Stage 2: adversarial fine-tuning.
    Adversarial,
}

/// Progress of a training run.
#[derive(Clone, Debug)]
pub enum TrainingEvent {
    /// A phase begins.
    Phase {
        phase: Phase,
    },
    /// The phase continues from its checkpoint at `iteration`.
    Resumed {
        phase: Phase,
        iteration: u64,
    },
    /// `done` of `total` iterations (trajectories, for that phase), with the iteration's loss.
    Progress {
        phase: Phase,
        done: u64,
        total: u64,
        loss: Option<f32>,
        elapsed_s: f64,
        eta_s: f64,
    },
    /// A checkpoint (live and EMA weights, optimiser) was written.
    Checkpoint {
        phase: Phase,
        iteration: u64,
        path: PathBuf,
    },
    /// A sample grid of the EMA weights (every step of the model left to right), written to
    /// `path`.
    Preview {
        phase: Phase,
        iteration: u64,
        path: PathBuf,
        image: RgbImage,
    },
    /// Further values of the iteration just done (stage 2's loss parts, named by
    /// `gan::GAN_METRICS`).
    Metrics {
        phase: Phase,
        iteration: u64,
        values: Vec<f32>,
    },
    /// An evaluation point of the EMA and raw weights (also in the run's `eval.jsonl`).
    Eval {
        phase: Phase,
        point: EvalPoint,
    },
    /// The run goes on without evaluation points, for this reason.
    EvalUnavailable {
        reason: String,
    },
    /// The phase wrote its model (the EMA weights) to `path`.
    Saved {
        phase: Phase,
        path: PathBuf,
    },
    /// The phase stopped when asked, after a checkpoint at `iteration` (trajectories: written).
    Stopped {
        phase: Phase,
        iteration: u64,
    },
    /// The run is done: its distilled (or fine-tuned) student.
    Finished {
        student: PathBuf,
    },
    Failed {
        message: String,
    },
}

/// How a caller follows and stops a job: its phase, events as they happen, and a flag checked
/// before every iteration (set it to stop after a checkpoint).
pub struct Hooks<'a> {
    pub phase: Phase,
    pub stop: &'a AtomicBool,
    pub on_event: &'a mut dyn FnMut(TrainingEvent),
}

impl Hooks<'_> {
    pub fn send(&mut self, event: TrainingEvent) {
        (self.on_event)(event)
    }
}
