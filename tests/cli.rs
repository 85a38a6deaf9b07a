//! `ard sample` and `ard info` on the reference files, run in-process on the CPU: the saved
//! steps reproduce the reference outputs.

use std::path::Path;

use ard_app::cli::run_args;
use ard_engine::ModelMeta;
use ard_engine::io::TensorFile;
use ard_studio::{PARITY, assert_close, reference};

fn arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn teacher_sample_reproduces_the_reference_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("steps.safetensors");
    let png = dir.path().join("final.png");
    let io = arg(&reference("ddim_io.safetensors"));
    run_args([
        "ard",
        "sample",
        "--device",
        "cpu",
        "--weights",
        &arg(&reference("dit_teacher.safetensors")),
        "--heads",
        "4",
        "--noise",
        &format!("{io}:noise"),
        "--labels-from",
        &format!("{io}:y"),
        "--steps",
        "25",
        "--cfg",
        "1.5",
        "--cfg-channels",
        "3",
        "--save-steps",
        &arg(&out),
        "--png",
        &arg(&png),
    ])
    .unwrap();
    let got = TensorFile::read(&out).unwrap();
    let want = TensorFile::read(reference("ddim_io.safetensors")).unwrap();
    let mut compared = 0;
    for key in want
        .tensors
        .keys()
        .filter(|k| k.starts_with("zt_") || k.starts_with("pred_z0_"))
    {
        assert_close(key, &got.f32(key).unwrap(), &want.f32(key).unwrap(), PARITY);
        compared += 1;
    }
    assert_eq!(compared, 50);
    assert_eq!(got.labels("y").unwrap(), want.labels("y").unwrap());
    let img = image::open(&png).unwrap();
    assert!(img.width() >= 2 * 32 && img.height() >= 32);
    assert!(image::open(dir.path().join("final.steps.png")).is_ok());
}

/// `ard sample` of the reference student from the reference noise and labels, every step saved
/// to `out`, with `extra` arguments.
fn sample_reference_student(extra: &[&str], out: &Path) -> anyhow::Result<()> {
    let io = arg(&reference("ard_io.safetensors"));
    let mut args: Vec<String> = ["ard", "sample"].map(String::from).to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend([
        "--weights".into(),
        arg(&reference("ard_student.safetensors")),
        "--heads".into(),
        "4".into(),
        "--history-layers".into(),
        "2".into(),
        "--noise".into(),
        format!("{io}:zT"),
        "--labels-from".into(),
        format!("{io}:y"),
        "--save-steps".into(),
        arg(out),
    ]);
    run_args(args)
}

#[test]
fn student_sample_reproduces_the_reference_inference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("steps.safetensors");
    sample_reference_student(&["--device", "cpu"], &out).unwrap();
    let got = TensorFile::read(&out).unwrap();
    let want = TensorFile::read(reference("ard_io.safetensors")).unwrap();
    for key in ["infer_z15", "infer_z10", "infer_z5", "infer_z0"] {
        assert_close(key, &got.f32(key).unwrap(), &want.f32(key).unwrap(), PARITY);
    }
}

#[test]
fn seeded_sampling_is_repeatable_and_labels_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let student = arg(&reference("ard_student.safetensors"));
    let run = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        run_args([
            "ard",
            "sample",
            "--device",
            "cpu",
            "--weights",
            &student,
            "--heads",
            "4",
            "--history-layers",
            "2",
            "--seed",
            seed,
            "--labels",
            "3,7,0",
            "--save-steps",
            &arg(&out),
        ])
        .unwrap();
        TensorFile::read(&out).unwrap().f32("infer_z0").unwrap()
    };
    let a = run("a.safetensors", "5");
    assert_eq!(a.shape, vec![3, 4, 32, 32]);
    assert_eq!(a.data, run("b.safetensors", "5").data);
    assert_ne!(a.data, run("c.safetensors", "6").data);

    let err = run_args([
        "ard",
        "sample",
        "--device",
        "cpu",
        "--weights",
        &student,
        "--heads",
        "4",
        "--history-layers",
        "2",
        "--labels",
        "12",
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("unknown class 12"), "{err:#}");
}

#[test]
fn info_reads_reference_and_own_files() {
    let info = |args: &[&str]| {
        let mut all = vec!["ard", "info"];
        all.extend(args);
        ard_app::cli::run_args_output(all).unwrap()
    };
    let teacher = info(&[&arg(&reference("dit_teacher.pt"))]);
    for line in [
        "format:      PyTorch",
        "kind:        teacher",
        "classes:     ",
    ] {
        assert!(teacher.contains(line), "missing `{line}` in:\n{teacher}");
    }
    let student = info(&[
        &arg(&reference("ard_student.safetensors")),
        "--history-layers",
        "2",
    ]);
    for line in [
        "kind:        student",
        "outputs:     infer_z15, infer_z10, infer_z5, infer_z0",
    ] {
        assert!(student.contains(line), "missing `{line}` in:\n{student}");
    }
    let err = run_args(["ard", "info", "/nonexistent.safetensors"]).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent.safetensors"));
}

#[test]
fn a_prompt_picks_the_class_and_the_png_records_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(dir.path());
    let png = dir.path().join("boots.png");
    let sample = |prompt: &str| {
        run_args([
            "ard",
            "sample",
            "--device",
            "cpu",
            "--weights",
            &arg(&teacher),
            "--prompt",
            prompt,
            "--batch",
            "2",
            "--steps",
            "3",
            "--seed",
            "11",
            "--png",
            &arg(&png),
        ])
    };
    sample("a pair of ankle boots").unwrap();
    let settings = ard_engine::io::png_settings::read_settings(&std::fs::read(&png).unwrap())
        .unwrap()
        .expect("settings in the PNG");
    assert_eq!(settings.labels, [9, 9]);
    assert_eq!(settings.class_name.as_deref(), Some("Ankle boot"));
    assert_eq!(settings.prompt.as_deref(), Some("a pair of ankle boots"));
    assert_eq!((settings.seed, settings.steps), (11, 3));
    let err = sample("a unicorn").unwrap_err();
    assert!(format!("{err:#}").contains("no class"), "{err:#}");
}

