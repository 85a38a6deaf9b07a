//! The app's Distillation tab under egui_kittest, with the engine thread on the CPU: a tiny
//! distillation and a tiny adversarial fine-tuning run to completion, and the tab and the CLI
//! training the same student from the same defaults.

mod app_support;

use std::path::{Path, PathBuf};

use app_support::{app_harness, loaded, tiny_models, wait_for};
use ard_app::gui::Tab;
use ard_engine::studio::TeacherSource;
use ard_engine::{Device, ModelKind};
use egui_kittest::kittest::Queryable;

#[test]
fn the_training_panel_runs_a_tiny_distillation_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher.clone(), student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    harness.state_mut().tab = Tab::Train;
    {
        let t = &mut harness.state_mut().training;
        t.teacher_file = teacher.display().to_string();
        t.distill.history_layers = 1;
        t.trajectories.count = 12;
        t.distill.train.batch_size = 4;
        t.distill.train.iterations = 6;
        t.preview_every = 3;
        t.run_dir = dir.path().join("run").display().to_string();
    }
    harness.step();
    assert_eq!(
        harness.state().training.request().teacher,
        TeacherSource::File(teacher)
    );
    harness.get_by_label("Start / resume").click();
    wait_for(&mut harness, "the training run", 300, |a| {
        !a.training.running
    });
    let t = &harness.state().training;
    assert!(t.result.is_some(), "status: {}", t.status);
    assert_eq!((t.progress[1].done, t.progress[1].total), (12, 12));
    assert_eq!((t.progress[2].done, t.progress[2].total), (6, 6));
    assert_eq!(t.losses[2].len(), 6);
    assert!(t.losses[2].iter().all(|p| p[1].is_finite()));
    assert!(t.preview.is_some());
    harness.get_by_label("Load result").click();
    wait_for(&mut harness, "the distilled student", 60, |a| {
        loaded(a, "student.safetensors")
            && a.generator.as_ref().unwrap().history_layers == Some(1)
            && a.notice
                .as_ref()
                .is_some_and(|n| format!("{n:?}").contains("loaded"))
            && a.training.result.is_some()
    });
    assert_eq!(
        harness.state().generator.as_ref().unwrap().kind,
        ModelKind::Student
    );
}

/// An ImageFolder tree of 8×8 grey pictures, one folder per class of [`tiny_models`].
fn tiny_image_folder(dir: &Path) -> PathBuf {
    let root = dir.join("real");
    for (c, name) in ["circle", "square", "cross"].iter().enumerate() {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..3u8 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([((x as u8 * 30) ^ (y as u8 * 20)).wrapping_add(c as u8 * 70 + i)])
            });
            img.save(root.join(name).join(format!("{i}.png"))).unwrap();
        }
    }
    root
}

#[test]
fn the_training_panel_fine_tunes_a_student_adversarially() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let real = tiny_image_folder(dir.path());
    let mut harness = app_harness(vec![teacher.clone()], dir.path());
    harness.state_mut().tab = Tab::Train;
    {
        let t = &mut harness.state_mut().training;
        t.teacher_file = teacher.display().to_string();
        t.trajectories.count = 8;
        t.adversarial = true;
        t.gan_from_file = true;
        t.gan_student = student.display().to_string();
        t.gan_data = real.display().to_string();
        t.gan.train.iterations = 4;
        t.gan.train.batch_size = 2;
        t.gan.warmup = 1;
        t.preview_every = 2;
        t.evaluate = false;
        t.run_dir = dir.path().join("run").display().to_string();
    }
    harness.step();
    harness.get_by_label("Start / resume").click();
    wait_for(&mut harness, "the GAN run", 300, |a| !a.training.running);
    let t = &harness.state().training;
    let result = t
        .result
        .clone()
        .unwrap_or_else(|| panic!("status: {}", t.status));
    assert!(
        result.ends_with("run/gan-n2/student.safetensors"),
        "{result:?}"
    );
    assert!(
        !t.progress[2].started,
        "distillation is skipped for a student file"
    );
    assert_eq!((t.progress[3].done, t.progress[3].total), (4, 4));
    assert_eq!(t.losses[3].len(), 4);
    assert_eq!(t.gan_metrics.len(), 4);
    assert_eq!(
        t.gan_metrics[0].1[3], 0.0,
        "no adversarial weight in the warm-up"
    );
    assert!(t.gan_metrics[3].1.iter().all(|v| v.is_finite()));
    assert!(
        t.preview
            .as_ref()
            .is_some_and(|(caption, _)| caption.starts_with("GAN"))
    );
    // The tuned student says what it is.
    let tuned = ard_engine::LoadedModel::load(
        &result,
        &ard_engine::model::LoadOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    assert!(tuned.meta.student.unwrap().adversarial);
}

/// The training tab and the `ard` commands start from the same defaults (one source in the
/// engine), so the tab's run and `ard trajectories` + `ard distill` given only the same sizes
/// write the same student, byte for byte.
#[test]
fn the_training_tab_and_the_cli_distil_the_same_student() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, _) = tiny_models(dir.path());
    let mut panel = ard_app::gui::TrainingPanel::new(dir.path().to_path_buf());
    panel.teacher_file = teacher.display().to_string();
    panel.trajectories.count = 10;
    panel.distill.train.iterations = 4;
    panel.run_dir = dir.path().join("tab").display().to_string();
    let request = panel.request();
    let stop = std::sync::atomic::AtomicBool::new(false);
    ard_engine::studio::run_pipeline(&request, &Device::flex(), &stop, &|e| {
        if let ard_engine::studio::TrainingEvent::Failed { message } = e {
            panic!("{message}")
        }
    })
    .unwrap();

    let (traj, out) = (dir.path().join("cli-traj"), dir.path().join("cli-student"));
    let (teacher_s, traj_s, out_s) = (
        teacher.display().to_string(),
        traj.display().to_string(),
        out.display().to_string(),
    );
    ard_app::cli::run_args([
        "ard",
        "trajectories",
        "--teacher",
        &teacher_s,
        "--out",
        &traj_s,
        "--count",
        "10",
        "--device",
        "cpu",
    ])
    .unwrap();
    ard_app::cli::run_args([
        "ard",
        "distill",
        "--teacher",
        &teacher_s,
        "--trajectories",
        &traj_s,
        "--out",
        &out_s,
        "--iterations",
        "4",
        "--device",
        "cpu",
    ])
    .unwrap();

    let n = request.distill.history_layers;
    let tab = std::fs::read(
        dir.path()
            .join(format!("tab/student-n{n}/student.safetensors")),
    );
    let cli = std::fs::read(out.join("student.safetensors")).unwrap();
    assert!(
        tab.unwrap() == cli,
        "the tab and the CLI trained different students"
    );

    // The same set with another teacher file is refused, naming the teacher to make one with.
    let other = dir.path().join("other-teacher.safetensors");
    let mut bytes = std::fs::read(&teacher).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&other, bytes).unwrap();
    let other_s = other.display().to_string();
    let err = ard_app::cli::run_args([
        "ard",
        "distill",
        "--teacher",
        &other_s,
        "--trajectories",
        &traj_s,
        "--out",
        &dir.path().join("other").display().to_string(),
        "--iterations",
        "1",
        "--device",
        "cpu",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("another teacher") && err.contains("other-teacher.safetensors"),
        "{err}"
    );
}
