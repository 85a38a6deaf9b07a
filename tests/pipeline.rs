//! The distillation pipeline end to end on tiny configurations: train a teacher a few steps,
//! write and read a sharded trajectory set, distil ARD and the baseline, and resume interrupted
//! runs to exactly the state of uninterrupted ones.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ard_engine::diffusion::DdimOptions;
use ard_engine::diffusion::{SampleRequest, sample};
use ard_engine::distill::{
    AnchorKind, TrajectoryManifest, TrajectorySet, shard_path, write_trajectory_set,
};
use ard_engine::distill::{DistillLoss, SelfForcing};
use ard_engine::io::seeded_noise;
use ard_engine::jobs::{DistillOptions, TeacherOptions, distill_student, train_teacher};
use ard_engine::model::default_anchors;
use ard_engine::model::{LoadOptions, LoadedModel};
use ard_engine::train::{Hooks, Phase, RunDir, TrainOptions, TrainingEvent};
use ard_engine::{Device, HostTensor, Model};
use ard_studio::{
    file_weights, toy_data, toy_run_dir, toy_teacher_dit, toy_teacher_options, toy_train_options,
};

fn train(dir: &Path, iterations: u64, resume: bool) -> Vec<TrainingEvent> {
    let mut events = Vec::new();
    train_teacher(
        &toy_data(32),
        &toy_teacher_options(toy_train_options(iterations)),
        &toy_run_dir(dir, resume),
        &Device::flex(),
        Hooks {
            phase: Phase::Teacher,
            stop: &AtomicBool::new(false),
            on_event: &mut |e| events.push(e),
        },
    )
    .unwrap();
    events
}

