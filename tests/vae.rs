//! The SD VAE (AutoencoderKL) against diffusers' vectors (tests/fixtures/sd-vae-reference): decode
//! and encode with relative error below 1e-4 on the CPU, and on wgpu where an adapter exists;
//! the architecture read from `config.json` or from the shapes; bad files refused clearly.

use std::path::{Path, PathBuf};

use ard_engine::io::TensorFile;
use ard_engine::vae::{AutoencoderKL, VaeConfig};
use ard_engine::{Device, HostTensor};
use ard_studio::{PARITY, assert_close};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd-vae-reference")
        .join(name)
}

fn io() -> TensorFile {
    TensorFile::read(fixture("vae_io.safetensors")).unwrap()
}

fn parity_on(device: &Device) {
    let vae = AutoencoderKL::from_file(&fixture("vae.safetensors"), device).unwrap();
    assert_eq!(
        vae.config.norm_num_groups, 8,
        "config.json beside the weights is read"
    );
    let io = io();
    let latent = io.f32("latent").unwrap().to_device::<4>(device).unwrap();
    let decoded = HostTensor::from_tensor(vae.decode(latent));
    assert_close("decoded", &decoded, &io.f32("decoded").unwrap(), PARITY);
    let image = io.f32("image").unwrap().to_device::<4>(device).unwrap();
    let posterior = vae.encode(image);
    let mean = HostTensor::from_tensor(posterior.mean);
    let logvar = HostTensor::from_tensor(posterior.logvar);
    assert_close(
        "posterior_mean",
        &mean,
        &io.f32("posterior_mean").unwrap(),
        PARITY,
    );
    assert_close(
        "posterior_logvar",
        &logvar,
        &io.f32("posterior_logvar").unwrap(),
        PARITY,
    );
}

#[test]
fn decode_and_encode_match_diffusers_on_cpu() {
    parity_on(&Device::flex());
}

#[test]
fn decode_and_encode_match_diffusers_on_wgpu() {
    if !ard_studio::wgpu_runs("VAE parity on wgpu") {
        return;
    }
    parity_on(&ard_engine::device::DeviceChoice::Wgpu.device().unwrap());
}

#[test]
fn scaled_latents_divide_by_the_scaling_factor() {
    let device = Device::flex();
    let vae = AutoencoderKL::from_file(&fixture("vae.safetensors"), &device).unwrap();
    assert_eq!(vae.config.scaling_factor, 0.18215);
    let io = io();
    let latent = io.f32("latent").unwrap();
    let scaled = HostTensor::new(
        latent.shape.clone(),
        latent.data.iter().map(|v| v * 0.18215).collect(),
    );
    let decoded =
        HostTensor::from_tensor(vae.decode_scaled(scaled.to_device::<4>(&device).unwrap()));
    assert_close("decoded", &decoded, &io.f32("decoded").unwrap(), PARITY);
}

fn copy_without_config(dir: &Path) -> PathBuf {
    let path = dir.join("vae.safetensors");
    std::fs::copy(fixture("vae.safetensors"), &path).unwrap();
    path
}

#[test]
fn architecture_from_shapes_without_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_without_config(dir.path());
    let file = TensorFile::read(&path).unwrap();
    let config = VaeConfig::for_weights(&path, &file).unwrap();
    assert_eq!(config.block_out_channels, vec![32, 32, 64, 64]);
    assert_eq!((config.layers_per_block, config.latent_channels), (2, 4));
    assert_eq!(
        config.norm_num_groups, 32,
        "shapes do not hold the group count: SD's"
    );
    assert_eq!(config.downsampling(), 8);
    // The file loads with SD's 32 groups; with the right group count written beside it, it
    // decodes as diffusers does.
    AutoencoderKL::from_file(&path, &Device::flex()).unwrap();
    std::fs::copy(fixture("config.json"), dir.path().join("config.json")).unwrap();
    let vae = AutoencoderKL::from_file(&path, &Device::flex()).unwrap();
    let latent = io()
        .f32("latent")
        .unwrap()
        .to_device::<4>(&Device::flex())
        .unwrap();
    let decoded = HostTensor::from_tensor(vae.decode(latent));
    assert_close("decoded", &decoded, &io().f32("decoded").unwrap(), PARITY);
}

