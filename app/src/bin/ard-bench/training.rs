//! `ard-bench --train`: one teacher training step and one teacher-forced distillation step at
//! the shapes of `../shared/anchors/torch_speed.py`, timed on the device with the CPU time they
//! used (utilisation) and the process's peak memory; with `--torch FILE` the authors' PyTorch
//! code runs the same shapes right after each of ours, row by row and round by round, in the
//! same run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ard_engine::HostTensor;
use ard_engine::burn::tensor::Device;
use ard_engine::diffusion::{TRAIN_TIMESTEPS, alpha_bar_from_betas, linear_betas};
use ard_engine::diffusion::{noised_batch, teacher_loss_rows};
use ard_engine::distill::DistillLoss;
use ard_engine::distill::distill_loss;
use ard_engine::eval::{reference_teacher_forced_flops, student_flops, teacher_forward_flops};
use ard_engine::io::seeded_noise;
use ard_engine::model::{
    DitConfig, InitOptions, Model, StudentConfig, init_teacher, student_from_teacher,
};
use ard_engine::train::{TrainOptions, Trainer, train_workers};
use rand::Rng;

use crate::report::out;

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (USER_HZ = 100).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resets the process's peak resident set size (Linux ≥ 4.0).
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

struct Timing {
    ms_per_step: f64,
    cpu_percent: f64,
    peak_mib: f64,
}

/// How a training row is timed: `warmup` untimed steps, then the best of `repeats` runs of
/// `steps` steps.
#[derive(Clone, Copy)]
struct Plan {
    warmup: usize,
    repeats: usize,
    steps: usize,
}

fn time_steps(plan: Plan, mut step: impl FnMut()) -> Timing {
    reset_peak_memory();
    for _ in 0..plan.warmup {
        step();
    }
    let steps = plan.steps.max(1);
    let mut best = (f64::INFINITY, 0.0);
    for _ in 0..plan.repeats.max(1) {
        let (wall, cpu) = (Instant::now(), cpu_seconds().unwrap_or(0.0));
        for _ in 0..steps {
            step();
        }
        let secs = wall.elapsed().as_secs_f64();
        let used = cpu_seconds().unwrap_or(0.0) - cpu;
        if secs < best.0 {
            best = (secs, used / secs);
        }
    }
    Timing {
        ms_per_step: best.0 * 1e3 / steps as f64,
        cpu_percent: 100.0 * best.1,
        peak_mib: peak_memory_mib().unwrap_or(f64::NAN),
    }
}

fn options(batch: usize, lr: f64) -> TrainOptions {
    TrainOptions {
        batch_size: batch,
        lr,
        ..TrainOptions::paper(u64::MAX)
    }
}

/// One training step of the default Fashion-MNIST teacher (28×28×1, patch 4, hidden 64,
/// depth 4, 4 heads) at batch 64: epsilon MSE, AdamW, clip 1, EMA.
fn teacher_step(device: &Device, workers: usize, plan: Plan) -> Timing {
    let train = device.clone().autodiff();
    let dit = DitConfig::fashion_mnist();
    let Model::Teacher(model) = init_teacher(&dit, None, init(), &train).unwrap().model else {
        unreachable!()
    };
    let mut trainer = Trainer::new(model, options(64, 1e-3));
    trainer.split_for(device, dit.num_heads, dit.num_patches());
    trainer.workers = workers;
    let images = uniform(vec![1024, 1, 28, 28]);
    let alpha_bar = alpha_bar_from_betas(&linear_betas(TRAIN_TIMESTEPS));
    time_steps(plan, || {
        trainer
            .step_sharded(
                64,
                |rng| {
                    let idx: Vec<usize> = (0..64).map(|_| rng.random_range(0..1024)).collect();
                    let y: Vec<i64> = idx.iter().map(|&i| (i % 10) as i64).collect();
                    Ok(noised_batch(
                        &images.rows(&idx),
                        &y,
                        &alpha_bar,
                        10,
                        0.1,
                        rng,
                    ))
                },
                |model, b, rows| teacher_loss_rows(model, b, rows, &train),
            )
            .unwrap();
    })
}

