//! The engine beyond the reference's hard-coded sizes: random architectures (patch sizes,
//! channel counts, head counts, token counts, learn_sigma off), K steps and N history layers.
//! Fresh random weights (every adaLN and output layer non-zero) and fresh random inputs.

use ard_engine::io::Storage;
use ard_engine::io::{labels_to_device, seeded_noise};
use ard_engine::model::ArdStudent;
use ard_engine::model::{DitConfig, StudentConfig};
use ard_engine::model::{InitOptions, init_teacher, student_from_teacher};
use ard_engine::model::{LoadOptions, LoadedModel, Model};
use ard_engine::{Device, HostTensor};
use ard_studio::assert_close;

fn student_of(m: &LoadedModel) -> &ArdStudent {
    match &m.model {
        Model::Student(s) => s,
        Model::Teacher(_) => unreachable!(),
    }
}

/// One architecture to try: a DiT config and the student's K and N.
struct Case {
    dit: DitConfig,
    steps: usize,
    history_layers: usize,
}

fn cases() -> Vec<Case> {
    let case = |dit, steps, history_layers| Case {
        dit,
        steps,
        history_layers,
    };
    vec![
        // Fashion-MNIST-like: 1 channel, patch 4, 49 tokens, head dim 16, no sigma.
        case(
            DitConfig::fashion_mnist()
                .with_image(28, 1)
                .with_patch(4)
                .with_hidden(48)
                .with_depth(3)
                .with_heads(3)
                .with_classes(10),
            3,
            1,
        ),
        // The step-distillation baseline (N = 0), head dim 8.
        case(
            DitConfig::fashion_mnist()
                .with_image(16, 3)
                .with_patch(2)
                .with_hidden(40)
                .with_depth(2)
                .with_heads(5)
                .with_classes(7)
                .with_learn_sigma(true),
            2,
            0,
        ),
        // K = 5 with history in every block, patch 3.
        case(
            DitConfig::fashion_mnist()
                .with_image(12, 2)
                .with_patch(3)
                .with_hidden(24)
                .with_depth(2)
                .with_heads(2)
                .with_classes(4),
            5,
            2,
        ),
    ]
}

fn make_student(case: usize, seed: u64) -> (LoadedModel, DitConfig) {
    let Case {
        dit: cfg,
        steps,
        history_layers,
    } = cases().swap_remove(case);
    let options = InitOptions {
        seed: seed.wrapping_add(100 + case as u64),
        zero_init: false,
    };
    let teacher = init_teacher(&cfg, None, options, &Device::flex()).unwrap();
    let student = student_from_teacher(teacher, StudentConfig::new(steps, history_layers)).unwrap();
    (student, cfg)
}

#[test]
fn cached_inference_equals_masked_forward_for_any_shape() {
    let device = Device::flex();
    let seed = ard_studio::test_seed("cached inference, any shape");
    for case in 0..cases().len() {
        let (m, cfg) = make_student(case, seed);
        let s = student_of(&m);
        let labels: Vec<i64> = (0..3).map(|i| (i * 5 % cfg.num_classes) as i64).collect();
        let noise = seeded_noise(
            vec![3, cfg.in_channels, cfg.input_size, cfg.input_size],
            seed.wrapping_add(case as u64),
        );
        let y = || labels_to_device(&labels, &device);
        let preds = s.sample(noise.to_device(&device).unwrap(), y(), |_, _| {});
        assert_eq!(preds.len(), s.steps());
        let mut inputs = vec![noise.to_device::<4>(&device).unwrap()];
        inputs.extend(preds.iter().take(s.steps() - 1).cloned());
        let full = s.forward_teacher_forced(&inputs, y()).unwrap();
        for (k, (p, f)) in preds.into_iter().zip(full).enumerate() {
            assert_eq!(f.dims()[1], cfg.out_channels());
            let f = HostTensor::from_tensor(f.narrow(1, 0, cfg.in_channels));
            assert_close(
                &format!("case {case} step {k}"),
                &HostTensor::from_tensor(p),
                &f,
                1e-5,
            );
        }
    }
}

#[test]
fn history_reaches_later_steps_only_through_the_lower_blocks() {
    let device = Device::flex();
    let seed = ard_studio::test_seed("history through the lower blocks");
    for case in 0..cases().len() {
        let (m, cfg) = make_student(case, seed);
        let s = student_of(&m);
        let shape = vec![2, cfg.in_channels, cfg.input_size, cfg.input_size];
        let mut inputs: Vec<_> = (0..s.steps())
            .map(|k| {
                seeded_noise(shape.clone(), seed.wrapping_add(7 + k as u64))
                    .to_device::<4>(&device)
                    .unwrap()
            })
            .collect();
        let y = || labels_to_device(&[0, 1], &device);
        let before: Vec<HostTensor> = s
            .forward_teacher_forced(&inputs, y())
            .unwrap()
            .into_iter()
            .map(HostTensor::from_tensor)
            .collect();
        // Change only x_T: step 0 must change; later steps only if there is history.
        inputs[0] = seeded_noise(shape.clone(), seed.wrapping_sub(1))
            .to_device(&device)
            .unwrap();
        let after: Vec<HostTensor> = s
            .forward_teacher_forced(&inputs, y())
            .unwrap()
            .into_iter()
            .map(HostTensor::from_tensor)
            .collect();
        assert_ne!(before[0].data, after[0].data);
        let history = s.config().history_layers > 0;
        for k in 1..s.steps() {
            let changed = after[k].relative_error(&before[k]) > 1e-6;
            assert_eq!(changed, history, "case {case} step {k}: history {history}");
        }
    }
}

