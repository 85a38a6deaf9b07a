//! The prompt encoder against `transformers`' `BertModel`: token ids from the `tokenizers`
//! crate equal Python's, and the token states and mean pooling match on a tiny random BERT
//! (float64 reference) and on the shipped all-MiniLM-L6-v2 weights
//! (`tests/fixtures/text-encoder/make_fixtures.py` wrote the expectations). Bad files and
//! prompts get clear errors.

use std::path::{Path, PathBuf};

use ard_engine::io::TensorFile;
use ard_engine::text::{MAX_PROMPT_TOKENS, PromptTokenizer, TextEncoder};
use ard_engine::{Device, EngineError, HostTensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/text-encoder")
        .join(name)
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text-encoder")
}

fn prompts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixture("prompts.json")).unwrap()).unwrap()
}

fn tiny() -> TextEncoder {
    TextEncoder::read(
        &fixture("tiny_bert_config.json"),
        &shipped().join("tokenizer.json"),
        &fixture("tiny_bert.safetensors"),
        MAX_PROMPT_TOKENS,
        &Device::flex(),
    )
    .unwrap()
}

/// Runs every fixture prompt through `encoder` and compares ids, states and pooling with
/// `expected` (`{kind}_{i}` tensors); returns the largest relative errors (states, pooled).
fn compare(encoder: &TextEncoder, expected: &TensorFile, kind: (&str, &str)) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for (i, prompt) in prompts().iter().enumerate() {
        let got = encoder.encode(prompt).unwrap();
        let ids = expected.labels(&format!("ids_{i}")).unwrap();
        let want_ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        assert_eq!(
            got.tokens.ids, want_ids,
            "prompt {i} {prompt:.40?}: token ids"
        );
        let states = expected.f32(&format!("{}_{i}", kind.0)).unwrap();
        let pooled = expected.f32(&format!("{}_{i}", kind.1)).unwrap();
        let s = HostTensor::from_tensor(got.states);
        let p = HostTensor::from_tensor(got.pooled);
        let es = HostTensor::new(s.shape.clone(), states.data).relative_error(&s);
        let ep = HostTensor::new(p.shape.clone(), pooled.data).relative_error(&p);
        assert_eq!(
            states.shape.iter().product::<usize>(),
            s.data.len(),
            "prompt {i}"
        );
        worst = (worst.0.max(es), worst.1.max(ep));
    }
    worst
}

#[test]
fn tiny_bert_matches_transformers_in_float64() {
    let expected = TensorFile::read(fixture("tiny_expected.safetensors")).unwrap();
    let (states, pooled) = compare(&tiny(), &expected, ("states64", "pooled64"));
    eprintln!("tiny BERT against float64: states {states:.2e}, pooled {pooled:.2e}");
    assert!(states < 2e-6 && pooled < 2e-6, "{states:.2e} {pooled:.2e}");
}

#[test]
fn shipped_minilm_matches_transformers() {
    let encoder = TextEncoder::read_dir(&shipped(), MAX_PROMPT_TOKENS, &Device::flex()).unwrap();
    let expected = TensorFile::read(fixture("minilm_expected.safetensors")).unwrap();
    let (states, pooled) = compare(&encoder, &expected, ("states", "pooled"));
    eprintln!("all-MiniLM-L6-v2 against transformers: states {states:.2e}, pooled {pooled:.2e}");
    assert!(states < 1e-5 && pooled < 1e-5, "{states:.2e} {pooled:.2e}");
}

#[test]
fn empty_and_huge_prompts() {
    let t = PromptTokenizer::read(&shipped().join("tokenizer.json"), 32).unwrap();
    let empty = t.tokenize("").unwrap();
    assert_eq!((empty.ids.len(), empty.truncated), (2, false));
    let huge = "a very long prompt about cats ".repeat(350);
    assert!(huge.len() >= 10_000);
    let cut = t.tokenize(&huge).unwrap();
    assert_eq!((cut.ids.len(), cut.truncated), (32, true));
    assert_eq!(cut.ids.last(), empty.ids.last(), "[SEP] ends a cut prompt");
    let emoji = t.tokenize("🐱 😀 🇫🇷").unwrap();
    assert!(!emoji.truncated && emoji.ids.len() >= 3);
}

#[test]
fn bad_encoder_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // A tokenizer.json that does not parse.
    let broken = dir.path().join("tokenizer.json");
    std::fs::write(&broken, "{\"model\": ").unwrap();
    let err = PromptTokenizer::read(&broken, 32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    // Weights of another width than the config says.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny_bert_config.json")).unwrap())
            .unwrap();
    config["hidden_size"] = serde_json::json!(24);
    config["num_attention_heads"] = serde_json::json!(2);
    let wrong = dir.path().join("config.json");
    std::fs::write(&wrong, config.to_string()).unwrap();
    let err = TextEncoder::read(
        &wrong,
        &shipped().join("tokenizer.json"),
        &fixture("tiny_bert.safetensors"),
        32,
        &Device::flex(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, EngineError::WrongShape { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("embeddings.word_embeddings.weight"),
        "{err}"
    );
    // A truncated weight file.
    let bytes = std::fs::read(fixture("tiny_bert.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = TextEncoder::read(
        &fixture("tiny_bert_config.json"),
        &shipped().join("tokenizer.json"),
        &cut,
        32,
        &Device::flex(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
}
