//! The adversarial stage (`ard finetune-gan`) on tiny configurations: where its gradients go,
//! that its split backward equals one backward of the whole loss, that a run resumes exactly,
//! and that bad inputs are refused with a clear message.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ard_engine::burn::module::{Module, ModuleVisitor, Param};
use ard_engine::burn::optim::GradientsParams;
use ard_engine::burn::tensor::Tensor;
use ard_engine::data::Dataset;
use ard_engine::distill::{
    AnchorKind, TrajectoryManifest, TrajectorySet, step_distance, write_trajectory_set,
};
use ard_engine::gan::{
    Discriminator, GanContext, GanOptions, GanPair, discriminator_pass, generator_pass,
    hinge_generator, renoise,
};
use ard_engine::io::labels_to_device;
use ard_engine::jobs::finetune_gan;
use ard_engine::model::{
    InitOptions, LoadOptions, LoadedModel, StudentConfig, default_anchors, init_teacher,
    student_from_teacher,
};
use ard_engine::train::{
    Hooks, LrSchedule, Phase, RunDir, TrainOptions, TrainingEvent, iteration_rng,
};
use ard_engine::{Device, HostTensor, Model};
use ard_studio::{file_weights, tiny_dit, toy_data, toy_run_dir};

/// A teacher of two blocks (two discriminator heads), a 3-step student with N = 1 made from
/// it, and 6 trajectories of a 10-step DDIM, in `root`.
fn setup(root: &Path) -> (LoadedModel, LoadedModel, TrajectorySet) {
    let device = Device::flex();
    let teacher = init_teacher(
        &tiny_dit(2).with_depth(2),
        Some(vec!["left".into(), "top".into()]),
        InitOptions {
            seed: 11,
            zero_init: false,
        },
        &device,
    )
    .unwrap();
    let manifest = TrajectoryManifest {
        count: 6,
        shard_size: 6,
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
    };
    let Model::Teacher(dit) = &teacher.model else {
        unreachable!()
    };
    let dir = root.join("trajectories");
    write_trajectory_set(dit, &manifest, &dir, (0, 1), 6, &device, |_| {}).unwrap();
    let mut cfg = StudentConfig::new(3, 1);
    cfg.anchors = manifest.anchors.clone();
    cfg.teacher_steps = 10;
    let student = student_from_teacher(teacher.copy_to(&device).unwrap(), cfg).unwrap();
    (teacher, student, TrajectorySet::load(&dir).unwrap())
}

fn options(iterations: u64) -> GanOptions {
    GanOptions {
        train: TrainOptions {
            iterations,
            batch_size: 4,
            lr: 1e-3,
            ema_decay: 0.9,
            grad_clip: 1.0,
            seed: 5,
            lr_schedule: LrSchedule::Constant,
        },
        warmup: 1,
        // A rate as a GUI drag leaves it, whose shortest decimal has 17 digits: the resume
        // check must not trip over its JSON round trip.
        disc_lr: 1e-4 + 4.0 * 1e-5,
        ..GanOptions::default()
    }
}

/// Every float parameter of a module, flattened, by visiting order.
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push(p.val().to_data().try_to_vec::<f32>().unwrap());
    }
}

fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

fn model_values(m: &LoadedModel) -> Vec<Vec<f32>> {
    match &m.model {
        Model::Teacher(d) => values(d),
        Model::Student(s) => values(s),
    }
}

fn pair(student: &LoadedModel, device: &Device) -> GanPair {
    let Model::Student(generator) = student.copy_to(device).unwrap().model else {
        unreachable!()
    };
    let d = &student.meta.dit;
    GanPair {
        generator,
        discriminator: Discriminator::fresh(d.depth, d.hidden_size, &Default::default(), 1, device)
            .unwrap(),
    }
}

#[test]
fn gradients_reach_the_generator_and_the_heads_but_never_the_teacher() {
    let root = tempfile::tempdir().unwrap();
    let (teacher, student, set) = setup(root.path());
    let real = toy_data(8);
    let opts = options(1);
    let device = Device::flex().autodiff();
    let ctx = GanContext::new(&teacher, &set, &real, &opts, &device).unwrap();
    let pair = pair(&student, &device);
    let draw = ctx.draw(&mut iteration_rng(5, 0));

    let mut gp = generator_pass(&pair, &ctx, &draw, true).unwrap();
    assert!(gp.regression.is_finite() && gp.regression > 0.0);
    assert!(gp.adversarial.is_finite());
    assert!(gp.weight.is_finite() && gp.weight > 0.0, "{}", gp.weight);
    assert!(GradientsParams::from_module(&mut gp.grads, &ctx.teacher).is_empty());
    assert!(GradientsParams::from_module(&mut gp.grads, &pair.discriminator).is_empty());
    let g = GradientsParams::from_module(&mut gp.grads, &pair.generator);
    // Every generator parameter but the fixed positions gets a gradient.
    assert_eq!(g.len(), values(&pair.generator).len() - 1);

    let mut dp = discriminator_pass(&pair.discriminator, &ctx, &draw, gp.fakes).unwrap();
    assert!(dp.loss.is_finite() && dp.loss > 0.0);
    assert!(GradientsParams::from_module(&mut dp.grads, &ctx.teacher).is_empty());
    assert!(GradientsParams::from_module(&mut dp.grads, &pair.generator).is_empty());
    let d = GradientsParams::from_module(&mut dp.grads, &pair.discriminator);
    // Every head's weights and biases (not the power-iteration vectors u).
    let heads = pair.discriminator.heads.len();
    assert_eq!(heads, 2);
    assert_eq!(d.len(), heads * (3 * 2 + 2 * 2 + 2));
}

