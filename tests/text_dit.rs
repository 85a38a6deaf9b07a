//! The text-conditioned DiT (PixArt-α's block: self-attention, cross-attention to the prompt,
//! MLP; adaLN on the timestep and the pooled prompt) against an independent float64 PyTorch
//! implementation (`tests/fixtures/text-dit/make_fixture.py`), and its ARD student: the cached
//! autoregressive pass equals the teacher-forced one for prompts of different lengths, and a
//! prompt's padding never matters. Kind mismatches are refused clearly.

use std::path::Path;

use ard_engine::diffusion::{DdimOptions, SampleRequest, sample};
use ard_engine::io::{HostTensor, Storage, TensorFile, seeded_noise};
use ard_engine::model::{
    ArdStudent, Cond, DitConfig, HostPrompts, InitOptions, LoadOptions, LoadedModel, Model,
    PromptBatch, StudentConfig, TextConfig, init_teacher, student_from_teacher,
};
use ard_engine::{Device, EngineError};
use ard_studio::assert_close;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/text-dit")
        .join(name)
}

/// The io file's prompts `{states, lengths, pooled}{suffix}` on `device`.
fn prompts(io: &TensorFile, suffix: &str, device: &Device) -> PromptBatch {
    let lengths = io.labels(&format!("lengths{suffix}")).unwrap();
    HostPrompts {
        states: io.f32(&format!("states{suffix}")).unwrap(),
        lengths: lengths.iter().map(|&n| n as usize).collect(),
        pooled: io.f32(&format!("pooled{suffix}")).unwrap(),
    }
    .to_device(device)
    .unwrap()
}

fn t_of(io: &TensorFile, key: &str) -> Vec<f32> {
    io.f32(key).unwrap().data
}

