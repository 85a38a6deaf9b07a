//! `ard-bench --imagenet DIR`: the paper's scale, DiT-XL/2 at 256 px (32×32×4 latents, 675M
//! parameters). Random weights are written to `DIR` once (2.7 GB); then a child process per
//! device loads them and measures, so that its peak memory is the load's and the steps' alone:
//! load time and peak resident memory against the file's size, seconds per guided teacher DDIM
//! step (batch 1: one forward of 2 rows, conditional and unconditional) and per ARD student step
//! (N = 6, the paper's XL setting; the KV cache grows by 256 tokens a step).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ard_engine::HostTensor;
use ard_engine::burn::tensor::Device;
use ard_engine::device::DeviceChoice;
use ard_engine::diffusion::{DdimOptions, SampleRequest, sample};
use ard_engine::io::{Storage, seeded_noise};
use ard_engine::model::{
    DitConfig, InitOptions, LoadOptions, LoadedModel, ParamSource, Precision, StudentConfig,
    init_teacher, student_from_teacher,
};
use ard_engine::vae::{AutoencoderKL, VaeConfig};

use crate::training::{peak_memory_mib, reset_peak_memory};

use crate::report::out;

/// ARD's history layers for DiT-XL/2 (the paper's N = 6 of 28).
const XL_HISTORY_LAYERS: usize = 6;

/// The DiT-XL/2 weights file in `dir`, written with fresh random weights if absent.
fn weights(dir: &Path) -> PathBuf {
    let path = dir.join("dit-xl-2-random.safetensors");
    if !path.exists() {
        eprintln!("writing random DiT-XL/2 weights to {}", path.display());
        std::fs::create_dir_all(dir).expect("create the weights folder");
        let options = InitOptions {
            seed: 0,
            zero_init: false,
        };
        init_teacher(&DitConfig::dit_xl_2(), None, options, &Device::flex())
            .and_then(|m| m.save(&path, Storage::F32))
            .expect("write DiT-XL/2 weights");
    }
    path
}

