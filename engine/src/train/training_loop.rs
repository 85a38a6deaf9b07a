//! The training loop every job runs — the teacher, distillation and stage 2 alike: the job's
//! step until the last iteration or a stop, with checkpoints, sample grids and evaluation
//! points along the way. A killed run resumes from its last checkpoint exactly
//! (`checkpoint.rs`); a stopped one writes a checkpoint first.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::module::Module;

use crate::error::{EngineError, Result};
use crate::eval::monitor::{EVAL_LOG, EvalPoint, TrainingEval, read_eval_log, write_eval_log};
use crate::io::writer::Storage;
use crate::model::config::ModelMeta;
use crate::model::loaded::{LoadedModel, Model};
use crate::train::events::{Hooks, Phase, TrainingEvent};
use crate::train::preview::sample_grid;
use crate::train::run_dir::RunDir;
use crate::train::trainer::Trainer;

/// A job's model as the loop writes it: its description, its file in the run folder, and how
/// the trained module becomes a model (the EMA generator of a GAN pair, say).
pub struct JobModel<'a, M> {
    pub meta: &'a ModelMeta,
    pub file_name: &'a str,
    pub as_model: &'a dyn Fn(&M) -> Model,
}

/// Runs `trainer` with `step` to its last iteration (or until `hooks.stop`), writing into
/// `run`; returns the path of the model file (the EMA weights).
pub fn training_loop<M: Module>(
    trainer: &mut Trainer<M>,
    run: &RunDir,
    model: JobModel<M>,
    mut hooks: Hooks,
    mut step: impl FnMut(&mut Trainer<M>) -> Result<f32>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(run.dir.join("samples")).map_err(|e| EngineError::io(&run.dir, e))?;
    let path = run.dir.join(model.file_name);
    let writer = Writer { run, model, path };
    let mut evals = Evaluations::open(run, writer.model.meta, trainer.iteration)?;
    if evals.starts_with_a_point() {
        hooks.send(evals.evaluate(trainer, &writer, hooks.phase)?);
    }
    let (start, first) = (Instant::now(), trainer.iteration);
    while !trainer.done() {
        if hooks.stop.load(Ordering::Relaxed) {
            writer.checkpoint(trainer)?;
            hooks.send(TrainingEvent::Stopped {
                phase: hooks.phase,
                iteration: trainer.iteration,
            });
            return Ok(writer.path);
        }
        let loss = step(trainer)?;
        report_iteration(trainer, loss, start, first, &mut hooks);
        let (i, last) = (trainer.iteration, trainer.done());
        if due(run.checkpoint_every, i, last) {
            writer.checkpoint(trainer)?;
            hooks.send(TrainingEvent::Checkpoint {
                phase: hooks.phase,
                iteration: i,
                path: run.checkpoint(),
            });
        }
        if due(run.sample_every, i, last) {
            hooks.send(writer.preview(trainer, hooks.phase)?);
        }
        if evals.due(i, last) {
            hooks.send(evals.evaluate(trainer, &writer, hooks.phase)?);
        }
    }
    hooks.send(TrainingEvent::Saved {
        phase: hooks.phase,
        path: writer.path.clone(),
    });
    Ok(writer.path)
}

/// Whether something done every `every` iterations (0 = only at the end) is due after
/// iteration `i`.
fn due(every: u64, i: u64, last: bool) -> bool {
    last || (every > 0 && i.is_multiple_of(every))
}

/// Reports the iteration just done: its further values (stage 2's loss parts), then its loss
/// with the time so far and the time left at the rate since `start` (iteration `first`).
fn report_iteration<M: Module>(
    trainer: &Trainer<M>,
    loss: f32,
    start: Instant,
    first: u64,
    hooks: &mut Hooks,
) {
    let (i, total) = (trainer.iteration, trainer.options.iterations);
    if let Some((it, values)) = trainer.metrics.last()
        && *it + 1 == i
    {
        hooks.send(TrainingEvent::Metrics {
            phase: hooks.phase,
            iteration: i,
            values: values.clone(),
        });
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let rate = (i - first) as f64 / elapsed_s.max(1e-9);
    hooks.send(TrainingEvent::Progress {
        phase: hooks.phase,
        done: i,
        total,
        loss: Some(loss),
        elapsed_s,
        eta_s: (total - i) as f64 / rate.max(1e-9),
    });
}

/// Writes what the loop keeps: checkpoints, the model file, sample grids.
struct Writer<'a, M> {
    run: &'a RunDir,
    model: JobModel<'a, M>,
    path: PathBuf,
}

