//! `ard-bench`: speed measured in one run on one machine, printed as Markdown.
//!
//! ```text
//! ard-bench [--device cpu|wgpu|all] [--repeats N] [--models default|dit-s2|all|none]
//!           [--no-teacher] [--no-attention] [--train] [--workers N]
//!           [--batches 1,16] [--torch torch_speed.py [--rounds R]]
//! ```
//!
//! - the device's matrix-multiply rate (burn matmul, square f32);
//! - our WGSL attention (`shaders/attention.wgsl`) against `burn::tensor::module::attention` on
//!   the same adapter, for the default model's shapes and DiT-XL/2's (256 tokens per step,
//!   4 steps, 16 heads × 72): ARD's cached step (the last step's queries against all four steps'
//!   keys), the teacher-forced block-causal pass, and unmasked attention;
//! - end to end: the ARD student's 4 steps against the teacher's 25-step guided DDIM, images per
//!   second at batch 1 and 16, and the share of the matmul rate the student's FLOPs reach
//!   (each student timing paired with a matmul-rate measurement taken just before it);
//! - with `--train`: a teacher training step and a teacher-forced distillation step
//!   (`training.rs`);
//! - with `--imagenet DIR`: DiT-XL/2 at 256 px, load time and peak memory of its 2.7 GB of
//!   weights, seconds per teacher and student step (`scale.rs`);
//! - with `--vae-256`: the SD VAE's decode and encode at 256 px;
//! - with `--text`: a prompt's encoding by the shipped text encoder (`text.rs`);
//! - with `--torch FILE`: the authors' PyTorch code (`../shared/anchors/torch_speed.py`) on the
//!   same shapes, in the same run, beside each training and DiT-S/2 inference row: with
//!   `--rounds R`, each row R times, ours then theirs, the best of each kept and every round's
//!   ratio printed.

mod report;
mod scale;
mod text;
mod training;

use std::time::{Duration, Instant};

use ard_engine::burn::tensor::module::attention;
use ard_engine::burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use ard_engine::device::{DeviceChoice, wgpu_adapter_name};
use ard_engine::diffusion::DdimOptions;
use ard_engine::diffusion::{SampleRequest, sample};
use ard_engine::eval::{ddim_flops, reference_student_flops, student_flops};
use ard_engine::io::seeded_noise;
use ard_engine::model::LoadedModel;
use ard_engine::model::Precision as ModelPrecision;
use ard_engine::model::{DitConfig, StudentConfig};
use ard_engine::model::{InitOptions, init_teacher, student_from_teacher};
use ard_engine::ops::{AttentionMask, AttentionShape};
use ard_engine::wgsl::{AttentionKernel, Precision};
use clap::Parser;
use report::out;

