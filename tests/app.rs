//! The desktop app under egui_kittest (rendered with wgpu; lavapipe in CI), with the engine
//! thread computing on the CPU: streamed steps on the canvas, a bad dropped file, PNG settings,
//! the default models, and snapshots of the canvas and the controls (the Distillation tab's runs
//! are in `app_training.rs`).

mod app_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use app_support::{app_harness, click_generate, loaded, tiny_models, wait_for};
use ard_app::gui::{StudioApp, Tab, default_models};
use ard_engine::io::Storage;
use ard_engine::model::{DitConfig, InitOptions, Precision, init_teacher};
use ard_engine::studio::{Event, GenerateRequest, Request, Role, Studio, StudioOptions};
use ard_engine::{Device, ModelKind, ModelMeta};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

#[test]
fn the_engine_streams_each_step_before_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let studio = Studio::spawn(StudioOptions {
        device: Device::flex(),
        device_label: "cpu".into(),
        initial_models: vec![teacher, student],
        notify: Arc::new(|| {}),
    });
    studio.send(Request::Generate(GenerateRequest {
        id: 7,
        labels: vec![0, 2],
        seed: 1,
        cfg_scale: 1.5,
        teacher_steps: 25,
        compare_teacher: true,
    }));
    let mut generator_steps = Vec::new();
    let mut teacher_steps = Vec::new();
    let mut done_after = None;
    while teacher_steps.len() < 4 {
        match studio.events.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::Step(s) if s.source == Role::Generator => {
                assert_eq!(s.id, 7);
                assert_eq!(s.predictions.len(), 2);
                assert_eq!(s.inputs.len(), 2);
                assert!(s.difference.is_none());
                generator_steps.push(s.step);
            }
            Event::Step(s) => {
                let diff = s.difference.expect("teacher steps carry the difference");
                assert!(diff.iter().all(|(rmse, _)| rmse.is_finite()));
                teacher_steps.push(s.name);
            }
            Event::Done { id, images, .. } => {
                assert_eq!(id, 7);
                assert_eq!(images.len(), 2);
                done_after = Some(generator_steps.len());
            }
            Event::GenerateFailed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
    assert_eq!(generator_steps, [0, 1, 2, 3]);
    assert_eq!(done_after, Some(4), "every step arrives before Done");
    // The teacher's estimates at the student's anchors (25-step DDIM, K = 4).
    assert_eq!(
        teacher_steps,
        ["pred_z0_15", "pred_z0_10", "pred_z0_5", "pred_z0_0"]
    );
}

/// Cancel stops a generation between steps: the engine answers `Cancelled`, never `Done`,
/// and the steps it sent are fewer than the run's.
#[test]
fn cancel_stops_a_generation_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, _) = tiny_models(dir.path());
    let studio = Studio::spawn(StudioOptions {
        device: Device::flex(),
        device_label: "cpu".into(),
        initial_models: vec![teacher],
        notify: Arc::new(|| {}),
    });
    // A teacher as the generator, 1000 DDIM steps: far longer than the Cancel takes to arrive.
    studio.send(Request::Generate(GenerateRequest {
        id: 9,
        labels: vec![0; 16],
        seed: 1,
        cfg_scale: 1.5,
        teacher_steps: 1000,
        compare_teacher: false,
    }));
    let mut steps = 0;
    loop {
        match studio
            .events
            .recv_timeout(Duration::from_secs(120))
            .unwrap()
        {
            Event::Step(s) => {
                assert_eq!((s.id, s.total), (9, 1000));
                steps += 1;
                if steps == 1 {
                    studio.send(Request::Cancel);
                }
            }
            Event::Cancelled { id } => {
                assert_eq!(id, 9);
                break;
            }
            Event::Done { .. } => panic!("the run finished despite Cancel"),
            Event::GenerateFailed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
    assert!(steps < 1000, "{steps} steps arrived");
    // The engine is free again: a new generation runs to its end.
    studio.send(Request::Generate(GenerateRequest {
        id: 10,
        labels: vec![1],
        seed: 2,
        cfg_scale: 1.0,
        teacher_steps: 2,
        compare_teacher: false,
    }));
    loop {
        match studio.events.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::Done { id, images, .. } => {
                assert_eq!((id, images.len()), (10, 1));
                break;
            }
            Event::GenerateFailed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
}

#[test]
fn generate_shows_every_step_on_the_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running)
    });
    let run = harness.state().run.as_ref().unwrap();
    assert_eq!(run.steps.len(), 4);
    assert_eq!(run.teacher_steps.len(), 4);
    assert_eq!(run.final_images.len(), 4, "default batch of 4");
    for k in 1..=4 {
        harness.get_by_label(&format!("step {k} prediction"));
        harness.get_by_label(&format!("step {k} input"));
    }
    assert_eq!(
        harness
            .query_all_by_label_contains("teacher pred_z0_")
            .count(),
        4
    );
    // The canvas grid shows the newest step's images, one per batch item.
    for i in 1..=4 {
        harness.get_by_label(&format!("image {i} · infer_z0"));
    }
    harness.get_by_label_contains("Device: CPU");
    // A click on an image zooms it and shows its trajectory.
    harness.get_by_label("image 2 · infer_z0").click();
    harness.run_steps(2);
    let run = harness.state().run.as_ref().unwrap();
    assert_eq!(run.selected, 1);
    assert_eq!(
        run.zoom.as_ref().map(|z| z.caption.as_str()),
        Some("image 2 · infer_z0")
    );
}