impl<M: Module> Writer<'_, M> {
    /// `m` (the EMA or the live weights) as a model with the job's description.
    fn loaded(&self, m: &M) -> LoadedModel {
        LoadedModel {
            model: (self.model.as_model)(m),
            meta: self.model.meta.clone(),
        }
    }

    /// The checkpoint, then the EMA weights as the model file.
    fn checkpoint(&self, trainer: &Trainer<M>) -> Result<()> {
        trainer.save_checkpoint(&self.run.checkpoint(), self.model.meta)?;
        self.loaded(&trainer.ema).save(&self.path, Storage::F32)
    }

    /// The EMA weights' sample grid of this iteration.
    fn preview(&self, trainer: &Trainer<M>, phase: Phase) -> Result<TrainingEvent> {
        let iteration = trainer.iteration;
        let path = self
            .run
            .dir
            .join("samples")
            .join(format!("iter-{iteration:07}.png"));
        let image = sample_grid(
            &self.loaded(&trainer.ema),
            self.run.decoder.as_deref(),
            self.run.prompts.as_deref(),
            &path,
        )?;
        Ok(TrainingEvent::Preview {
            phase,
            iteration,
            path,
            image,
        })
    }
}

/// The run's evaluation points (`eval.jsonl`), when it evaluates as it trains.
struct Evaluations<'a> {
    eval: Option<&'a TrainingEval>,
    log: PathBuf,
    points: Vec<EvalPoint>,
}

impl<'a> Evaluations<'a> {
    /// The points of `run` up to `iteration` (a resumed run drops the later ones).
    fn open(run: &'a RunDir, meta: &ModelMeta, iteration: u64) -> Result<Self> {
        let log = run.dir.join(EVAL_LOG);
        let mut points = Vec::new();
        if let Some(ev) = &run.eval {
            ev.check(meta)?;
            points = read_eval_log(&log)?;
            points.retain(|p| p.iteration <= iteration);
        }
        Ok(Self {
            eval: run.eval.as_deref(),
            log,
            points,
        })
    }

    /// A run that evaluates starts with a point of its starting weights.
    fn starts_with_a_point(&self) -> bool {
        self.eval.is_some() && self.points.is_empty()
    }

    fn due(&self, i: u64, last: bool) -> bool {
        self.eval.is_some_and(|ev| ev.due(i, last))
    }

    /// Scores the EMA and raw weights now, with the mean loss since the last point, and
    /// records the point.
    fn evaluate<M: Module>(
        &mut self,
        trainer: &Trainer<M>,
        writer: &Writer<M>,
        phase: Phase,
    ) -> Result<TrainingEvent> {
        let ev = self
            .eval
            .expect("evaluations are due only when the run evaluates");
        let i = trainer.iteration;
        let since = self.points.last().map_or(0, |p| p.iteration);
        let recent: Vec<f64> = trainer
            .losses
            .iter()
            .filter(|(it, _)| *it >= since && *it < i)
            .map(|(_, l)| *l as f64)
            .collect();
        let point = EvalPoint {
            iteration: i,
            loss: (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64),
            ema: ev.scores(&writer.loaded(&trainer.ema))?,
            raw: ev.scores(&writer.loaded(&trainer.model.valid()))?,
            samples: ev.samples,
        };
        self.points.retain(|p| p.iteration < i);
        self.points.push(point.clone());
        write_eval_log(&self.log, &self.points)?;
        Ok(TrainingEvent::Eval { phase, point })
    }
}
