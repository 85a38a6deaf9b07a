//! Bad weight files give a clear error naming the file, key or shape — never a panic.

use std::path::{Path, PathBuf};

use ard_engine::io::{SafetensorsWriter, Storage, TensorFile};
use ard_engine::model::{LoadOptions, LoadedModel};
use ard_engine::{Device, EngineError};
use ard_studio::reference;

fn options() -> LoadOptions {
    LoadOptions {
        num_heads: Some(4),
        history_layers: Some(2),
    }
}

fn load_err(path: &Path, options: &LoadOptions) -> String {
    match LoadedModel::load(path, options, &Device::flex()) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites a reference file with `edit` applied to its (name, tensor) list.
fn rewrite(
    src: &str,
    dir: &Path,
    edit: impl Fn(&mut Vec<(String, ard_engine::HostTensor)>),
) -> PathBuf {
    let file = TensorFile::read(reference(src)).unwrap();
    let mut tensors: Vec<_> = file
        .tensors
        .keys()
        .map(|k| (k.clone(), file.f32(k).unwrap()))
        .collect();
    edit(&mut tensors);
    let mut w = SafetensorsWriter::new();
    for (k, t) in &tensors {
        w.add_f32(k, t, Storage::F32);
    }
    let path = dir.join(format!("edited-{src}"));
    w.write(&path).unwrap();
    path
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(reference("dit_teacher.safetensors")).unwrap();
    let path = dir.path().join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(&path, &options());
    assert!(
        msg.contains("cut.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn truncated_pytorch_checkpoint_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(reference("dit_teacher.pt")).unwrap();
    let path = dir.path().join("cut.pt");
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let msg = load_err(&path, &options());
    assert!(msg.contains("cut.pt") && msg.contains("PyTorch"), "{msg}");
}

#[test]
fn text_and_tiny_files_are_not_weights() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "these are not the weights you are looking for\n").unwrap();
    let msg = load_err(&text, &options());
    assert!(msg.contains("not a valid safetensors"), "{msg}");
    let tiny = dir.path().join("tiny.bin");
    std::fs::write(&tiny, [1u8, 2, 3]).unwrap();
    let msg = load_err(&tiny, &options());
    assert!(msg.contains("too short"), "{msg}");
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, []).unwrap();
    assert!(load_err(&empty, &options()).contains("too short"));
}

#[test]
fn missing_file_names_the_path() {
    let msg = load_err(Path::new("/nonexistent/dit.safetensors"), &options());
    assert!(msg.contains("/nonexistent/dit.safetensors"), "{msg}");
}

#[test]
fn wrong_shape_names_key_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite("dit_teacher.safetensors", dir.path(), |ts| {
        let t = ts
            .iter_mut()
            .find(|(k, _)| k == "blocks.1.mlp.fc1.weight")
            .unwrap();
        t.1 = ard_engine::HostTensor::zeros(vec![255, 64]);
    });
    let err = LoadedModel::load(&path, &options(), &Device::flex())
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::WrongShape { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.1.mlp.fc1.weight")
            && msg.contains("[255, 64]")
            && msg.contains("[256, 64]"),
        "{msg}"
    );
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite("dit_teacher.safetensors", dir.path(), |ts| {
        ts.retain(|(k, _)| k != "blocks.2.attn.proj.bias");
    });
    let msg = load_err(&path, &options());
    assert!(
        msg.contains("missing key `blocks.2.attn.proj.bias`"),
        "{msg}"
    );
}

#[test]
fn student_with_a_hole_in_its_heads_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite("ard_student.safetensors", dir.path(), |ts| {
        ts.retain(|(k, _)| !k.starts_with("final_layer3."));
    });
    let msg = load_err(&path, &options());
    assert!(msg.contains("final_layer4"), "{msg}");
}

#[test]
fn reference_files_ask_for_what_shapes_cannot_tell() {
    let msg = load_err(
        &reference("dit_teacher.safetensors"),
        &LoadOptions::default(),
    );
    assert!(msg.contains("--heads"), "{msg}");
    let msg = load_err(
        &reference("ard_student.safetensors"),
        &LoadOptions {
            num_heads: Some(4),
            history_layers: None,
        },
    );
    assert!(msg.contains("--history-layers"), "{msg}");
    let msg = load_err(
        &reference("ard_student.safetensors"),
        &LoadOptions {
            num_heads: Some(4),
            history_layers: Some(9),
        },
    );
    assert!(msg.contains("exceeds the depth"), "{msg}");
    let msg = load_err(
        &reference("dit_teacher.safetensors"),
        &LoadOptions {
            num_heads: Some(3),
            history_layers: None,
        },
    );
    assert!(msg.contains("3 heads"), "{msg}");
}

#[test]
fn a_teacher_is_not_silently_read_as_a_file_with_extra_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite("dit_teacher.safetensors", dir.path(), |ts| {
        ts.push((
            "optimizer.step".into(),
            ard_engine::HostTensor::zeros(vec![1]),
        ));
    });
    let msg = load_err(&path, &options());
    assert!(msg.contains("optimizer.step"), "{msg}");
}

#[test]
fn writing_a_model_twice_gives_the_same_bytes() {
    use ard_engine::io::Storage;
    let dir = tempfile::tempdir().unwrap();
    let model =
        ard_studio::tiny_teacher_model(3, Some(vec!["a".into(), "b".into(), "c".into()]), 0);
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    model.save(&a, Storage::F32).unwrap();
    model.save(&b, Storage::F32).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn non_finite_values_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, what) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let path = rewrite("dit_teacher.safetensors", dir.path(), |t| {
            let (_, tensor) = t
                .iter_mut()
                .find(|(k, _)| k == "blocks.1.attn.proj.weight")
                .unwrap();
            tensor.data[3] = bad;
        });
        let msg = load_err(&path, &options());
        assert!(
            msg.contains("blocks.1.attn.proj.weight") && msg.contains("1 NaN or infinite"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn tensors_are_read_when_asked_and_a_file_cut_meanwhile_is_reported() {
    // Opening reads the header only: a tensor's bytes come from the file when asked for, so a
    // file truncated after it was opened fails then, naming the tensor, instead of loading.
    for name in ["dit_teacher.safetensors", "dit_teacher.pt"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::copy(reference(name), &path).unwrap();
        let file = TensorFile::read(&path).unwrap();
        let key = "final_layer.linear.weight";
        let want = file.f32(key).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let errors: Vec<String> = file
            .tensors
            .keys()
            .filter_map(|k| file.f32(k).err().map(|e| e.to_string()))
            .collect();
        assert!(
            !errors.is_empty(),
            "{name}: every tensor still read after the cut"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.contains(name) && e.contains("could not be read")),
            "{name}: {errors:?}"
        );
        // What was read before the cut is intact.
        assert_eq!(want.shape, vec![8 * 4, 64]);
    }
}