/// The table, one row per device and precision, each measured by a child process
/// (`--probe-scale`); `load_only` skips the steps.
pub fn scale_table(
    dir: &Path,
    devices: &[DeviceChoice],
    precisions: &[Precision],
    load_only: bool,
) {
    let path = weights(dir);
    let size_mib = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    out!("## DiT-XL/2 at 256 px (32×32×4 latents), random weights\n");
    out!("weights file: {size_mib:.0} MiB (f32 safetensors)\n");
    out!(
        "| device | precision | load s | memory after load MiB | peak during load MiB | peak / file | teacher guided step s | ARD step s (1, 2, 3, 4) | ARD 4 steps s | peak while sampling MiB |"
    );
    out!("|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("own path");
    for (choice, precision) in devices
        .iter()
        .flat_map(|c| precisions.iter().map(move |p| (c, p)))
    {
        let out = Command::new(&exe)
            .arg("--probe-scale")
            .arg(&path)
            .args(["--device", &choice.to_string()])
            .args(["--precision", &precision.to_string()])
            .args(load_only.then_some("--load-only"))
            .output()
            .expect("run the probe");
        let line = String::from_utf8_lossy(&out.stdout);
        match line.lines().find(|l| l.starts_with('|')) {
            Some(row) => out!("{row}"),
            None => out!(
                "| {choice} | {precision} | failed: {} |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    }
    out!();
}

/// Seconds between successive calls of the returned closure (the first from `start`).
fn laps() -> impl FnMut() -> f64 {
    let mut last = Instant::now();
    move || {
        let now = Instant::now();
        let s = (now - last).as_secs_f64();
        last = now;
        s
    }
}

/// The child's side: loads `path` on `choice` in `precision` and prints one Markdown row.
pub fn probe(path: &Path, choice: DeviceChoice, precision: Precision, load_only: bool) {
    let device = choice.device().expect("device");
    if let Err(e) = precision.check(&device) {
        out!("| {} | {precision} | {e} |", choice.describe());
        return;
    }
    // Memory before the load: the program, and the device's own set-up as it stands now
    // (the peak is reset first, so a spike while setting up does not count).
    reset_peak_memory();
    let base = peak_memory_mib().unwrap_or(0.0);
    let start = Instant::now();
    let teacher =
        LoadedModel::load_in(path, &LoadOptions::default(), precision, &device).expect("load");
    device.sync().expect("sync");
    let load_s = start.elapsed().as_secs_f64();
    let peak_load = peak_memory_mib().unwrap_or(0.0);
    let after_load = current_memory_mib().unwrap_or(0.0);
    let file_mib = std::fs::metadata(path).map_or(1.0, |m| m.len() as f64 / 1048576.0);
    let dit = teacher.meta.dit.clone();
    let load_columns = format!(
        "| {} | {precision} | {load_s:.1} | {after_load:.0} | {peak_load:.0} | {:.2} (above the {base:.0} before: {:.2}) |",
        choice.describe(),
        peak_load / file_mib,
        (peak_load - base) / file_mib,
    );
    if load_only {
        out!("{load_columns} – | – | – | – |");
        return;
    }
    reset_peak_memory();
    // The teacher: three guided DDIM steps; the first warms up (kernel compilation on wgpu).
    let req = |steps| SampleRequest {
        prompts: None,
        noise: seeded_noise(dit.batch_shape(1), 1),
        labels: vec![207],
        ddim: DdimOptions {
            steps,
            ..DdimOptions::default()
        },
    };
    let mut lap = laps();
    let mut teacher_steps = Vec::new();
    sample(&teacher, &req(3), &device, |_| teacher_steps.push(lap())).expect("teacher");
    let teacher_s = teacher_steps[1..]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    // The student made from it: one warm-up run, then one timed run, step by step.
    let student =
        student_from_teacher(teacher, StudentConfig::new(4, XL_HISTORY_LAYERS)).expect("student");
    sample(&student, &req(25), &device, |_| {}).expect("student warm-up");
    let mut lap = laps();
    let mut student_steps = Vec::new();
    sample(&student, &req(25), &device, |_| student_steps.push(lap())).expect("student");
    let peak_sampling = peak_memory_mib().unwrap_or(0.0);
    let steps: Vec<String> = student_steps.iter().map(|s| format!("{s:.2}")).collect();
    out!(
        "{load_columns} {teacher_s:.2} | {} | {:.2} | {peak_sampling:.0} |",
        steps.join(", "),
        student_steps.iter().sum::<f64>(),
    );
}

/// Resident memory now, in MiB.
fn current_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `--vae-256`: the SD VAE (its architecture, random weights) at 256 px on each device, as
/// latent models use it: decoding one 32×32×4 latent (each step the app shows, each final
/// image), and encoding one image (`ard encode --folder`). Best of `repeats` after a warm-up.
pub fn vae_table(devices: &[DeviceChoice], repeats: usize) {
    out!("## SD VAE at 256 px (its architecture, random weights)\n");
    out!("| device | decode 32×32×4 → 256² s | encode 256² → 32×32×4 s |");
    out!("|---|---|---|");
    for choice in devices {
        let Ok(device) = choice.device() else {
            continue;
        };
        let options = InitOptions {
            seed: 0,
            zero_init: false,
        };
        let mut r = ParamSource::fresh(options, &device);
        let vae = AutoencoderKL::load(&mut r, VaeConfig::sd()).expect("SD VAE");
        let latent = seeded_noise(vec![1, 4, 32, 32], 1);
        let image = seeded_noise(vec![1, 3, 256, 256], 2);
        let time = |f: &dyn Fn()| {
            f();
            (0..repeats.max(1))
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let decode = time(&|| {
            vae.decode_host(&latent, &device).expect("decode");
        });
        let encode = time(&|| {
            let x = image.to_device::<4>(&device).expect("image");
            let _ = HostTensor::from_tensor(vae.encode(x).mean);
        });
        out!("| {} | {decode:.2} | {encode:.2} |", choice.describe());
    }
    out!();
}
