//! The helpers the app's kittest suites share (`tests/app.rs`, `tests/app_training.rs`): tiny
//! models, a harness around the app with the engine on the CPU, and waiting for its thread.
#![allow(dead_code)] // each suite uses a part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ard_app::gui::{AppOptions, StudioApp};
use ard_engine::Device;
use ard_engine::io::Storage;
use ard_engine::model::{
    DitConfig, InitOptions, StudentConfig, init_teacher, student_from_teacher,
};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// A tiny teacher (8×8 grey, 3 named classes) and its 4-step student with N = 2, written to
/// `dir`; returns (teacher, student).
pub fn tiny_models(dir: &Path) -> (PathBuf, PathBuf) {
    let dit = DitConfig::fashion_mnist()
        .with_image(8, 1)
        .with_patch(2)
        .with_hidden(32)
        .with_depth(2)
        .with_heads(2)
        .with_classes(3);
    let names = ["circle", "square", "cross"].map(String::from).to_vec();
    let teacher = init_teacher(
        &dit,
        Some(names),
        InitOptions {
            seed: 3,
            zero_init: false,
        },
        &Device::flex(),
    )
    .unwrap();
    let teacher_path = dir.join("teacher.safetensors");
    teacher.save(&teacher_path, Storage::F32).unwrap();
    let student = student_from_teacher(teacher, StudentConfig::new(4, 2)).unwrap();
    let student_path = dir.join("student.safetensors");
    student.save(&student_path, Storage::F32).unwrap();
    (teacher_path, student_path)
}

pub fn app_harness(models: Vec<PathBuf>, runs: &Path) -> Harness<'static, StudioApp> {
    let runs = runs.to_path_buf();
    Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| {
            StudioApp::with_context(
                AppOptions {
                    device: Device::flex(),
                    device_label: "CPU (burn flex) — test".into(),
                    models,
                    runs_dir: runs,
                },
                &cc.egui_ctx,
            )
        })
}

/// Steps the app until `done` holds (the engine works on its own thread meanwhile).
pub fn wait_for(
    harness: &mut Harness<'static, StudioApp>,
    what: &str,
    timeout_s: u64,
    done: impl Fn(&StudioApp) -> bool,
) {
    let start = Instant::now();
    loop {
        harness.step();
        if done(harness.state()) {
            harness.step();
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(timeout_s),
            "timed out waiting for {what}; notice: {:?}; run: {:?}",
            harness.state().notice,
            harness.state().run.as_ref().map(|r| r.status())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Generate button (the tab of the same name is not a button).
pub fn click_generate(harness: &mut Harness<'static, StudioApp>) {
    harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "Generate")
        .click();
}

pub fn loaded(app: &StudioApp, source: &str) -> bool {
    app.generator.as_ref().is_some_and(|m| m.source == source)
}