#[test]
fn bad_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    // A DiT teacher is not a VAE.
    let teacher = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ard-reference/dit_teacher.safetensors");
    let err = AutoencoderKL::from_file(&teacher, &device)
        .expect_err("a DiT is not a VAE")
        .to_string();
    assert!(err.contains("not a VAE"), "{err}");
    // Truncated.
    let bytes = std::fs::read(fixture("vae.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = AutoencoderKL::from_file(&cut, &device)
        .expect_err("truncated")
        .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    // A config.json whose group count does not divide the widths.
    let path = copy_without_config(dir.path());
    let config = std::fs::read_to_string(fixture("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"norm_num_groups\": 8", "\"norm_num_groups\": 5"),
    )
    .unwrap();
    let err = AutoencoderKL::from_file(&path, &device)
        .expect_err("5 groups")
        .to_string();
    assert!(err.contains("groups"), "{err}");
    // A config.json with other widths than the weights: the shape error names the tensor.
    std::fs::write(dir.path().join("config.json"), config.replace("32,", "16,")).unwrap();
    let err = AutoencoderKL::from_file(&path, &device)
        .expect_err("wrong widths")
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn ard_decode_and_encode_write_the_reference_tensors() {
    use ard_app::cli::run_args;
    let dir = tempfile::tempdir().unwrap();
    let (decoded, png, encoded) = (
        dir.path().join("decoded.safetensors"),
        dir.path().join("decoded.png"),
        dir.path().join("encoded.safetensors"),
    );
    let (vae, io_path) = (
        arg(&fixture("vae.safetensors")),
        arg(&fixture("vae_io.safetensors")),
    );
    let decode = |latent: &str| {
        run_args([
            "ard",
            "decode",
            "--device",
            "cpu",
            "--vae",
            &vae,
            "--latent",
            latent,
            "--out",
            &arg(&decoded),
            "--png",
            &arg(&png),
        ])
    };
    decode(&format!("{io_path}:latent")).unwrap();
    let want = io();
    let got = TensorFile::read(&decoded).unwrap();
    assert_close(
        "decoded",
        &got.f32("decoded").unwrap(),
        &want.f32("decoded").unwrap(),
        PARITY,
    );
    let grid = image::open(&png).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (258, 128),
        "two 64×64 images shown at 2×, side by side with a 2-pixel gap"
    );
    run_args([
        "ard",
        "encode",
        "--device",
        "cpu",
        "--vae",
        &vae,
        "--image",
        &format!("{io_path}:image"),
        "--out",
        &arg(&encoded),
    ])
    .unwrap();
    let got = TensorFile::read(&encoded).unwrap();
    for key in ["posterior_mean", "posterior_logvar"] {
        assert_close(key, &got.f32(key).unwrap(), &want.f32(key).unwrap(), PARITY);
    }
    // Wrong inputs: the image as a latent, a missing key.
    let err = decode(&format!("{io_path}:image")).unwrap_err().to_string();
    assert!(err.contains("[batch, 4, height, width]"), "{err}");
    let err = decode(&format!("{io_path}:nope")).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

/// A fresh random teacher of `dit` written to `path`.
fn save_teacher(dit: &ard_engine::DitConfig, path: &Path) {
    let options = ard_engine::model::InitOptions {
        seed: 2,
        zero_init: false,
    };
    ard_engine::model::init_teacher(dit, None, options, &Device::flex())
        .unwrap()
        .save(path, ard_engine::io::Storage::F32)
        .unwrap();
}

#[test]
fn ard_sample_decodes_a_latent_model_through_the_vae() {
    use ard_app::cli::run_args;
    let dir = tempfile::tempdir().unwrap();
    // A latent teacher: 8×8×4 latents, the VAE's 64×64 images.
    let weights = dir.path().join("latent.safetensors");
    save_teacher(&ard_studio::tiny_dit(3).with_image(8, 4), &weights);
    let png = dir.path().join("out.png");
    let sample = |vae: &str| {
        run_args([
            "ard",
            "sample",
            "--device",
            "cpu",
            "--weights",
            &arg(&weights),
            "--seed",
            "1",
            "--labels",
            "0,2",
            "--steps",
            "2",
            "--vae",
            vae,
            "--png",
            &arg(&png),
        ])
    };
    sample(&arg(&fixture("vae.safetensors"))).unwrap();
    let grid = image::open(&png).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (258, 128),
        "two decoded 64×64 images at 2× (the 8×8 latents would be shown at 96×96)"
    );
    let strip = image::open(png.with_extension("steps.png")).unwrap();
    assert_eq!(
        (strip.width(), strip.height()),
        (3 * 130 - 2, 2 * 130 - 2),
        "noise and two decoded steps per row, one row per image"
    );
    // A VAE whose latents do not fit the model is refused before sampling.
    let other = ard_studio::tiny_dit(3).with_image(8, 1);
    let grey = dir.path().join("grey.safetensors");
    save_teacher(&other, &grey);
    let err = run_args([
        "ard",
        "sample",
        "--device",
        "cpu",
        "--weights",
        &arg(&grey),
        "--seed",
        "1",
        "--labels",
        "0",
        "--vae",
        &arg(&fixture("vae.safetensors")),
        "--png",
        &arg(&png),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("4 channels"), "{err}");
}
