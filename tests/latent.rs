//! Latent models end to end, as at ImageNet scale: an official-format `.pt` teacher through
//! `ard trajectories` and `ard distill`; a latent student's sample grids decoded through the VAE;
//! an ImageFolder encoded into a latent folder (`ard encode --folder`), split across workers,
//! resumed, and used as the adversarial stage's real data.

use std::path::{Path, PathBuf};

use ard_app::cli::run_args;
use ard_engine::Device;
use ard_engine::data::{Split, list_image_folder, load_centre_crop, load_dataset};
use ard_engine::io::{HostTensor, TensorFile};
use ard_engine::vae::AutoencoderKL;
use ard_studio::{reference, tiny_dit};

fn vae_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd-vae-reference/vae.safetensors")
}

fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn run(args: &[&str]) {
    let mut all = vec!["ard"];
    all.extend_from_slice(args);
    run_args(all).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
}

#[test]
fn a_pt_latent_teacher_makes_trajectories_and_is_distilled() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = arg(&reference("dit_teacher.pt"));
    let (set, out) = (dir.path().join("set"), dir.path().join("run"));
    let common = ["--device", "cpu", "--heads", "4"];
    let mut a = vec!["trajectories", "--teacher", &teacher, "--out"];
    let set_s = arg(&set);
    a.extend([
        set_s.as_str(),
        "--count",
        "2",
        "--batch",
        "2",
        "--steps",
        "8",
    ]);
    a.extend(common);
    run(&a);
    let shard = TensorFile::read(set.join("shard-00000.safetensors")).unwrap();
    assert_eq!(shard.f32("x_T").unwrap().shape, vec![2, 4, 32, 32]);
    let out_s = arg(&out);
    let mut a = vec!["distill", "--teacher", &teacher, "--trajectories"];
    a.extend([set_s.as_str(), "--out", &out_s, "--iterations", "2"]);
    a.extend([
        "--batch",
        "2",
        "--sample-every",
        "0",
        "--history-layers",
        "1",
    ]);
    a.extend(common);
    run(&a);
    let student = out.join("student.safetensors");
    let png = dir.path().join("s.png");
    run(&[
        "sample",
        "--device",
        "cpu",
        "--weights",
        &arg(&student),
        "--labels",
        "3",
        "--png",
        &arg(&png),
    ]);
    assert!(png.exists() && out.join("samples/iter-0000002.png").exists());
}

/// A fresh random latent teacher (8×8×4 latents: the fixture VAE's 64×64 images).
fn latent_teacher(dir: &Path) -> PathBuf {
    let path = dir.join("latent-teacher.safetensors");
    let options = ard_engine::model::InitOptions {
        seed: 3,
        zero_init: false,
    };
    ard_engine::model::init_teacher(
        &tiny_dit(2).with_image(8, 4),
        None,
        options,
        &Device::flex(),
    )
    .unwrap()
    .save(&path, ard_engine::io::Storage::F32)
    .unwrap();
    path
}

/// An ImageFolder of two classes, three images each, of assorted sizes.
fn image_folder(root: &Path) {
    for (c, class) in ["n01440764", "n01443537"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..3u32 {
            let (w, h) = (64 + 16 * i, 96 - 16 * i);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 3) as u8, (y * 2 + 40 * c as u32) as u8, (i * 70) as u8])
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