/// One teacher-forced ARD step at the reference's 4×256 tokens (32×32×1, patch 2, hidden 64,
/// depth 4, 4 heads, N = 2) at batch 32: MSE over the 4 steps, AdamW, clip 1, EMA.
fn distill_step(device: &Device, workers: usize, plan: Plan) -> Timing {
    let train = device.clone().autodiff();
    let dit = distill_config();
    let teacher = init_teacher(&dit, None, init(), &train).unwrap();
    let Model::Student(model) = student_from_teacher(teacher, StudentConfig::new(4, 2))
        .unwrap()
        .model
    else {
        unreachable!()
    };
    let mut trainer = Trainer::new(model, options(32, 1e-4));
    trainer.split_for(device, dit.num_heads, 4 * dit.num_patches());
    trainer.workers = workers;
    let n = 256;
    let x_t = seeded_noise(vec![n, 1, 32, 32], 1);
    let anchors: Vec<HostTensor> = (2..6)
        .map(|s| seeded_noise(vec![n, 1, 32, 32], s))
        .collect();
    time_steps(plan, || {
        trainer
            .step_sharded(
                32,
                |rng| Ok((0..32).map(|_| rng.random_range(0..n)).collect::<Vec<_>>()),
                |model, idx: &Vec<usize>, rows| {
                    let idx = &idx[rows];
                    let targets: Vec<_> = anchors.iter().map(|a| a.rows(idx)).collect();
                    let y: Vec<i64> = idx.iter().map(|&i| (i % 10) as i64).collect();
                    distill_loss(
                        model,
                        &x_t.rows(idx),
                        &targets,
                        &y,
                        DistillLoss::Mse,
                        0,
                        &train,
                    )
                },
            )
            .unwrap();
    })
}

/// The distillation row's architecture: the reference's 4×256 tokens at the default width.
fn distill_config() -> DitConfig {
    DitConfig::fashion_mnist().with_image(32, 1).with_patch(2)
}

fn init() -> InitOptions {
    InitOptions {
        seed: 0,
        zero_init: false,
    }
}

fn uniform(shape: Vec<usize>) -> HostTensor {
    let noise = seeded_noise(shape, 7);
    HostTensor::new(
        noise.shape.clone(),
        noise.data.iter().map(|v| v.tanh()).collect(),
    )
}

/// The authors' code on the same shapes: `torch_speed.py ARGS`, its one line of output.
pub fn torch_line(script: &Path, args: &[&str]) -> String {
    match Command::new("python3").arg(script).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "(torch_speed.py failed: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => format!("(cannot run python3: {e})"),
    }
}

/// The milliseconds in a `torch_speed.py` line, in order (each `NUMBER ms` figure).
pub fn torch_ms(line: &str) -> Vec<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1].starts_with("ms"))
        .filter_map(|w| w[0].parse().ok())
        .collect()
}

/// Ours against theirs over several rounds, each round ours then theirs right after it (the
/// machine's speed drifts: a pair measured together shares its conditions).
#[derive(Default)]
pub struct Paired {
    ours: Vec<f64>,
    theirs: Vec<Option<f64>>,
}

impl Paired {
    /// Records one round.
    pub fn push(&mut self, ours: f64, theirs: Option<f64>) {
        self.ours.push(ours);
        self.theirs.push(theirs);
    }