/// The generator's gradient from the split backward equals one backward of
/// `L_reg + λ·L_adv` built in a single graph, and λ is the ratio of the two terms' gradient
/// norms at the last head's weight.
#[test]
fn the_split_backward_equals_one_backward_of_the_whole_loss() {
    let root = tempfile::tempdir().unwrap();
    let (teacher, student, set) = setup(root.path());
    let real = toy_data(8);
    let mut opts = options(1);
    opts.weight_factor = 0.7;
    let device = Device::flex().autodiff();
    let ctx = GanContext::new(&teacher, &set, &real, &opts, &device).unwrap();
    let pair = pair(&student, &device);
    let draw = ctx.draw(&mut iteration_rng(5, 3));
    let mut gp = generator_pass(&pair, &ctx, &draw, true).unwrap();
    let split = GradientsParams::from_module(&mut gp.grads, &pair.generator);

    let g = &pair.generator;
    let k = g.steps();
    let labels: Vec<i64> = draw.idx.iter().map(|&i| set.labels[i]).collect();
    // The whole loss in one graph; `part` 0: regression, 1: adversarial, 2: both with λ.
    let whole = |part: usize, weight: f64| -> GradientsParams {
        let targets: Vec<Tensor<4>> = set
            .anchors
            .iter()
            .map(|a| a.rows(&draw.idx).to_device(&device).unwrap())
            .collect();
        let mut inputs = vec![set.x_t.rows(&draw.idx).to_device::<4>(&device).unwrap()];
        inputs.extend(targets.iter().take(k - 1).cloned());
        let outs = g
            .forward_teacher_forced(&inputs, labels_to_device(&labels, &device))
            .unwrap();
        let reg = outs
            .iter()
            .zip(&targets)
            .map(|(o, t)| step_distance(o.clone().narrow(1, 0, 1), t.clone(), opts.loss))
            .reduce(|a, b| a + b)
            .unwrap()
            / k as f64;
        let last = outs[k - 1].clone().narrow(1, 0, 1);
        let x_t = renoise(last, &draw.t_fake, &draw.eps_fake, &ctx.alpha_bar).unwrap();
        let t: Vec<f32> = draw.t_fake.iter().map(|&v| v as f32).collect();
        let (feats, cond) = ctx
            .teacher
            .block_features(x_t, &t, labels_to_device(&labels, &device));
        let adv = hinge_generator(&pair.discriminator.clone().no_grad().forward(&feats, &cond));
        let loss = match part {
            0 => reg,
            1 => adv,
            _ => reg + adv * weight,
        };
        GradientsParams::from_grads(loss.backward(), g)
    };
    let w_id = g.head(k - 1).linear.weight.id;
    let norm = |gp: &GradientsParams| -> f64 {
        let w: Tensor<2> = gp.get(w_id).unwrap();
        w.square().sum().sqrt().into_scalar::<f32>() as f64
    };
    let (reg_norm, adv_norm) = (norm(&whole(0, 0.0)), norm(&whole(1, 0.0)));
    let want_weight = reg_norm / (adv_norm + 1e-4) * 0.7;
    assert!(
        (gp.weight - want_weight).abs() < 1e-4 * want_weight,
        "λ {} vs {want_weight}",
        gp.weight
    );

    let direct = whole(2, gp.weight);
    struct Compare<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        checked: usize,
    }
    impl ModuleVisitor for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let (Some(x), Some(y)) = (self.a.get::<D>(p.id), self.b.get::<D>(p.id)) else {
                assert!(self.a.get::<D>(p.id).is_none() && self.b.get::<D>(p.id).is_none());
                return;
            };
            let diff = (x - y.clone()).square().sum().sqrt().into_scalar::<f32>();
            let scale = y.square().sum().sqrt().into_scalar::<f32>();
            assert!(
                diff <= 1e-4 * scale + 1e-7,
                "{:?}: |Δ| {diff} vs |g| {scale}",
                p.id
            );
            self.checked += 1;
        }
    }
    let mut c = Compare {
        a: &split,
        b: &direct,
        checked: 0,
    };
    g.visit(&mut c);
    assert!(c.checked > 10, "{} parameters compared", c.checked);
}