/// File > Copy image puts the finished grid on the clipboard, pixel for pixel.
#[test]
fn copy_image_puts_the_final_grid_on_the_clipboard() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    harness.state_mut().conditioning.compare = false;
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running)
    });
    let grid = harness.state().run.as_ref().unwrap().final_grid().unwrap();
    harness.get_by_label("File").click();
    harness.run_steps(2);
    harness.get_by_label("Copy image").click();
    harness.step();
    let copied: Vec<&egui::ColorImage> = harness
        .output()
        .platform_output
        .commands
        .iter()
        .filter_map(|c| match c {
            egui::OutputCommand::CopyImage(img) => Some(img),
            _ => None,
        })
        .collect();
    assert_eq!(copied.len(), 1, "one image copied");
    assert_eq!(
        copied[0].size,
        [grid.width() as usize, grid.height() as usize]
    );
    let first = grid.get_pixel(0, 0).0;
    assert_eq!(copied[0].pixels[0].to_array()[..3], first);
    assert!(matches!(
        &harness.state().notice,
        Some(ard_app::gui::Notice::Note(n)) if n.contains("copied")
    ));
}

#[test]
fn a_bad_dropped_file_leaves_the_model_loaded() {
    #[derive(Debug)]
    struct Dropped(PathBuf);
    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student.clone()], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    let broken = dir.path().join("broken.safetensors");
    let bytes = std::fs::read(&student).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let not_weights = dir.path().join("notes.txt");
    std::fs::write(&not_weights, "hello").unwrap();
    // A well-formed file whose weights hold a NaN (a diverged run's checkpoint).
    let nan = dir.path().join("diverged.safetensors");
    {
        let file = ard_engine::io::TensorFile::read(&student).unwrap();
        let mut w = ard_engine::io::SafetensorsWriter::new();
        ModelMeta::read(&file).unwrap().unwrap().write_to(&mut w);
        for key in file.tensors.keys() {
            let mut t = file.f32(key).unwrap();
            if key == "final_layer3.linear.weight" {
                t.data[0] = f32::NAN;
            }
            w.add_f32(key, &t, Storage::F32);
        }
        w.write(&nan).unwrap();
    }
    for path in [broken, not_weights, nan.clone()] {
        harness
            .input_mut()
            .dropped_files
            .push(Arc::new(Dropped(path.clone())));
        wait_for(&mut harness, "the error", 60, |a| {
            matches!(&a.notice, Some(ard_app::gui::Notice::Error(_)))
        });
        let notice = format!("{:?}", harness.state().notice);
        assert!(
            notice.contains(&*path.file_name().unwrap().to_string_lossy()),
            "{notice}"
        );
        if path == nan {
            assert!(notice.contains("final_layer3.linear.weight"), "{notice}");
        }
        harness.get_by_label_contains("Error: ");
        assert!(loaded(harness.state(), "student.safetensors"));
        harness.state_mut().notice = None;
    }
    // Still generates with the model it had.
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running)
    });
    assert_eq!(harness.state().run.as_ref().unwrap().steps.len(), 4);
}