#[test]
fn text_dit_matches_the_float64_reference() {
    let device = Device::flex();
    let m = LoadedModel::load(
        fixture("tiny_text_dit.safetensors"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    assert!(m.meta.dit.is_text());
    let Model::Teacher(dit) = &m.model else {
        panic!("a teacher")
    };
    let io = TensorFile::read(fixture("tiny_text_dit_io.safetensors")).unwrap();
    let x = |k: &str| io.f32(k).unwrap().to_device::<4>(&device).unwrap();
    let cond = prompts(&io, "", &device);
    let out = dit.forward(x("x"), &t_of(&io, "t"), cond.clone());
    let e1 = assert_close(
        "out",
        &HostTensor::from_tensor(out),
        &io.f32("out64").unwrap(),
        5e-6,
    );
    // A prompt longer than the model reads is cut to its first max_tokens tokens.
    let long = dit.forward(
        x("x_long"),
        &t_of(&io, "t_long"),
        prompts(&io, "_long", &device),
    );
    let e2 = assert_close(
        "long",
        &HostTensor::from_tensor(long),
        &io.f32("out_long64").unwrap(),
        5e-6,
    );
    // Guidance against the empty prompt, repeated per image.
    let null = HostPrompts {
        states: io.f32("null_states").unwrap(),
        lengths: vec![2],
        pooled: io.f32("null_pooled").unwrap(),
    }
    .repeat(3)
    .to_device(&device)
    .unwrap();
    let guided = dit.forward_guided(
        x("x"),
        &t_of(&io, "t"),
        &Cond::Text(cond),
        &Cond::Text(null),
        4.0,
        3,
    );
    let e3 = assert_close(
        "guided",
        &HostTensor::from_tensor(guided),
        &io.f32("guided64").unwrap(),
        5e-6,
    );
    eprintln!("text DiT against float64: {e1:.2e}, long prompt {e2:.2e}, guided {e3:.2e}");
}

fn text_student(seed: u64, device: &Device) -> (LoadedModel, DitConfig) {
    let dit = DitConfig::fashion_mnist()
        .with_image(8, 3)
        .with_patch(2)
        .with_hidden(16)
        .with_depth(3)
        .with_heads(2)
        .with_text(TextConfig {
            encoder: "test".into(),
            caption_channels: 12,
            max_tokens: 6,
        });
    let options = InitOptions {
        seed,
        zero_init: false,
    };
    let teacher = init_teacher(&dit, None, options, device).unwrap();
    (
        student_from_teacher(teacher, StudentConfig::new(3, 2)).unwrap(),
        dit,
    )
}

/// Three prompts of 5, 2 and 4 tokens, random states (zero padding), on `device`.
fn random_prompts(seed: u64) -> HostPrompts {
    let mut states = seeded_noise(vec![3, 5, 12], seed);
    let lengths = vec![5, 2, 4];
    for (b, &n) in lengths.iter().enumerate() {
        for t in n..5 {
            states.data[(b * 5 + t) * 12..(b * 5 + t + 1) * 12].fill(0.0);
        }
    }
    HostPrompts {
        states,
        lengths,
        pooled: seeded_noise(vec![3, 12], seed ^ 1),
    }
}

fn student(m: &LoadedModel) -> &ArdStudent {
    match &m.model {
        Model::Student(s) => s,
        Model::Teacher(_) => unreachable!(),
    }
}

#[test]
fn text_student_cached_inference_equals_the_teacher_forced_pass() {
    let device = Device::flex();
    let seed = ard_studio::test_seed("text student");
    let (m, cfg) = text_student(seed, &device);
    let s = student(&m);
    let p = random_prompts(seed).to_device(&device).unwrap();
    let noise = seeded_noise(cfg.batch_shape(3), seed ^ 2)
        .to_device::<4>(&device)
        .unwrap();
    let preds = s.sample(noise.clone(), p.clone(), |_, _| {});
    let mut inputs = vec![noise];
    inputs.extend(preds.iter().take(2).cloned());
    let full = s.forward_teacher_forced(&inputs, p.clone()).unwrap();
    for (k, (a, b)) in preds.into_iter().zip(full).enumerate() {
        assert_close(
            &format!("step {k}"),
            &HostTensor::from_tensor(a),
            &HostTensor::from_tensor(b.narrow(1, 0, 3)),
            1e-5,
        );
    }
    // Padding is never read: other values there change nothing.
    let mut host = random_prompts(seed);
    host.states.data[(5 + 3) * 12..(5 + 4) * 12].fill(7.0); // prompt 1 (2 tokens), token 3
    let again = s
        .forward_teacher_forced(&inputs, host.to_device(&device).unwrap())
        .unwrap();
    let before = s.forward_teacher_forced(&inputs, p).unwrap();
    for (a, b) in again.into_iter().zip(before) {
        assert_eq!(
            HostTensor::from_tensor(a).data,
            HostTensor::from_tensor(b).data
        );
    }
}

#[test]
fn text_models_round_trip_and_refuse_the_wrong_condition() {
    let device = Device::flex();
    let (m, cfg) = text_student(3, &device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    m.save(&path, Storage::F32).unwrap();
    let again = LoadedModel::load(&path, &LoadOptions::default(), &device).unwrap();
    assert_eq!(again.meta, m.meta);
    let prompts = random_prompts(5);
    let null = HostPrompts {
        states: seeded_noise(vec![1, 2, 12], 6),
        lengths: vec![2],
        pooled: seeded_noise(vec![1, 12], 7),
    };
    let request = |labels: Vec<i64>, with_prompts: bool| SampleRequest {
        noise: seeded_noise(cfg.batch_shape(3), 8),
        labels,
        prompts: with_prompts.then(|| ard_engine::diffusion::PromptRequest {
            text: vec!["a".into(), "b".into(), "c".into()],
            encoded: prompts.clone(),
            null: null.clone(),
        }),
        ddim: DdimOptions::default(),
    };
    let out = sample(&again, &request(vec![], true), &device, |_| {}).unwrap();
    assert_eq!(out.images.shape, cfg.batch_shape(3));
    let err = sample(&again, &request(vec![0, 1, 2], false), &device, |_| {}).unwrap_err();
    assert!(matches!(err, EngineError::WrongKind(_)), "{err}");
    assert!(err.to_string().contains("text-conditioned"), "{err}");
    let class_model = ard_studio::tiny_teacher_model(3, None, 1);
    let mut req = request(vec![], true);
    req.noise = seeded_noise(class_model.meta.dit.batch_shape(3), 9);
    let err = sample(&class_model, &req, &device, |_| {}).unwrap_err();
    assert!(err.to_string().contains("class-conditional"), "{err}");
}

/// A captioned set of `n` 8×8 images of two kinds (a bright left or top half) with two
/// caption forms each, written as `captions.tsv` under `dir`.
fn toy_captioned_set(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut table = String::from("file\tclass\tcaption_name\tcaption_keywords\n");
    for i in 0..n {
        let left = i % 2 == 0;
        let image = image::RgbImage::from_fn(8, 8, |x, y| {
            let on = if left { x < 4 } else { y < 4 };
            image::Rgb(if on { [250, 200, 40] } else { [20, 30, 90] })
        });
        image.save(dir.join(format!("images/{i}.png"))).unwrap();
        let (class, name, keywords) = match left {
            true => ("left", "a bright left half", "left, bright"),
            false => ("top", "a bright top half", "top, bright"),
        };
        table += &format!("images/{i}.png\t{class}\t{name}\t{keywords}\n");
    }
    std::fs::write(dir.join("captions.tsv"), table).unwrap();
}

/// The tiny random BERT of the encoder fixtures (16 wide) with the shipped tokenizer.
fn tiny_encoder(max_tokens: usize) -> ard_engine::text::TextEncoder {
    let text = Path::new(env!("CARGO_MANIFEST_DIR"));
    ard_engine::text::TextEncoder::read(
        &text.join("tests/fixtures/text-encoder/tiny_bert_config.json"),
        &text.join("assets/text-encoder/tokenizer.json"),
        &text.join("tests/fixtures/text-encoder/tiny_bert.safetensors"),
        max_tokens,
        &Device::flex(),
    )
    .unwrap()
}

#[test]
fn a_text_teacher_trains_on_captions_and_resumes_exactly() {
    use ard_engine::jobs::{CaptionBank, train_text_teacher};
    use ard_engine::train::{Hooks, Phase, TrainingEvent};
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("set");
    toy_captioned_set(&data, 8);
    let set = ard_engine::data::load_captioned(&data, 8, 3).unwrap();
    let encoder = tiny_encoder(8);
    let bank = CaptionBank::encode(&set, &encoder, |_, _| {}).unwrap();
    assert_eq!(bank.text.len(), 4, "two forms of two captions");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let dropped = bank.draw(&[0, 1, 2], 1.0, &mut rng);
    assert_eq!(dropped, bank.null.repeat(3));
    let text = TextConfig {
        encoder: "tiny".into(),
        caption_channels: 16,
        max_tokens: 8,
    };
    let options = ard_studio::toy_teacher_options(ard_studio::toy_train_options(4));
    let train = |dir: &Path, iterations: u64, resume: bool| {
        let mut events = Vec::new();
        let mut options = options.clone();
        options.train.iterations = iterations;
        let mut run = ard_studio::toy_run_dir(dir, resume);
        run.sample_every = 2;
        run.prompts = Some(std::sync::Arc::new(ard_engine::diffusion::PromptRequest {
            text: vec![bank.text[0].clone(), bank.text[2].clone()],
            encoded: HostPrompts::stack(&[&bank.encoded[0], &bank.encoded[2]]),
            null: bank.null.clone(),
        }));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let hooks = Hooks {
            phase: Phase::Teacher,
            stop: &stop,
            on_event: &mut |e| events.push(e),
        };
        train_text_teacher(&set, &bank, &text, &options, &run, &Device::flex(), hooks).unwrap();
        events
    };
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
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    assert!(a.join("samples/iter-0000004.png").exists());
    train(&b, 2, false);
    train(&b, 4, true);
    assert_eq!(
        ard_studio::file_weights(&a.join("teacher.safetensors")),
        ard_studio::file_weights(&b.join("teacher.safetensors"))
    );
    let teacher = LoadedModel::load(
        a.join("teacher.safetensors"),
        &LoadOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(teacher.meta.dit.text.as_ref(), Some(&text));
}

/// `ard sample` on a text model: a prompt goes through the shipped encoder (also an empty one
/// and a 10,000-character one); classes, a non-UTF-8 prompt, and an encoder of another width
/// are refused with the model's kind or the widths named.
#[test]
fn ard_sample_encodes_prompts_for_a_text_model() {
    use ard_app::cli::run_args;
    let dir = tempfile::tempdir().unwrap();
    let dit = DitConfig::fashion_mnist()
        .with_image(8, 3)
        .with_patch(4)
        .with_hidden(16)
        .with_depth(1)
        .with_heads(2)
        .with_text(TextConfig::minilm());
    let options = InitOptions {
        seed: 4,
        zero_init: false,
    };
    let weights = dir.path().join("text.safetensors");
    init_teacher(&dit, None, options, &Device::flex())
        .unwrap()
        .save(&weights, Storage::F32)
        .unwrap();
    let w = weights.display().to_string();
    let info = ard_app::cli::run_args_output(["ard", "info", &w]).unwrap();
    assert!(
        info.contains("text:        all-MiniLM-L6-v2 token states (384 wide, up to 32 tokens)"),
        "{info}"
    );
    assert!(!info.contains("classes:"), "{info}");
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "ard",
            "sample",
            "--device",
            "cpu",
            "--weights",
            &w,
            "--steps",
            "2",
        ];
        args.extend_from_slice(extra);
        run_args(args)
    };
    let png = dir.path().join("apple.png").display().to_string();
    sample(&[
        "--prompt",
        "a red apple",
        "--batch",
        "2",
        "--seed",
        "1",
        "--png",
        &png,
    ])
    .unwrap();
    let image = image::open(&png).unwrap();
    assert!(image.width() > image.height(), "two images side by side");
    sample(&["--prompt", ""]).unwrap();
    sample(&["--prompt", &"a very long prompt about cats ".repeat(350)]).unwrap();
    let err = sample(&["--labels", "1"]).unwrap_err().to_string();
    assert!(
        err.contains("text-conditioned") && err.contains("--prompt"),
        "{err}"
    );
    let bad: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(vec![b'a', 0xff, b'b']);
    let args: Vec<std::ffi::OsString> = ["ard", "sample", "--weights", &w, "--prompt"]
        .iter()
        .map(Into::into)
        .chain([bad])
        .collect();
    let err = run_args(args).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("utf-8"), "{err}");
    // The fixture's tiny model reads 12-wide states; the shipped encoder gives 384.
    let tiny = fixture("tiny_text_dit.safetensors").display().to_string();
    let err = run_args([
        "ard",
        "sample",
        "--weights",
        &tiny,
        "--prompt",
        "cat",
        "--device",
        "cpu",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("384") && err.contains("12"), "{err}");
}