#[derive(Parser)]
#[command(
    name = "ard-bench",
    about = "ARD Studio benchmarks (Markdown on stdout)"
)]
struct Args {
    /// cpu, wgpu or all.
    #[arg(long, default_value = "all")]
    device: String,
    /// Timed repetitions of each measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// End-to-end models: default, dit-s2, all or none.
    #[arg(long, default_value = "all")]
    models: String,
    /// Time only the students end to end (for profiling; no speed-up column).
    #[arg(long)]
    no_teacher: bool,
    /// Skip the attention table (wgpu).
    #[arg(long)]
    no_attention: bool,
    /// Also time training steps (teacher and teacher-forced distillation).
    #[arg(long)]
    train: bool,
    /// Timed steps of each training row (default: 10 for the teacher, 3 for distillation).
    #[arg(long)]
    train_steps: Option<usize>,
    /// Untimed steps before each training row's timing (shader compilation, autotuning).
    #[arg(long, default_value_t = 2)]
    train_warmup: usize,
    /// Worker threads of a training step (default: one per core on the CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// DiT-XL/2 at 256 px: load, memory and step times, with random weights kept in this
    /// folder (written once, 2.7 GB).
    #[arg(long)]
    imagenet: Option<std::path::PathBuf>,
    /// (internal) Measure one device for `--imagenet` in this process.
    #[arg(long, hide = true)]
    probe_scale: Option<std::path::PathBuf>,
    /// Precisions of the --imagenet rows (comma-separated: f32, f16, bf16).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16")]
    precision: Vec<ModelPrecision>,
    /// With --imagenet: load time and memory only, no steps.
    #[arg(long)]
    load_only: bool,
    /// The SD VAE at 256 px: decode and encode times.
    #[arg(long)]
    vae_256: bool,
    /// Prompt encoding by the shipped text encoder (CPU).
    #[arg(long)]
    text: bool,
    /// Also write the report (Markdown, headed by this command) to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// The authors' speed anchor (`torch_speed.py`), run on the same shapes for comparison.
    #[arg(long)]
    torch: Option<std::path::PathBuf>,
    /// Batch sizes of the end-to-end rows (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batches: Vec<usize>,
    /// Rounds of each row paired with `--torch` (ours, then theirs; the best of each is kept).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// Best of `repeats` timings of `f` (after one warm-up call).
fn best(repeats: usize, mut f: impl FnMut()) -> Duration {
    f();
    (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

/// Sustained matmul rate: 1024² f32 products chained for at least a second (a short burst
/// would catch a turbo clock the model's longer runs do not get), best of `repeats`.
fn matmul_gflops(device: &Device, repeats: usize) -> f64 {
    let n: usize = 1024;
    let a = Tensor::<2>::random([n, n], Distribution::Default, device);
    let b = Tensor::<2>::random([n, n], Distribution::Default, device);
    let chain = |reps: usize| {
        let mut c = a.clone().matmul(b.clone());
        for _ in 1..reps {
            c = c.matmul(b.clone()) * 1e-3;
        }
        let _ = c.sum().into_scalar::<f32>();
        sync(device);
    };
    chain(1);
    (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            let mut products = 0;
            while start.elapsed() < Duration::from_secs(1) {
                chain(4);
                products += 4;
            }
            2.0 * (n * n * n * products) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

struct AttentionCase {
    name: &'static str,
    heads: usize,
    batch: usize,
    tokens: usize,
    steps: usize,
    head_dim: usize,
}

/// burn's attention on `device`, ms per call, with an optional block-causal mask.
fn burn_attention_ms(
    device: &Device,
    bh: usize,
    tq: usize,
    tk: usize,
    d: usize,
    causal_tokens: Option<usize>,
    repeats: usize,
) -> f64 {
    let q = Tensor::<4>::random([1, bh, tq, d], Distribution::Default, device);
    let k = Tensor::<4>::random([1, bh, tk, d], Distribution::Default, device);
    let v = Tensor::<4>::random([1, bh, tk, d], Distribution::Default, device);
    let mask = causal_tokens.map(|t| {
        let blocked: Vec<bool> = (0..tq * tk).map(|e| (e % tk) / t > (e / tk) / t).collect();
        Tensor::<4, Bool>::from_data(TensorData::new(blocked, [1, 1, tq, tk]), device)
    });
    let calls = 10;
    let t = best(repeats, || {
        let mut out = None;
        for _ in 0..calls {
            out = Some(attention(
                q.clone(),
                k.clone(),
                v.clone(),
                mask.clone(),
                None,
                Default::default(),
            ));
        }
        let _ = out.unwrap().sum().into_scalar::<f32>();
        sync(device);
    });
    t.as_secs_f64() * 1e3 / calls as f64
}

fn attention_table(device: &Device, repeats: usize) {
    let Ok(kernel) = AttentionKernel::on_default_adapter() else {
        out!("(no wgpu adapter: the WGSL attention needs one)\n");
        return;
    };
    out!("### Attention: ours (WGSL) vs burn's, same adapter\n");
    let f16 = kernel.supports_f16();
    out!("| shapes | case | ours ms | ours, f16 buffers ms | burn ms | burn / ours |");
    out!("|---|---|---|---|---|---|");
    let cases = [
        AttentionCase {
            name: "default model (batch 16, 4 heads × 16, 49 tokens/step)",
            heads: 4,
            batch: 16,
            tokens: 49,
            steps: 4,
            head_dim: 16,
        },
        AttentionCase {
            name: "DiT-XL/2 (batch 1, 16 heads × 72, 256 tokens/step)",
            heads: 16,
            batch: 1,
            tokens: 256,
            steps: 4,
            head_dim: 72,
        },
    ];
    for c in cases {
        let bh = c.heads * c.batch;
        let all = c.tokens * c.steps;
        let last = c.steps - 1;
        let rows: [(&str, usize, usize, AttentionMask, Option<usize>); 3] = [
            (
                "cached step 4 (block-causal, KV cache)",
                c.tokens,
                all,
                AttentionMask::BlockCausal {
                    tokens_per_step: c.tokens,
                    q_step_offset: last,
                },
                None,
            ),
            (
                "teacher-forced block-causal",
                all,
                all,
                AttentionMask::BlockCausal {
                    tokens_per_step: c.tokens,
                    q_step_offset: 0,
                },
                Some(c.tokens),
            ),
            ("unmasked", all, all, AttentionMask::None, None),
        ];
        for (case, tq, tk, mask, causal) in rows {
            let shape = AttentionShape {
                bh,
                tq,
                tk,
                head_dim: c.head_dim,
            };
            let calls = 10;
            let time = |precision| {
                (0..repeats.max(1))
                    .map(|_| {
                        kernel
                            .time_resident(shape, mask, precision, calls)
                            .expect("kernel")
                    })
                    .min()
                    .unwrap()
                    .as_secs_f64()
                    * 1e3
                    / calls as f64
            };
            let ours = time(Precision::F32);
            let ours_f16 = if f16 {
                format!("{:.3}", time(Precision::F16))
            } else {
                "(no f16)".to_string()
            };
            let theirs = burn_attention_ms(device, bh, tq, tk, c.head_dim, causal, repeats);
            out!(
                "| {} | {case} | {ours:.3} | {ours_f16} | {theirs:.3} | {:.2}x |",
                c.name,
                theirs / ours
            );
        }
    }
    out!();
}

fn models(dit: &DitConfig, history: usize, device: &Device) -> (LoadedModel, LoadedModel) {
    let teacher = init_teacher(
        dit,
        None,
        InitOptions {
            seed: 0,
            zero_init: false,
        },
        device,
    )
    .unwrap();
    let student = student_from_teacher(
        teacher.copy_to(device).unwrap(),
        StudentConfig::new(4, history),
    )
    .unwrap();
    (teacher, student)
}

/// The end-to-end table on `device`, with the rows against PyTorch when `args.torch` is given.
fn end_to_end(device: &Device, label: &str, args: &Args) {
    let which = args.models.as_str();
    if which == "none" {
        return;
    }
    out!("### End to end on {label}\n");
    out!(
        "| model | batch | teacher 25-step guided ms/img | ARD 4-step ms/img | speed-up | ARD images/s | ARD GFLOP/s | share of matmul rate |"
    );
    out!("|---|---|---|---|---|---|---|---|");
    let configs = [
        (
            "default (hidden 64, depth 4, 28×28×1, N=2)",
            DitConfig::fashion_mnist(),
            2,
        ),
        (
            "DiT-S/2 (hidden 384, depth 12, 32×32×4, N=3)",
            DitConfig::dit_s_2(),
            3,
        ),
    ];
    // Rows against the authors' code: (what, batch, ours and theirs per round, both FLOPs).
    let mut against = Vec::new();
    let mut lines = Vec::new();
    for (name, dit, history) in configs {
        let wanted = match which {
            "all" => true,
            "dit-s2" => name.starts_with("DiT-S/2"),
            "default" => name.starts_with("default"),
            _ => false,
        };
        if !wanted {
            continue;
        }
        // The authors' anchor runs DiT-S/2's shapes only.
        let torch = args
            .torch
            .as_deref()
            .filter(|_| name.starts_with("DiT-S/2"));
        let models = models(&dit, history, device);
        let s_cfg = StudentConfig::new(4, history);
        for &batch in &args.batches {
            let row = time_row(
                device, &dit, &s_cfg, &models, batch, args, torch, &mut lines,
            );
            print_row(
                name,
                batch,
                &row,
                student_flops(&dit, &s_cfg),
                args.no_teacher,
            );
            if torch.is_some() {
                let flops = [
                    student_flops(&dit, &s_cfg),
                    reference_student_flops(&dit, &s_cfg),
                ];
                against.push(("ARD 4-step", batch, row.ard, flops));
                if !args.no_teacher {
                    let flops = [ddim_flops(&dit, 25, true); 2];
                    against.push(("teacher 25-step guided DDIM", batch, row.guided, flops));
                }
            }
        }
    }
    out!();
    print_against(against, args.rounds, lines);
}

/// One model at one batch: the ARD student and the guided teacher, each side's rounds paired
/// with the authors' code when `torch` is given, and the student's share of the matmul rate.
struct Row {
    ard: training::Paired,
    guided: training::Paired,
    share: f64,
}

#[allow(clippy::too_many_arguments)]
fn time_row(
    device: &Device,
    dit: &DitConfig,
    s_cfg: &StudentConfig,
    (teacher, student): &(LoadedModel, LoadedModel),
    batch: usize,
    args: &Args,
    torch: Option<&std::path::Path>,
    lines: &mut Vec<String>,
) -> Row {
    let repeats = args.repeats;
    let req = SampleRequest {
        prompts: None,
        noise: seeded_noise(dit.batch_shape(batch), 1),
        labels: (0..batch as i64)
            .map(|i| i % dit.num_classes as i64)
            .collect(),
        ddim: DdimOptions::default(),
    };
    let run_once = |m: &LoadedModel| {
        let start = Instant::now();
        sample(m, &req, device, |_| {}).unwrap();
        sync(device);
        start.elapsed().as_secs_f64() * 1e3 / batch as f64
    };
    let run = |m: &LoadedModel| {
        best(repeats, || {
            sample(m, &req, device, |_| {}).unwrap();
            sync(device);
        })
        .as_secs_f64()
            * 1e3
            / batch as f64
    };
    // The machine's speed drifts (shared cores): each student timing is paired with a
    // matmul-rate measurement taken right before it, and the share is the median of the
    // pairs' ratios. With `torch`, each round of ours is followed by the authors' code
    // on the same batch.
    let mut shares = Vec::new();
    let (mut ard, mut guided) = (training::Paired::default(), training::Paired::default());
    for _ in 0..args.rounds.max(1) {
        run_once(student);
        let mut ard_ms = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            let rate = matmul_gflops(device, 1);
            let ms = run_once(student);
            let gflops = student_flops(dit, s_cfg) / 1e9 / (ms / 1e3);
            shares.push(gflops / rate);
            ard_ms = ard_ms.min(ms);
        }
        let teacher_ms = (!args.no_teacher).then(|| run(teacher));
        let theirs = torch.map(|script| {
            let reps = repeats.to_string();
            let line = training::torch_line(
                script,
                &["infer", "--batch", &batch.to_string(), "--reps", &reps],
            );
            let ms = training::torch_ms(&line);
            lines.push(line);
            ms
        });
        let theirs = |i: usize| theirs.as_ref().and_then(|ms| ms.get(i).copied());
        ard.push(ard_ms, theirs(0));
        if let Some(teacher_ms) = teacher_ms {
            guided.push(teacher_ms, theirs(1));
        }
    }
    shares.sort_by(f64::total_cmp);
    let share = shares[shares.len() / 2];
    Row { ard, guided, share }
}

/// A row of the end-to-end table; `flops`: the student's per image.
fn print_row(name: &str, batch: usize, row: &Row, flops: f64, no_teacher: bool) {
    let ard_ms = row.ard.ours();
    let (teacher_col, speed_up) = if no_teacher {
        ("–".to_string(), "–".to_string())
    } else {
        let teacher_ms = row.guided.ours();
        (
            format!("{teacher_ms:.1}"),
            format!("{:.1}x", teacher_ms / ard_ms),
        )
    };
    let gflops = flops / 1e9 / (ard_ms / 1e3);
    out!(
        "| {name} | {batch} | {teacher_col} | {ard_ms:.2} | {speed_up} | {:.1} | {gflops:.1} | {:.0}% |",
        1e3 / ard_ms,
        100.0 * row.share
    );
}

/// The rows against the authors' code, with both sides' FLOPs, and the lines their script
/// printed.
fn print_against(
    against: Vec<(&str, usize, training::Paired, [f64; 2])>,
    rounds: usize,
    lines: Vec<String>,
) {
    if against.is_empty() {
        return;
    }
    out!(
        "#### DiT-S/2 against the authors' PyTorch code (ms/img, best of {rounds} rounds, each ours then theirs)\n"
    );
    out!(
        "| row | batch | ours | PyTorch | ours / PyTorch | each round | ours GFLOP/img | PyTorch GFLOP/img | ours / PyTorch per FLOP |"
    );
    out!("|---|---|---|---|---|---|---|---|---|");
    for (what, batch, paired, [ours_flops, theirs_flops]) in against {
        let [theirs, ratio, each] = paired.cells();
        let [ours_g, theirs_g, per_flop] = paired.flop_cells(ours_flops, theirs_flops);
        out!(
            "| {what} | {batch} | {:.1} | {theirs} | {ratio} | {each} | {ours_g} | {theirs_g} | {per_flop} |",
            paired.ours()
        );
    }
    out!();
    for line in lines {
        out!("- PyTorch, DiT-S/2 shapes: `{line}`");
    }
    out!();
}

fn main() {
    let args = Args::parse();
    run(&args);
    if let Some(path) = &args.out
        && args.probe_scale.is_none()
        && let Err(e) = report::write_to(path)
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) {
    if let Some(path) = &args.probe_scale {
        let choice = args.device.parse().expect("one device");
        scale::probe(path, choice, args.precision[0], args.load_only);
        return;
    }
    let which: Vec<DeviceChoice> = match args.device.as_str() {
        "all" => vec![DeviceChoice::Cpu, DeviceChoice::Wgpu],
        other => vec![other.parse().unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        })],
    };
    out!(
        "# ard-bench\n\nthreads: {}; wgpu adapter: {}\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        wgpu_adapter_name().unwrap_or_else(|| "none".into())
    );
    if let Some(dir) = &args.imagenet {
        scale::scale_table(dir, &which, &args.precision, args.load_only);
    }
    if args.vae_256 {
        scale::vae_table(&which, args.repeats);
    }
    if args.text {
        text::text_table(args.repeats);
    }
    if args.imagenet.is_some() || args.vae_256 {
        return;
    }
    for choice in which {
        let device = match choice.device() {
            Ok(d) => d,
            Err(e) => {
                out!("## {choice}: skipped ({e})\n");
                continue;
            }
        };
        out!("## {}\n", choice.describe());
        let matmul = matmul_gflops(&device, args.repeats);
        out!("matmul rate (1024², f32, burn, sustained 1 s): {matmul:.1} GFLOP/s\n");
        if choice == DeviceChoice::Wgpu && !args.no_attention {
            attention_table(&device, args.repeats);
        }
        if args.train {
            training::training_table(&device, args);
        }
        end_to_end(&device, &choice.describe(), args);
    }
}