#[test]
fn an_image_folder_becomes_latents_for_the_adversarial_stage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("train");
    image_folder(&root);
    let vae = arg(&vae_fixture());
    let encode = |out: &Path, part: &str| {
        run(&[
            "encode",
            "--device",
            "cpu",
            "--vae",
            &vae,
            "--folder",
            &arg(&root),
            "--out",
            &arg(out),
            "--size",
            "64",
            "--shard-size",
            "4",
            "--batch",
            "3",
            "--shard",
            part,
        ])
    };
    let whole = dir.path().join("latents");
    encode(&whole, "0/1");
    let data = load_dataset(&arg(&whole), 8, 4, Split::Train).unwrap();
    assert_eq!(data.images.shape, vec![6, 4, 8, 8]);
    assert_eq!(data.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(data.class_names, vec!["n01440764", "n01443537"]);
    // Each latent is one draw of its image's posterior, × 0.18215.
    let model = AutoencoderKL::from_file(&vae_fixture(), &Device::flex()).unwrap();
    let (_, items) = list_image_folder(&root, None).unwrap();
    for (g, (path, _)) in items.iter().enumerate() {
        let image = load_centre_crop(path, 64).unwrap();
        let posterior = model.encode(image.to_device::<3>(&Device::flex()).unwrap().unsqueeze());
        let mean = HostTensor::from_tensor(posterior.mean);
        let std = HostTensor::from_tensor((posterior.logvar * 0.5).exp());
        let got = data.images.rows(&[g]);
        let z: Vec<f64> = (got.data.iter().zip(&mean.data).zip(&std.data))
            .map(|((l, m), s)| ((l / 0.18215 - m) / s) as f64)
            .collect();
        let rms = (z.iter().map(|v| v * v).sum::<f64>() / z.len() as f64).sqrt();
        assert!(
            (0.6..1.5).contains(&rms) && z.iter().all(|v| v.abs() < 6.0),
            "image {g}: standardised draw rms {rms}"
        );
    }
    // Two workers write the same shards as one; a lost shard is written again, identically.
    let split = dir.path().join("split");
    encode(&split, "1/2");
    assert!(!split.join("shard-00000.safetensors").exists());
    encode(&split, "0/2");
    for s in ["shard-00000.safetensors", "shard-00001.safetensors"] {
        let bytes = std::fs::read(whole.join(s)).unwrap();
        assert_eq!(bytes, std::fs::read(split.join(s)).unwrap(), "{s}");
    }
    std::fs::remove_file(whole.join("shard-00001.safetensors")).unwrap();
    let err = load_dataset(&arg(&whole), 8, 4, Split::Train).unwrap_err();
    assert!(err.to_string().contains("not written yet"), "{err}");
    encode(&whole, "0/1");
    assert_eq!(
        std::fs::read(whole.join("shard-00001.safetensors")).unwrap(),
        std::fs::read(split.join("shard-00001.safetensors")).unwrap()
    );
    // Latents of another shape are refused for a model; other settings, for the folder.
    let err = load_dataset(&arg(&whole), 16, 4, Split::Train).unwrap_err();
    assert!(err.to_string().contains("4×8×8"), "{err}");
    let mut a = vec!["encode", "--device", "cpu", "--vae", &vae, "--folder"];
    let (root_s, whole_s) = (arg(&root), arg(&whole));
    a.extend([root_s.as_str(), "--out", &whole_s, "--size", "32"]);
    let mut all = vec!["ard"];
    all.extend(a);
    let err = run_args(all).unwrap_err();
    assert!(format!("{err:#}").contains("another encoding"), "{err:#}");

    // A latent teacher's distillation with its previews decoded, then stage 2 on the latents.
    let teacher = arg(&latent_teacher(dir.path()));
    let (set, out, gan) = (
        arg(&dir.path().join("set")),
        arg(&dir.path().join("run")),
        arg(&dir.path().join("gan")),
    );
    run(&[
        "trajectories",
        "--device",
        "cpu",
        "--teacher",
        &teacher,
        "--out",
        &set,
        "--count",
        "4",
        "--steps",
        "8",
    ]);
    run(&[
        "distill",
        "--device",
        "cpu",
        "--teacher",
        &teacher,
        "--trajectories",
        &set,
        "--out",
        &out,
        "--iterations",
        "1",
        "--batch",
        "2",
        "--history-layers",
        "1",
        "--vae",
        &vae,
    ]);
    let grid = image::open(dir.path().join("run/samples/iter-0000001.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (4 * 130 - 2, 2 * 130 - 2),
        "a row per class, the 4 steps decoded to 64×64 images shown at 2× (the 8×8 latents \
         would be 96×96 cells)"
    );
    run(&[
        "finetune-gan",
        "--device",
        "cpu",
        "--student",
        &format!("{out}/student.safetensors"),
        "--teacher",
        &teacher,
        "--trajectories",
        &set,
        "--data",
        &whole_s,
        "--out",
        &gan,
        "--iterations",
        "1",
        "--batch",
        "2",
    ]);
    assert!(dir.path().join("gan/student.safetensors").exists());
}