    /// Best of our rounds.
    pub fn ours(&self) -> f64 {
        self.ours.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Best of their rounds, if any ran.
    pub fn theirs(&self) -> Option<f64> {
        self.theirs.iter().flatten().copied().reduce(f64::min)
    }

    /// The table cells: their best, the ratio of the bests, and each round's own ratio.
    pub fn cells(&self) -> [String; 3] {
        let Some(theirs) = self.theirs() else {
            return ["–".into(), "–".into(), "–".into()];
        };
        let rounds: Vec<String> = self
            .ours
            .iter()
            .zip(&self.theirs)
            .map(|(o, t)| t.map_or("?".into(), |t| format!("{:.2}", o / t)))
            .collect();
        [
            format!("{theirs:.1}"),
            format!("{:.2}", self.ours() / theirs),
            rounds.join(", "),
        ]
    }

    /// The FLOP cells of a pair whose sides compute `ours` and `theirs` FLOPs for the same
    /// function: both counts (GFLOP) and the ratio of time per FLOP (what is kernel, once the
    /// algorithm's difference is taken out).
    pub fn flop_cells(&self, ours: f64, theirs: f64) -> [String; 3] {
        let per_flop = self.theirs().map_or("–".into(), |t| {
            format!("{:.2}", (self.ours() / ours) / (t / theirs))
        });
        [
            format!("{:.3}", ours / 1e9),
            format!("{:.3}", theirs / 1e9),
            per_flop,
        ]
    }
}

/// The training table, with the PyTorch pair when `args.torch` is given: `args.rounds` rounds
/// per row, each ours then theirs. `--train-steps` and `--train-warmup` shorten a row for a slow
/// device (lavapipe).
pub fn training_table(device: &Device, args: &crate::Args) {
    let (rounds, torch) = (args.rounds, args.torch.as_deref());
    let workers = args.workers.unwrap_or_else(|| train_workers(device));
    out!(
        "### Training steps ({workers} worker threads, {} warm-up steps, best of {rounds} rounds)\n",
        args.train_warmup
    );
    out!(
        "| step | ours ms | CPU use | peak memory MiB | PyTorch ms (reference code) | ours / PyTorch | each round | ours GFLOP | PyTorch GFLOP | ours / PyTorch per FLOP |"
    );
    out!("|---|---|---|---|---|---|---|---|---|---|");
    type Step = fn(&Device, usize, Plan) -> Timing;
    /// Name, step, default timed steps, the script's arguments, and FLOPs (ours, theirs).
    type TrainRow<'a> = (&'a str, Step, usize, &'a [&'a str], [f64; 2]);
    // A training step's FLOPs: forward and backward, about three forwards, per image × batch.
    let (teacher, student) = (DitConfig::fashion_mnist(), distill_config());
    let s = StudentConfig::new(4, 2);
    let teacher_step_flops = 3.0 * 64.0 * teacher_forward_flops(&teacher);
    let rows: [TrainRow; 2] = [
        (
            "teacher, default model (28×28×1, patch 4, hidden 64, depth 4, batch 64)",
            teacher_step,
            10,
            &["teacher", "--batch", "64"],
            [teacher_step_flops, teacher_step_flops],
        ),
        (
            "ARD teacher-forced, 4×256 tokens (32×32×1, patch 2, hidden 64, depth 4, N = 2, batch 32)",
            distill_step,
            3,
            &["distill", "--batch", "32", "--history", "2", "--iters", "3"],
            [
                3.0 * 32.0 * student_flops(&student, &s),
                3.0 * 32.0 * reference_teacher_forced_flops(&student, &s),
            ],
        ),
    ];
    let mut lines = Vec::new();
    for (name, step, steps, torch_args, [ours_flops, theirs_flops]) in rows {
        let plan = Plan {
            warmup: args.train_warmup,
            repeats: args.repeats,
            steps: args.train_steps.unwrap_or(steps),
        };
        let mut paired = Paired::default();
        let mut best: Option<Timing> = None;
        for _ in 0..rounds.max(1) {
            let t = step(device, workers, plan);
            let theirs = torch.map(|script| {
                let line = torch_line(script, torch_args);
                let ms = torch_ms(&line).last().copied();
                lines.push(line);
                ms
            });
            paired.push(t.ms_per_step, theirs.flatten());
            if best.as_ref().is_none_or(|b| t.ms_per_step < b.ms_per_step) {
                best = Some(t);
            }
        }
        let t = best.expect("at least one round");
        let [theirs, ratio, each] = paired.cells();
        let [ours_g, theirs_g, per_flop] = paired.flop_cells(ours_flops, theirs_flops);
        out!(
            "| {name} | {:.1} | {:.0}% | {:.0} | {theirs} | {ratio} | {each} | {ours_g} | {theirs_g} | {per_flop} |",
            t.ms_per_step,
            t.cpu_percent,
            t.peak_mib
        );
    }
    out!();
    for line in lines {
        out!("- `{line}`");
    }
    out!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both figures of an inference line, in order; none from a failure line.
    #[test]
    fn torch_lines_give_their_milliseconds_in_order() {
        let line = "torch 2.15.0 threads 2 infer hidden 384 depth 12 batch 1: ARD 4-step 662.2 ms/img, teacher 25-step cfg 5911.8 ms/img";
        assert_eq!(torch_ms(line), vec![662.2, 5911.8]);
        assert_eq!(
            torch_ms("torch 2.15.0 threads 2 teacher train step batch 64: 96.2 ms"),
            vec![96.2]
        );
        assert!(torch_ms("(torch_speed.py failed: ModuleNotFoundError)").is_empty());
    }

    /// The best of each side, their ratio, and each round's own ratio (a missing PyTorch round
    /// shows as "?").
    #[test]
    fn paired_rounds_keep_each_sides_best() {
        let mut p = Paired::default();
        p.push(50.0, Some(100.0));
        p.push(40.0, None);
        p.push(60.0, Some(80.0));
        assert_eq!(p.ours(), 40.0);
        assert_eq!(p.theirs(), Some(80.0));
        assert_eq!(
            p.cells(),
            ["80.0".to_string(), "0.50".into(), "0.50, ?, 0.75".into()]
        );
        assert_eq!(Paired::default().cells(), ["–", "–", "–"].map(String::from));
    }
}
