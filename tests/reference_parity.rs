//! Parity with the reference implementation's vectors (tests/fixtures/ard-reference), on the
//! CPU (flex): the teacher's DDIM trajectory, the student's teacher-forced forward and its
//! autoregressive inference, each with relative error below 1e-4.

use ard_engine::HostTensor;
use ard_engine::diffusion::{DdimOptions, ddim_trajectory};
use ard_engine::io::Storage;
use ard_engine::io::labels_to_device;
use ard_engine::model::ArdStudent;
use ard_engine::model::sincos_pos_embed_2d;
use ard_engine::model::{LoadOptions, LoadedModel, Model};
use ard_engine::{Device, ModelKind};
use ard_studio::{CPU_PARITY as PARITY, assert_close, load_reference, reference, reference_file};

fn cpu() -> Device {
    Device::flex()
}

fn teacher(m: &LoadedModel) -> &ard_engine::model::Dit {
    match &m.model {
        Model::Teacher(d) => d,
        Model::Student(_) => panic!("expected a teacher"),
    }
}

fn student(m: &LoadedModel) -> &ArdStudent {
    match &m.model {
        Model::Student(s) => s,
        Model::Teacher(_) => panic!("expected a student"),
    }
}

#[test]
fn reference_shapes_give_the_reference_config() {
    let m = load_reference("dit_teacher.safetensors", &cpu());
    let text = std::fs::read_to_string(reference("meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| meta[k].as_u64().unwrap() as usize;
    let d = &m.meta.dit;
    assert_eq!(m.meta.kind, ModelKind::Teacher);
    assert_eq!(
        (
            d.input_size,
            d.patch_size,
            d.in_channels,
            d.hidden_size,
            d.depth,
            d.num_classes
        ),
        (
            n("input_size"),
            n("patch_size"),
            n("in_channels"),
            n("hidden_size"),
            n("depth"),
            n("num_classes")
        )
    );
    assert_eq!(d.learn_sigma, meta["learn_sigma"].as_bool().unwrap());
    let s = load_reference("ard_student.safetensors", &cpu());
    assert_eq!(s.meta.kind, ModelKind::Student);
    let sc = s.meta.student.as_ref().unwrap();
    assert_eq!((sc.steps, sc.history_layers), (4, n("stack")));
}

#[test]
fn computed_positions_equal_the_stored_table() {
    let file = reference_file("dit_teacher.safetensors");
    let stored = file.f32("pos_embed").unwrap();
    let computed = HostTensor::new(stored.shape.clone(), sincos_pos_embed_2d(64, 16));
    assert_close("pos_embed", &computed, &stored, 1e-6);
}

#[test]
fn teacher_ddim_trajectory_matches_reference() {
    let device = cpu();
    let m = load_reference("dit_teacher.safetensors", &device);
    let io = reference_file("ddim_io.safetensors");
    let noise = io.f32("noise").unwrap();
    let labels = io.labels("y").unwrap();
    let steps = ddim_trajectory(
        teacher(&m),
        noise.to_device(&device).unwrap(),
        &labels,
        &DdimOptions::default(),
    );
    assert_eq!(steps.len(), 25);
    let mut worst: f64 = 0.0;
    for s in &steps {
        for (name, t) in [
            (format!("zt_{}", s.index), &s.state),
            (format!("pred_z0_{}", s.index), &s.x0_pred),
        ] {
            let got = HostTensor::from_tensor(t.clone());
            worst = worst.max(assert_close(&name, &got, &io.f32(&name).unwrap(), PARITY));
        }
    }
    eprintln!("teacher DDIM: worst relative error over 50 tensors {worst:.2e}");
}

#[test]
fn pytorch_checkpoint_loads_the_same_teacher() {
    let device = cpu();
    let st = load_reference("dit_teacher.safetensors", &device);
    let pt = load_reference("dit_teacher.pt", &device);
    let io = reference_file("ddim_io.safetensors");
    let x = io.f32("noise").unwrap();
    let labels = io.labels("y").unwrap();
    let run = |m: &LoadedModel| {
        let out = teacher(m).forward(
            x.to_device(&device).unwrap(),
            &[500.0, 500.0],
            labels_to_device(&labels, &device),
        );
        HostTensor::from_tensor(out)
    };
    assert_eq!(run(&st).data, run(&pt).data);
}

#[test]
fn student_teacher_forced_forward_matches_reference() {
    let device = cpu();
    let m = load_reference("ard_student.safetensors", &device);
    let io = reference_file("ard_io.safetensors");
    let inputs: Vec<_> = ["zT", "z15", "z10", "z5"]
        .iter()
        .map(|k| io.f32(k).unwrap().to_device::<4>(&device).unwrap())
        .collect();
    let y = labels_to_device(&io.labels("y").unwrap(), &device);
    let outs = student(&m).forward_teacher_forced(&inputs, y).unwrap();
    for (name, out) in ["forward_z15", "forward_z10", "forward_z5", "forward_z0"]
        .iter()
        .zip(outs)
    {
        let err = assert_close(
            name,
            &HostTensor::from_tensor(out),
            &io.f32(name).unwrap(),
            PARITY,
        );
        eprintln!("{name}: {err:.2e}");
    }
}

#[test]
fn student_inference_matches_reference() {
    let device = cpu();
    let m = load_reference("ard_student.safetensors", &device);
    let io = reference_file("ard_io.safetensors");
    let noise = io.f32("zT").unwrap().to_device(&device).unwrap();
    let y = labels_to_device(&io.labels("y").unwrap(), &device);
    let preds = student(&m).sample(noise, y, |_, _| {});
    let names = student(&m).config().output_names("infer");
    assert_eq!(names, ["infer_z15", "infer_z10", "infer_z5", "infer_z0"]);
    for (name, p) in names.iter().zip(preds) {
        let err = assert_close(
            name,
            &HostTensor::from_tensor(p),
            &io.f32(name).unwrap(),
            PARITY,
        );
        eprintln!("{name}: {err:.2e}");
    }
}

#[test]
fn kv_cached_inference_equals_masked_forward_on_its_own_predictions() {
    let device = cpu();
    let m = load_reference("ard_student.safetensors", &device);
    let s = student(&m);
    // Fresh inputs, not the reference's: the equivalence must hold for any noise and labels.
    let seed = ard_studio::test_seed("kv cache on its own predictions");
    let noise = ard_engine::io::seeded_noise(vec![3, 4, 32, 32], seed);
    let labels = [1i64, 9, 4];
    let preds = s.sample(
        noise.to_device(&device).unwrap(),
        labels_to_device(&labels, &device),
        |_, _| {},
    );
    let mut inputs = vec![noise.to_device::<4>(&device).unwrap()];
    inputs.extend(preds.iter().take(3).cloned());
    let full = s
        .forward_teacher_forced(&inputs, labels_to_device(&labels, &device))
        .unwrap();
    for (k, (p, f)) in preds.into_iter().zip(full).enumerate() {
        let f = HostTensor::from_tensor(f.narrow(1, 0, 4));
        assert_close(&format!("step {k}"), &HostTensor::from_tensor(p), &f, 1e-5);
    }
}

#[test]
fn saved_student_describes_itself_and_reloads_identically() {
    let device = cpu();
    let m = load_reference("ard_student.safetensors", &device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("student.safetensors");
    m.save(&path, Storage::F32).unwrap();
    // No --heads, no --history-layers: the header says it all.
    let again = LoadedModel::load(&path, &LoadOptions::default(), &device).unwrap();
    assert_eq!(again.meta, m.meta);
    assert_eq!(again.num_params(), m.num_params());
    let io = reference_file("ard_io.safetensors");
    let y = io.labels("y").unwrap();
    let run = |m: &LoadedModel| {
        student(m).sample(
            io.f32("zT").unwrap().to_device(&device).unwrap(),
            labels_to_device(&y, &device),
            |_, _| {},
        )
    };
    for (a, b) in run(&m).into_iter().zip(run(&again)) {
        assert_eq!(
            HostTensor::from_tensor(a).data,
            HostTensor::from_tensor(b).data
        );
    }
}