#[test]
fn a_reference_pt_file_loads_once_its_head_count_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    let reference = ard_studio::reference("dit_teacher.pt");
    harness.state_mut().open_file(&reference, None);
    wait_for(&mut harness, "the error", 60, |a| {
        matches!(&a.notice, Some(ard_app::gui::Notice::Error(_)))
    });
    let notice = format!("{:?}", harness.state().notice);
    assert!(notice.contains("Files without metadata"), "{notice}");
    assert!(loaded(harness.state(), "student.safetensors"));
    harness.state_mut().loading.heads = Some(4);
    harness.state_mut().open_file(&reference, None);
    wait_for(&mut harness, "the reference teacher", 60, |a| {
        loaded(a, "dit_teacher.pt")
    });
    let model = harness.state().generator.clone().unwrap();
    assert_eq!(model.kind, ModelKind::Teacher);
    assert_eq!(model.class_names.len(), 10);
    assert_eq!(
        harness.state().teacher.as_ref().map(|t| t.source.as_str()),
        Some("dit_teacher.pt")
    );
    assert_eq!(model.precision, Precision::F32);
    // The same file again in f16: the panel says so.
    harness.state_mut().loading.precision = Precision::F16;
    harness.state_mut().open_file(&reference, None);
    wait_for(&mut harness, "the f16 teacher", 60, |a| {
        a.generator
            .as_ref()
            .is_some_and(|g| g.precision == Precision::F16)
    });
}

#[test]
fn saved_png_settings_come_back_when_the_png_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    {
        let c = &mut harness.state_mut().conditioning;
        c.label = 2;
        c.seed = 4242;
        c.batch = 2;
        c.compare = false;
    }
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running)
    });
    let png = dir.path().join("cross.png");
    harness.state_mut().save_result(&png).unwrap();
    let saved = ard_engine::io::png_settings::read_settings(&std::fs::read(&png).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(saved.labels, [2, 2]);
    assert_eq!(saved.class_name.as_deref(), Some("cross"));
    assert_eq!(saved.steps, 4);
    {
        let c = &mut harness.state_mut().conditioning;
        c.label = 0;
        c.seed = 1;
        c.batch = 9;
    }
    harness.state_mut().open_file(&png, None);
    harness.step();
    let c = &harness.state().conditioning;
    assert_eq!((c.label, c.seed, c.batch), (2, 4242, 2));
    assert!(matches!(
        &harness.state().notice,
        Some(ard_app::gui::Notice::Note(n)) if n.contains("restored")
    ));
    // The same settings make the same image.
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running && r.id == 2)
    });
    let again = harness.state().run.as_ref().unwrap().final_grid().unwrap();
    let first = image::open(&png).unwrap().to_rgb8();
    assert_eq!(again, first);
}

#[test]
fn starts_on_the_default_models() {
    let models = default_models();
    assert_eq!(
        models
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["teacher.safetensors", "ard_gan.safetensors"],
        "assets/ holds the default teacher and the adversarially fine-tuned student"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut harness = app_harness(models, dir.path());
    wait_for(&mut harness, "the default student", 60, |a| {
        loaded(a, "ard_gan.safetensors") && a.teacher.is_some()
    });
    let model = harness.state().generator.clone().unwrap();
    assert_eq!(model.kind, ModelKind::Student);
    assert_eq!(model.class_names.len(), 10);
    assert_eq!(model.class_names[9], "Ankle boot");
    assert!(model.architecture.contains("GAN"), "{}", model.architecture);
    harness.get_by_label_contains("Generator: ard_gan.safetensors");
}

/// Sets the finished run's timings to fixed values: a timing's mask is as wide as its label,
/// and the label's width depends on how many digits the time has.
fn fix_timings(harness: &mut Harness<'static, StudioApp>) {
    if let Some(run) = harness.state_mut().run.as_mut() {
        run.total_ms = run.total_ms.map(|_| 123.0);
        for step in run.steps.iter_mut().chain(run.teacher_steps.iter_mut()) {
            step.ms = 12.3;
        }
    }
}

/// Masks every label that shows a timing or a file fingerprint, so snapshots depend neither on
/// the machine's speed nor on the order a file's header metadata was written in.
fn mask_timings(harness: &mut Harness<'static, StudioApp>) {
    let rects: Vec<egui::Rect> = harness
        .query_all_by_label_contains(" ms")
        .chain(harness.query_all_by_label_contains("fingerprint"))
        .map(|n| n.rect())
        .collect();
    for rect in rects {
        harness.mask(rect);
    }
}

#[test]
fn snapshots_of_the_sampling_and_distillation_tabs() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, student) = tiny_models(dir.path());
    let mut harness = app_harness(vec![teacher, student], dir.path());
    wait_for(&mut harness, "the student", 60, |a| {
        loaded(a, "student.safetensors")
    });
    harness.state_mut().notice = None;
    let model = harness.state().generator.clone().unwrap();
    harness
        .state_mut()
        .conditioning
        .set_prompt("a cross", &model);
    harness.run_steps(2);
    click_generate(&mut harness);
    wait_for(&mut harness, "the run", 120, |a| {
        a.run.as_ref().is_some_and(|r| !r.running)
    });
    assert_eq!(harness.state().conditioning.chosen_label(), Some(2));
    harness.get_by_label("Chosen: class 2, cross");
    fix_timings(&mut harness);
    harness.run_steps(2);
    mask_timings(&mut harness);
    harness.snapshot("sampling_tab");

    harness.state_mut().tab = Tab::Train;
    {
        // Paths that do not depend on where the checkout or the temp folder is.
        let t = &mut harness.state_mut().training;
        t.teacher_file = "assets/teacher.safetensors".into();
        t.feature_net = "assets/feature_net.safetensors".into();
        t.run_dir = "runs/studio-run".into();
    }
    harness.run_steps(2);
    mask_timings(&mut harness);
    harness.snapshot("distillation_tab");

    // The adversarial stage's settings, and its curves as a run would have drawn them.
    {
        let t = &mut harness.state_mut().training;
        t.adversarial = true;
        t.gan_from_file = true;
        t.gan_student = "assets/ard.safetensors".into();
        t.gan_metrics = (1..=40u64)
            .map(|i| {
                let x = i as f32 / 40.0;
                let w = if i > 10 { 0.05 + 0.02 * x } else { 0.0 };
                (
                    i,
                    vec![
                        0.005 - 0.001 * x,
                        0.3 - 0.4 * x,
                        2.0 - 0.3 * x,
                        w,
                        0.1 * x,
                        -0.1 * x,
                    ],
                )
            })
            .collect();
    }
    harness.run_steps(2);
    mask_timings(&mut harness);
    harness.snapshot("distillation_tab_gan");
}