#[test]
fn teacher_training_resumes_exactly() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let events = train(&a, 4, false);
    let losses: Vec<f32> = events
        .iter()
        .filter_map(|e| match e {
            TrainingEvent::Progress { loss, .. } => *loss,
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
    assert!(a.join("samples/iter-0000004.png").exists());

    // Interrupted after 2 iterations, then resumed to 4 (a resume at another rate is refused).
    train(&b, 2, false);
    let faster = TeacherOptions {
        train: TrainOptions {
            lr: 2e-3,
            ..toy_train_options(4)
        },
        ..toy_teacher_options(toy_train_options(4))
    };
    let hooks = Hooks {
        phase: Phase::Teacher,
        stop: &AtomicBool::new(false),
        on_event: &mut |_| {},
    };
    let refused = train_teacher(
        &toy_data(32),
        &faster,
        &toy_run_dir(&b, true),
        &Device::flex(),
        hooks,
    );
    let msg = refused.unwrap_err().to_string();
    assert!(msg.contains("train.lr: 0.001 → 0.002"), "{msg}");
    let events = train(&b, 4, true);
    assert!(matches!(
        events[0],
        TrainingEvent::Resumed { iteration: 2, .. }
    ));
    assert_eq!(
        file_weights(&a.join("teacher.safetensors")),
        file_weights(&b.join("teacher.safetensors"))
    );
    // (Equal weights after iterations 3 and 4 need the restored Adam moments of 1 and 2.)
    let teacher = LoadedModel::load(
        a.join("teacher.safetensors"),
        &LoadOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(
        teacher.meta.class_names.as_deref(),
        Some(&["left".to_string(), "top".to_string()][..])
    );
}

fn manifest(count: usize) -> TrajectoryManifest {
    TrajectoryManifest {
        count,
        shard_size: 4,
        ddim_steps: 10,
        cfg_scale: 1.5,
        guided_channels: 1,
        anchors: default_anchors(3, 10),
        anchor_kind: AnchorKind::X0,
        seed: 3,
        num_classes: 2,
        image_shape: vec![1, 8, 8],
        teacher: "toy".into(),
        clip_denoised: true,
        precision: Default::default(),
    }
}

/// The tiny teacher after 2 iterations on the toy data, trained in `root/teacher`.
fn toy_teacher(root: &Path, device: &Device) -> LoadedModel {
    train(&root.join("teacher"), 2, false);
    LoadedModel::load(
        root.join("teacher/teacher.safetensors"),
        &LoadOptions::default(),
        device,
    )
    .unwrap()
}

#[test]
fn trajectories_shard_resume_and_distil() {
    let root = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let teacher = toy_teacher(root.path(), &device);
    let Model::Teacher(dit) = &teacher.model else {
        unreachable!()
    };

    // Two workers split the shards; a single worker makes the same set.
    let split = root.path().join("split");
    let m = manifest(10);
    assert_eq!(m.num_shards(), 3);
    let w0 = write_trajectory_set(dit, &m, &split, (0, 2), 3, &device, |_| {}).unwrap();
    assert!(
        TrajectorySet::load(&split).is_err(),
        "shard 1 is still missing"
    );
    let w1 = write_trajectory_set(dit, &m, &split, (1, 2), 3, &device, |_| {}).unwrap();
    assert_eq!(w0 + w1, 10);
    assert_eq!(
        write_trajectory_set(dit, &m, &split, (0, 1), 5, &device, |_| {}).unwrap(),
        0,
        "nothing left to do"
    );
    let whole = root.path().join("whole");
    write_trajectory_set(dit, &m, &whole, (0, 1), 10, &device, |_| {}).unwrap();
    let (a, b) = (
        TrajectorySet::load(&split).unwrap(),
        TrajectorySet::load(&whole).unwrap(),
    );
    assert_eq!(a.labels, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(a.x_t, b.x_t);
    for (x, y) in a.anchors.iter().zip(&b.anchors) {
        assert_ard_close(x, y);
    }
    // A different set refuses to mix into the directory.
    assert!(write_trajectory_set(dit, &manifest(12), &split, (0, 1), 5, &device, |_| {}).is_err());
    // A damaged shard is reported, then remade.
    std::fs::write(shard_path(&split, 1), b"garbage").unwrap();
    let msg = TrajectorySet::load(&split).err().unwrap().to_string();
    assert!(msg.contains("shard-00001"), "{msg}");
    write_trajectory_set(dit, &m, &split, (0, 1), 5, &device, |_| {}).unwrap();
    let set = TrajectorySet::load(&split).unwrap();

    for n in [1, 0] {
        let straight = root.path().join(format!("ard{n}"));
        let resumed = root.path().join(format!("ard{n}-resumed"));
        let run_with = |dir: &Path, its: u64, resume: bool, loss: DistillLoss| {
            distill_student(
                &teacher,
                &set,
                &DistillOptions {
                    history_layers: n,
                    loss,
                    // ARD resumes exactly with half of each batch self-forced from iteration 1.
                    self_forcing: SelfForcing {
                        fraction: if n == 1 { 0.5 } else { 0.0 },
                        start: 1,
                        ramp: 0,
                    },
                    train: toy_train_options(its),
                },
                &toy_run_dir(dir, resume),
                &device,
                Hooks {
                    phase: Phase::Teacher,
                    stop: &AtomicBool::new(false),
                    on_event: &mut |_| {},
                },
            )
        };
        let run = |dir: &Path, its: u64, resume: bool| {
            run_with(dir, its, resume, DistillLoss::default()).unwrap()
        };
        let out = run(&straight, 3, false);
        run(&resumed, 2, false);
        // Resuming with another recipe is refused, naming what changed, and the run is kept.
        let before = std::fs::read(resumed.join("checkpoint.safetensors")).unwrap();
        let msg = run_with(&resumed, 3, true, DistillLoss::Mse)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(r#"loss: "l1" → "mse""#), "{msg}");
        assert!(msg.contains("only --iterations may change"), "{msg}");
        let after = std::fs::read(resumed.join("checkpoint.safetensors")).unwrap();
        assert!(before == after, "a refused resume touched the checkpoint");
        run(&resumed, 3, true);
        assert_eq!(
            file_weights(&out),
            file_weights(&resumed.join("student.safetensors"))
        );
        let student = LoadedModel::load(&out, &LoadOptions::default(), &device).unwrap();
        let s = student.meta.student.as_ref().unwrap();
        assert_eq!(
            (s.steps, s.history_layers, s.anchors.clone()),
            (3, n, m.anchors.clone())
        );
        let req = SampleRequest {
            prompts: None,
            noise: seeded_noise(vec![2, 1, 8, 8], 1),
            labels: vec![0, 1],
            ddim: DdimOptions::default(),
        };
        let out = sample(&student, &req, &device, |_| {}).unwrap();
        assert_eq!(out.steps.len(), 3);
    }
}

#[test]
fn a_distillation_scores_itself_as_it_goes_and_resumes_its_log() {
    use ard_engine::eval::{EVAL_LOG, FeatureNet, FeatureNetConfig, TrainingEval, read_eval_log};
    let root = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let teacher = toy_teacher(root.path(), &device);
    let Model::Teacher(dit) = &teacher.model else {
        unreachable!()
    };
    let set_dir = root.path().join("set");
    write_trajectory_set(dit, &manifest(8), &set_dir, (0, 1), 4, &device, |_| {}).unwrap();
    let set = TrajectorySet::load(&set_dir).unwrap();
    let net = |classes: usize| {
        let config = FeatureNetConfig {
            in_channels: 1,
            num_classes: classes,
            class_names: (0..classes).map(|c| c.to_string()).collect(),
            layers: vec![(8, 1), (16, 2)],
            dense: None,
            test_accuracy: None,
        };
        FeatureNet::new(config, &device)
    };
    let real = toy_data(32).images;
    let eval = std::sync::Arc::new(TrainingEval::new(net(2), &real, 2, 6, &device).unwrap());
    let dir = root.path().join("student");
    let run = |its: u64, resume: bool, eval: std::sync::Arc<TrainingEval>| {
        let mut events = Vec::new();
        let result = distill_student(
            &teacher,
            &set,
            &DistillOptions {
                history_layers: 1,
                train: toy_train_options(its),
                ..Default::default()
            },
            &RunDir {
                prompts: None,
                eval: Some(eval),
                ..toy_run_dir(&dir, resume)
            },
            &device,
            Hooks {
                phase: Phase::Teacher,
                stop: &AtomicBool::new(false),
                on_event: &mut |e| events.push(e),
            },
        );
        (result, events)
    };
    let (result, events) = run(3, false, eval.clone());
    result.unwrap();
    let scored: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            TrainingEvent::Eval { point: p, .. } => Some(p.iteration),
            _ => None,
        })
        .collect();
    assert_eq!(
        scored,
        vec![0, 2, 3],
        "the start, every 2 iterations, the end"
    );
    let log = read_eval_log(&dir.join(EVAL_LOG)).unwrap();
    assert_eq!(log.iter().map(|p| p.iteration).collect::<Vec<_>>(), scored);
    assert!(log[0].loss.is_none() && log[1].loss.unwrap() > 0.0);
    for p in &log {
        for s in [p.ema, p.raw] {
            assert!(s.fid.is_finite() && s.fid >= 0.0, "{p:?}");
            assert!((0.0..=1.0).contains(&s.class_agreement), "{p:?}");
        }
        assert_eq!(p.samples, 6);
    }
    assert_ne!(
        log[2].ema, log[2].raw,
        "the EMA and the live weights are scored apart"
    );
    // Resumed to 4 iterations: the log keeps its points and adds the new end, once each.
    run(4, true, eval).0.unwrap();
    let log = read_eval_log(&dir.join(EVAL_LOG)).unwrap();
    assert_eq!(
        log.iter().map(|p| p.iteration).collect::<Vec<_>>(),
        vec![0, 2, 3, 4]
    );
    // A feature network for other classes is refused before any training.
    let wrong = std::sync::Arc::new(TrainingEval::new(net(3), &real, 2, 6, &device).unwrap());
    let err = run(6, true, wrong).0.unwrap_err().to_string();
    assert!(err.contains("classes"), "{err}");
}

fn assert_ard_close(a: &HostTensor, b: &HostTensor) {
    // Different batch sizes may round differently; the values must still agree closely.
    assert!(a.relative_error(b) < 1e-4, "{}", a.relative_error(b));
}

#[test]
fn the_ema_is_an_untracked_model() {
    use ard_engine::burn::module::{Module, ModuleVisitor, Param};
    use ard_engine::burn::tensor::Tensor;
    struct Tracked(usize);
    impl ModuleVisitor for Tracked {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.val().is_autodiff() {
                self.0 += 1;
            }
        }
    }
    let device = Device::flex().autodiff();
    let dit = toy_teacher_dit(1, &device);
    let mut trainer = ard_engine::train::Trainer::new(dit, toy_train_options(3));
    let data = toy_data(32);
    let alpha_bar =
        ard_engine::diffusion::alpha_bar_from_betas(&ard_engine::diffusion::linear_betas(1000));
    for _ in 0..3 {
        trainer
            .step(|m, rng| {
                ard_engine::diffusion::teacher_loss(
                    m,
                    &data.images.rows(&[0, 1]),
                    &[0, 1],
                    &alpha_bar,
                    0.1,
                    rng,
                    &device,
                )
            })
            .unwrap();
    }
    let mut tracked = Tracked(0);
    trainer.ema.visit(&mut tracked);
    assert_eq!(tracked.0, 0, "EMA parameters must not carry autodiff");
}

#[test]
fn a_stopped_run_checkpoints_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("t");
    let mut events = Vec::new();
    let stop = AtomicBool::new(false);
    let mut n = 0;
    train_teacher(
        &toy_data(32),
        &toy_teacher_options(toy_train_options(5)),
        &RunDir {
            prompts: None,
            checkpoint_every: 100,
            ..toy_run_dir(&dir, false)
        },
        &Device::flex(),
        Hooks {
            phase: Phase::Teacher,
            stop: &stop,
            on_event: &mut |e| {
                if matches!(e, TrainingEvent::Progress { .. }) {
                    n += 1;
                    if n == 3 {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                events.push(e);
            },
        },
    )
    .unwrap();
    assert!(
        matches!(
            events.last(),
            Some(TrainingEvent::Stopped { iteration: 3, .. })
        ),
        "{:?}",
        events.last()
    );
    let events = train(&dir, 5, true);
    assert!(matches!(
        events[0],
        TrainingEvent::Resumed { iteration: 3, .. }
    ));
    assert!(matches!(events.last(), Some(TrainingEvent::Saved { .. })));
}

/// `ard manifest` reads a run folder: the teacher's options and data as the job wrote them, the
/// model file's fingerprint, the stage times a script appended (added up per stage), and no
/// checkpoint.
#[test]
fn a_run_manifest_is_written_from_the_run_folder() {
    let root = tempfile::tempdir().unwrap();
    train(&root.path().join("teacher"), 2, false);
    std::fs::write(
        root.path().join(ard_engine::train::STAGE_TIMES_FILE),
        "teacher\t90\ntrajectories\t30\nteacher\t30\n",
    )
    .unwrap();
    let out = root.path().join("manifest.json");
    let text = ard_app::cli::run_args_output([
        "ard",
        "manifest",
        "--run",
        &root.path().display().to_string(),
        "--command",
        "bash train.sh",
        "--out",
        &out.display().to_string(),
    ])
    .unwrap();
    assert!(text.is_empty(), "{text}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let teacher = &m["jobs"]["teacher"];
    assert_eq!(teacher["teacher-options.json"]["train"]["iterations"], 2);
    assert_eq!(teacher["teacher-options.json"]["hidden_size"], 16);
    assert_eq!(
        teacher["dataset.json"]["fingerprint"],
        serde_json::json!(toy_data(32).fingerprint())
    );
    let file = root.path().join("teacher/teacher.safetensors");
    assert_eq!(
        teacher["teacher.safetensors"],
        serde_json::json!(ard_engine::io::file_fingerprint(&file).unwrap())
    );
    assert!(teacher.get("checkpoint.safetensors").is_none());
    assert_eq!(m["stage_minutes"]["teacher"], 2.0);
    assert_eq!(m["stage_minutes"]["trajectories"], 0.5);
    assert_eq!(m["command"], "bash train.sh");
    assert_eq!(m["defaults"]["teacher"]["train"]["iterations"], 24000);
}