#[test]
fn any_architecture_round_trips_through_a_file() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let seed = ard_studio::test_seed("round trip through a file");
    for case in 0..cases().len() {
        let (m, cfg) = make_student(case, seed);
        for storage in [Storage::F32, Storage::F16] {
            let path = dir.path().join(format!("s{case}-{storage:?}.safetensors"));
            m.save(&path, storage).unwrap();
            let again = LoadedModel::load(&path, &LoadOptions::default(), &device).unwrap();
            assert_eq!(again.meta, m.meta);
            let noise = seeded_noise(
                vec![1, cfg.in_channels, cfg.input_size, cfg.input_size],
                seed ^ 3,
            );
            let run = |m: &LoadedModel| {
                let out = student_of(m).sample(
                    noise.to_device(&device).unwrap(),
                    labels_to_device(&[1], &device),
                    |_, _| {},
                );
                HostTensor::from_tensor(out.last().unwrap().clone())
            };
            let (a, b) = (run(&m), run(&again));
            match storage {
                Storage::F32 => assert_eq!(a.data, b.data),
                Storage::F16 => {
                    assert_close("f16 copy", &b, &a, 1e-2);
                }
            }
        }
    }
}

#[test]
fn guidance_of_scale_one_is_the_conditional_output() {
    let device = Device::flex();
    let seed = ard_studio::test_seed("guidance of scale one");
    let cfg = DitConfig::fashion_mnist()
        .with_image(16, 3)
        .with_patch(4)
        .with_hidden(32)
        .with_depth(2)
        .with_heads(4)
        .with_classes(5)
        .with_learn_sigma(true);
    let options = InitOptions {
        seed,
        zero_init: false,
    };
    let m = init_teacher(&cfg, None, options, &device).unwrap();
    let Model::Teacher(dit) = &m.model else {
        unreachable!()
    };
    let x = seeded_noise(vec![2, 3, 16, 16], seed ^ 4);
    let t = [500.0, 20.0];
    let plain = dit.forward(
        x.to_device(&device).unwrap(),
        &t,
        labels_to_device(&[2, 4], &device),
    );
    let guided = dit.forward_with_cfg(x.to_device(&device).unwrap(), &t, &[2, 4], 1.0, 6);
    assert_close(
        "cfg 1",
        &HostTensor::from_tensor(guided),
        &HostTensor::from_tensor(plain),
        1e-6,
    );
}

/// DiT-XL/2's full width (hidden 1152, 16 heads, patch 2, 4×32×32 latents, 1000 classes, learned
/// sigma) with 1 of its 28 blocks, written with reference key names and no metadata: the
/// architecture is read back off the shapes (the head count given, as for a truncated depth the
/// official sizes cannot be recognised), every key maps, and the file round-trips.
#[test]
fn full_width_dit_xl_2_loads_from_reference_keys() {
    let dit = DitConfig::dit_xl_2().with_depth(1);
    let model = init_teacher(
        &dit,
        None,
        InitOptions {
            seed: 9,
            zero_init: false,
        },
        &Device::flex(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    model.save(&ours, Storage::F32).unwrap();
    // The same tensors under reference names only (as the official checkpoint).
    let file = ard_engine::io::TensorFile::read(&ours).unwrap();
    let mut w = ard_engine::io::SafetensorsWriter::new();
    for key in file.tensors.keys() {
        w.add_f32(key.clone(), &file.f32(key).unwrap(), Storage::F32);
    }
    let bare = dir.path().join("bare.safetensors");
    w.write(&bare).unwrap();
    let without_heads = LoadedModel::load(&bare, &LoadOptions::default(), &Device::flex());
    let err = without_heads
        .err()
        .expect("1 block is no official size")
        .to_string();
    assert!(err.contains("--heads"), "{err}");
    let options = LoadOptions {
        num_heads: Some(16),
        history_layers: None,
    };
    let loaded = LoadedModel::load(&bare, &options, &Device::flex()).unwrap();
    let d = &loaded.meta.dit;
    assert_eq!(
        (
            d.input_size,
            d.patch_size,
            d.in_channels,
            d.hidden_size,
            d.depth,
            d.num_heads,
            d.num_classes,
            d.learn_sigma
        ),
        (32, 2, 4, 1152, 1, 16, 1000, true)
    );
    let again = dir.path().join("again.safetensors");
    loaded.save(&again, Storage::F32).unwrap();
    let (a, b) = (
        ard_engine::io::TensorFile::read(&ours).unwrap(),
        ard_engine::io::TensorFile::read(&again).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for key in a.tensors.keys() {
        assert_eq!(a.f32(key).unwrap().data, b.f32(key).unwrap().data, "{key}");
    }
}