fn run(
    teacher: &LoadedModel,
    student: &LoadedModel,
    set: &TrajectorySet,
    dir: &Path,
    opts: &GanOptions,
    resume: bool,
) -> ard_engine::Result<(std::path::PathBuf, Vec<TrainingEvent>)> {
    let mut events = Vec::new();
    let out = finetune_gan(
        teacher,
        student,
        set,
        &toy_data(8),
        opts,
        &toy_run_dir(dir, resume),
        &Device::flex(),
        Hooks {
            phase: Phase::Adversarial,
            stop: &AtomicBool::new(false),
            on_event: &mut |e| events.push(e),
        },
    )?;
    Ok((out, events))
}

#[test]
fn a_few_steps_train_both_players_and_resume_exactly() {
    let root = tempfile::tempdir().unwrap();
    let (teacher, student, set) = setup(root.path());
    let teacher_before = model_values(&teacher);
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let (out, events) = run(&teacher, &student, &set, &a, &options(3), false).unwrap();
    let metrics: Vec<(u64, Vec<f32>)> = events
        .iter()
        .filter_map(|e| match e {
            TrainingEvent::Metrics {
                iteration, values, ..
            } => Some((*iteration, values.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(metrics.len(), 3);
    assert_eq!(metrics[0].1[3], 0.0, "no adversarial weight in the warm-up");
    assert!(metrics[1].1[3] > 0.0 && metrics[2].1[3] > 0.0);
    assert!(metrics.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));

    // The tuned student is marked as such, and differs from where it started.
    let tuned = LoadedModel::load(&out, &LoadOptions::default(), &Device::flex()).unwrap();
    assert!(tuned.meta.student.as_ref().unwrap().adversarial);
    assert_ne!(model_values(&tuned), model_values(&student));
    // The teacher is untouched.
    assert_eq!(model_values(&teacher), teacher_before);

    // Interrupted after 2 iterations, then resumed to 3: the same weights, bit for bit.
    run(&teacher, &student, &set, &b, &options(2), false).unwrap();
    let (_, events) = run(&teacher, &student, &set, &b, &options(3), true).unwrap();
    assert!(matches!(
        events[0],
        TrainingEvent::Resumed { iteration: 2, .. }
    ));
    assert_eq!(
        file_weights(&out),
        file_weights(&b.join("student.safetensors"))
    );

    // Other settings on resume are refused.
    let mut other = options(4);
    other.disc_lr = 5e-4;
    let msg = run(&teacher, &student, &set, &b, &other, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("other settings"), "{msg}");
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let (teacher, student, set) = setup(root.path());
    let dir = root.path().join("bad");
    let err = |r: ard_engine::Result<(std::path::PathBuf, Vec<TrainingEvent>)>| {
        r.expect_err("refused").to_string()
    };
    let msg = err(run(&teacher, &teacher, &set, &dir, &options(1), false));
    assert!(msg.contains("distilled student"), "{msg}");
    let msg = err(run(&student, &student, &set, &dir, &options(1), false));
    assert!(msg.contains("must be the teacher"), "{msg}");
    let mut one = options(1);
    one.train.batch_size = 1;
    let msg = err(run(&teacher, &student, &set, &dir, &one, false));
    assert!(msg.contains("batch of at least 2"), "{msg}");
    let mut range = options(1);
    range.noise_range = [500, 500];
    let msg = err(run(&teacher, &student, &set, &dir, &range, false));
    assert!(msg.contains("re-noising range"), "{msg}");
    let mut kernel = options(1);
    kernel.disc.kernel = 4;
    let msg = err(run(&teacher, &student, &set, &dir, &kernel, false));
    assert!(msg.contains("odd kernel"), "{msg}");
    // Real images of another size.
    let wrong = Dataset {
        images: HostTensor::new(vec![2, 1, 4, 4], vec![0.0; 32]),
        labels: vec![0, 1],
        class_names: vec!["a".into(), "b".into()],
    };
    let refuse = |real: Dataset| {
        finetune_gan(
            &teacher,
            &student,
            &set,
            &real,
            &options(1),
            &RunDir::new(&dir),
            &Device::flex(),
            Hooks {
                phase: Phase::Adversarial,
                stop: &AtomicBool::new(false),
                on_event: &mut |_| {},
            },
        )
        .unwrap_err()
        .to_string()
    };
    let msg = refuse(wrong);
    assert!(msg.contains("real images are [1, 4, 4]"), "{msg}");
    let mut empty = toy_data(2);
    empty.images = HostTensor::new(vec![0, 1, 8, 8], vec![]);
    empty.labels.clear();
    assert!(refuse(empty).contains("no real images"));
    let mut three = toy_data(4);
    three.class_names.push("third".into());
    assert!(refuse(three).contains("3 classes and the model 2"));
    let mut infinite = options(1);
    infinite.weight_factor = f64::INFINITY;
    let msg = err(run(&teacher, &student, &set, &dir, &infinite, false));
    assert!(msg.contains("finite"), "{msg}");
}