/// A latent teacher (8×8×4, the VAE fixture's latents) and the VAE: its steps reach the canvas
/// decoded to 64×64 pictures; a VAE opened in the app is named in the model panel.
#[test]
fn a_loaded_vae_decodes_a_latent_models_steps() {
    let dir = tempfile::tempdir().unwrap();
    let dit = DitConfig::fashion_mnist()
        .with_image(8, 4)
        .with_patch(2)
        .with_hidden(32)
        .with_depth(1)
        .with_heads(2)
        .with_classes(3);
    let teacher = dir.path().join("latent.safetensors");
    init_teacher(
        &dit,
        None,
        InitOptions {
            seed: 4,
            zero_init: false,
        },
        &Device::flex(),
    )
    .unwrap()
    .save(&teacher, Storage::F32)
    .unwrap();
    let vae = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd-vae-reference/vae.safetensors");
    let studio = Studio::spawn(StudioOptions {
        device: Device::flex(),
        device_label: "cpu".into(),
        initial_models: vec![teacher.clone(), vae.clone()],
        notify: Arc::new(|| {}),
    });
    studio.send(Request::Generate(GenerateRequest {
        id: 1,
        labels: vec![0, 1],
        seed: 1,
        cfg_scale: 1.5,
        teacher_steps: 3,
        compare_teacher: false,
    }));
    let (mut vae_seen, mut steps) = (false, 0);
    loop {
        match studio
            .events
            .recv_timeout(Duration::from_secs(120))
            .unwrap()
        {
            Event::VaeLoaded {
                source,
                description,
            } => {
                assert_eq!(source, "vae.safetensors");
                assert!(description.contains("4 latent channels"), "{description}");
                vae_seen = true;
            }
            Event::Step(s) => {
                for img in s.predictions.iter().chain(&s.inputs) {
                    // Decoded 64×64 pictures shown at 2× (the 8×8 latent would be shown at 96×96).
                    assert_eq!(img.dimensions(), (128, 128), "decoded, not the 8×8 latent");
                }
                steps += 1;
            }
            Event::Done { images, .. } => {
                assert!(images.iter().all(|i| i.dimensions() == (128, 128)));
                break;
            }
            Event::GenerateFailed { message, .. } | Event::LoadFailed { message, .. } => {
                panic!("{message}")
            }
            _ => {}
        }
    }
    assert!(vae_seen && steps == 3, "vae {vae_seen}, {steps} steps");
    // In the app: a dropped VAE is recognised and named.
    let mut harness = app_harness(vec![teacher], dir.path());
    wait_for(&mut harness, "the teacher", 60, |a| {
        loaded(a, "latent.safetensors")
    });
    harness.state_mut().open_file(&vae, None);
    wait_for(&mut harness, "the VAE", 60, |a| a.vae.is_some());
    harness.get_by_label("Decoder: vae.safetensors");
}