/// `--attention` picks our WGSL kernel on wgpu (f32 or f16 buffers, both within the reference
/// tolerance) and is refused on the CPU.
#[test]
fn the_attention_flag_runs_our_kernel_and_refuses_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let run = |device: &str, attention: &str, out: &Path| {
        sample_reference_student(&["--device", device, "--attention", attention], out)
    };
    let out = dir.path().join("steps.safetensors");
    let err = run("cpu", "wgsl", &out).unwrap_err().to_string();
    assert!(err.contains("needs --device wgpu"), "{err}");
    assert!(!out.exists());
    if !ard_studio::wgpu_runs("--attention on wgpu") {
        return;
    }
    use ard_engine::dispatch::{KernelSet, attention_calls};
    let wgsl_calls = || attention_calls()[KernelSet::Wgsl as usize];
    let want = TensorFile::read(reference("ard_io.safetensors")).unwrap();
    // f16 buffers: 5e-6 measured on lavapipe (f32: 3e-7); the outputs pass through the gated
    // residuals, so the rounding of q, k, v shrinks.
    for attention in ["wgsl", "wgsl-f16"] {
        let before = wgsl_calls();
        run("wgpu", attention, &out).unwrap();
        // The flag is not ignored: our kernel computed the student's attention (burn's would
        // meet the same tolerance).
        assert!(
            wgsl_calls() > before,
            "--attention {attention}: our kernel never ran"
        );
        let got = TensorFile::read(&out).unwrap();
        for key in ["infer_z15", "infer_z10", "infer_z5", "infer_z0"] {
            let err = assert_close(key, &got.f32(key).unwrap(), &want.f32(key).unwrap(), PARITY);
            eprintln!("--attention {attention}, {key}: {err:.2e}");
        }
    }
    let before = wgsl_calls();
    run("wgpu", "burn", &out).unwrap();
    assert_eq!(wgsl_calls(), before, "--attention burn ran our kernel");
}

/// A tiny named 10-class (Fashion-MNIST) teacher; returns its path.
fn tiny_teacher(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("fashion.safetensors");
    ard_studio::tiny_teacher_model(10, Some(ard_engine::conditioning::fashion_mnist()), 1)
        .save(&path, ard_engine::io::Storage::F32)
        .unwrap();
    path
}

/// Inputs that used to pass silently are refused with a message saying what is wrong, and
/// nothing is written.
#[test]
fn bad_sample_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = arg(&tiny_teacher(dir.path()));
    let png = dir.path().join("out.png");
    let sample = |extra: &[&str]| {
        let mut args: Vec<String> = ["ard", "sample", "--device", "cpu", "--weights", &teacher]
            .map(String::from)
            .to_vec();
        args.extend(["--steps", "2", "--png", &arg(&png)].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        run_args(args).map_err(|e| format!("{e:#}"))
    };
    let err = sample(&["--prompt", "boots", "--batch", "0"]).unwrap_err();
    assert!(
        err.contains("--batch") && err.contains("at least 1"),
        "{err}"
    );
    for cfg in ["NaN", "inf", "-1"] {
        let err = sample(&["--labels", "3", &format!("--cfg={cfg}")]).unwrap_err();
        assert!(
            err.contains("--cfg") && err.contains("finite"),
            "{cfg}: {err}"
        );
    }
    assert!(!png.exists(), "a refused run wrote its PNG");
    // The defaults still sample.
    sample(&["--prompt", "boots", "--batch", "2"]).unwrap();
    assert!(png.exists());
}

/// A missing file's OS error is said once, even with the whole error chain printed.
#[test]
fn a_missing_file_says_its_os_error_once() {
    let err = run_args([
        "ard",
        "sample",
        "--device",
        "cpu",
        "--weights",
        "/nonexistent/teacher.safetensors",
        "--labels",
        "0",
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent/teacher.safetensors"), "{msg}");
    assert_eq!(msg.matches("No such file or directory").count(), 1, "{msg}");
}

/// Weights holding NaN or infinity are refused at load, naming the tensor, instead of
/// sampling black images.
#[test]
fn non_finite_weights_are_refused_by_ard_sample() {
    use ard_engine::io::{SafetensorsWriter, Storage};
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(dir.path());
    let file = TensorFile::read(&teacher).unwrap();
    let mut w = SafetensorsWriter::new();
    ModelMeta::read(&file).unwrap().unwrap().write_to(&mut w);
    for key in file.tensors.keys() {
        let mut t = file.f32(key).unwrap();
        if key == "blocks.0.mlp.fc1.weight" {
            t.data[7] = f32::NAN;
        }
        w.add_f32(key, &t, Storage::F32);
    }
    let bad = dir.path().join("nan.safetensors");
    w.write(&bad).unwrap();
    let png = dir.path().join("out.png");
    let err = run_args([
        "ard",
        "sample",
        "--device",
        "cpu",
        "--weights",
        &arg(&bad),
        "--labels",
        "1",
        "--png",
        &arg(&png),
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("blocks.0.mlp.fc1.weight") && msg.contains("NaN"),
        "{msg}"
    );
    assert!(!png.exists());
}
