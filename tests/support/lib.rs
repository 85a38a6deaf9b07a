//! Shared helpers of the integration tests in `tests/`: fixture paths, reference tensors and
//! the relative-error check.

use std::path::PathBuf;

use ard_engine::diffusion::SampleRequest;
use ard_engine::io::TensorFile;
use ard_engine::model::{LoadOptions, LoadedModel};
use ard_engine::{Device, HostTensor};

/// `tests/fixtures/ard-reference/NAME` (copied from the reference implementation's vectors).
pub fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ard-reference")
        .join(name)
}

/// Reads a reference tensor file.
pub fn reference_file(name: &str) -> TensorFile {
    TensorFile::read(reference(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The tests' tiny teacher architecture: 8×8 grey images, patch 4 (4 tokens), hidden 16,
/// one block, 2 heads, `classes` classes.
pub fn tiny_dit(classes: usize) -> ard_engine::DitConfig {
    ard_engine::DitConfig::fashion_mnist()
        .with_image(8, 1)
        .with_hidden(16)
        .with_depth(1)
        .with_heads(2)
        .with_classes(classes)
}

/// A fresh teacher of [`tiny_dit`] with every parameter random (`zero_init: false`).
pub fn tiny_teacher_model(classes: usize, names: Option<Vec<String>>, seed: u64) -> LoadedModel {
    ard_engine::model::init_teacher(
        &tiny_dit(classes),
        names,
        ard_engine::model::InitOptions {
            seed,
            zero_init: false,
        },
        &Device::flex(),
    )
    .unwrap()
}

/// How the reference weight files load (they carry no metadata): 4 heads, N = 2.
pub fn reference_options() -> LoadOptions {
    LoadOptions {
        num_heads: Some(4),
        history_layers: Some(2),
    }
}

/// Loads the reference weight file `name` on `device`.
pub fn load_reference(name: &str, device: &Device) -> LoadedModel {
    LoadedModel::load(reference(name), &reference_options(), device)
        .unwrap_or_else(|e| panic!("reference weights {name}: {e}"))
}

/// The reference inference run: `ard_io.safetensors`'s noise `zT` and labels `y`, default DDIM
/// options (unused by the student).
pub fn reference_student_request() -> SampleRequest {
    let io = reference_file("ard_io.safetensors");
    SampleRequest {
        prompts: None,
        noise: io.f32("zT").unwrap(),
        labels: io.labels("y").unwrap(),
        ddim: Default::default(),
    }
}

/// Relative error below which a float32 result counts as the reference's (wgpu, the VAE).
pub const PARITY: f64 = 1e-4;

/// The same on the CPU: ≈6× the worst error measured against the reference vectors (3.1e-7),
/// so a slip such as LayerNorm's ε at 1e-5 instead of 1e-6 fails.
pub const CPU_PARITY: f64 = 2e-6;

/// Whether this run is CI (`CI=true`), where everything the tests need is installed.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says on stderr that `what` is skipped and why. On CI, where lavapipe and the data are
/// installed, a skip means something broke: it fails instead.
pub fn skip(what: &str, why: &str) {
    assert!(!on_ci(), "{what} would be skipped on CI: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

/// Whether a test that needs a wgpu adapter runs here; if not, [`skip`]s it (`ARD_SKIP_WGPU=1`
/// skips on purpose; on CI that fails too).
pub fn wgpu_runs(what: &str) -> bool {
    if std::env::var_os("ARD_SKIP_WGPU").is_some() {
        skip(what, "ARD_SKIP_WGPU is set");
        return false;
    }
    if ard_engine::device::wgpu_adapter_name().is_none() {
        skip(
            what,
            "no wgpu adapter (install mesa-vulkan-drivers for lavapipe)",
        );
        return false;
    }
    true
}

/// A fresh seed for a random test (printed, so a failure can be replayed with `ARD_TEST_SEED`).
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("ARD_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (ARD_TEST_SEED={seed} replays it)");
    seed
}

/// Asserts `‖got − want‖ / ‖want‖ < tol`, NaN failing; returns the error.
pub fn assert_close(name: &str, got: &HostTensor, want: &HostTensor, tol: f64) -> f64 {
    assert_eq!(got.shape, want.shape, "{name}: shape");
    assert!(
        got.data.iter().all(|v| v.is_finite()),
        "{name}: non-finite values"
    );
    let err = got.relative_error(want);
    assert!(err < tol, "{name}: relative error {err:.3e} ≥ {tol:.0e}");
    err
}

/// `n` 8×8 grey images of two classes ("left", "top"): a bright left half or a bright top half,
/// plus noise.
pub fn toy_data(n: usize) -> ard_engine::data::Dataset {
    let noise = ard_engine::io::seeded_noise(vec![n, 1, 8, 8], 5);
    let mut data = Vec::new();
    for i in 0..n {
        for y in 0..8 {
            for x in 0..8 {
                let on = if i % 2 == 0 { x < 4 } else { y < 4 };
                data.push(if on { 0.8 } else { -0.8 } + 0.1 * noise.data[i * 64 + y * 8 + x]);
            }
        }
    }
    ard_engine::data::Dataset {
        images: HostTensor::new(vec![n, 1, 8, 8], data),
        labels: (0..n as i64).map(|i| i % 2).collect(),
        class_names: vec!["left".into(), "top".into()],
    }
}

/// A tiny teacher for the 8×8 toy data: patch 4, hidden 16, depth 2, 2 heads.
pub fn toy_teacher_options(
    train: ard_engine::train::TrainOptions,
) -> ard_engine::jobs::TeacherOptions {
    ard_engine::jobs::TeacherOptions {
        patch_size: 4,
        hidden_size: 16,
        depth: 2,
        num_heads: 2,
        label_dropout: 0.1,
        train,
    }
}

/// The toy teacher's network ([`toy_teacher_options`]' architecture for 8×8 grey images of two
/// classes), initialised with `seed`, on `device`.
pub fn toy_teacher_dit(seed: u64, device: &Device) -> ard_engine::model::Dit {
    let teacher = ard_engine::model::init_teacher(
        &toy_teacher_options(toy_train_options(1)).architecture(8, 1, 2),
        None,
        ard_engine::model::InitOptions {
            seed,
            zero_init: false,
        },
        device,
    )
    .unwrap();
    let ard_engine::Model::Teacher(dit) = teacher.model else {
        unreachable!("init_teacher makes a teacher")
    };
    dit
}

/// The toy runs' optimisation: batch 4, lr 1e-3 (constant), EMA 0.99, clip 1, seed 7.
pub fn toy_train_options(iterations: u64) -> ard_engine::train::TrainOptions {
    ard_engine::train::TrainOptions {
        iterations,
        batch_size: 4,
        lr: 1e-3,
        ema_decay: 0.99,
        grad_clip: 1.0,
        seed: 7,
        lr_schedule: ard_engine::train::LrSchedule::Constant,
    }
}

/// A run folder checkpointing every 2 iterations, without sample grids or evaluation.
pub fn toy_run_dir(dir: &std::path::Path, resume: bool) -> ard_engine::train::RunDir {
    ard_engine::train::RunDir {
        prompts: None,
        dir: dir.to_path_buf(),
        checkpoint_every: 2,
        sample_every: 0,
        resume,
        eval: None,
        decoder: None,
    }
}

/// Every tensor of a weight file, by name, as f32.
pub fn file_weights(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let f = TensorFile::read(path).unwrap();
    f.tensors
        .keys()
        .map(|k| (k.clone(), f.f32(k).unwrap().data))
        .collect()
}
