//! `--text`: a prompt's encoding by the shipped all-MiniLM-L6-v2 (tokenizer, then BERT), per
//! prompt, on the CPU: what a click in the app pays before sampling starts.

use std::time::Instant;

use ard_app::assets::text_encoder_dir;
use ard_engine::Device;
use ard_engine::text::{MAX_PROMPT_TOKENS, TextEncoder};

use crate::report::out;

/// Prompts of a few lengths, as a user types them and as the emoji set's captions read.
const PROMPTS: [&str; 3] = [
    "cat face",
    "grinning face with big eyes",
    "face, grin, grinning face with smiling eyes, mouth, open, smile, happy, laugh, joy",
];

/// The encoding times, best of `repeats` after a warm-up, in a Markdown table.
pub fn text_table(repeats: usize) {
    let encoder =
        match TextEncoder::read_dir(&text_encoder_dir(), MAX_PROMPT_TOKENS, &Device::flex()) {
            Ok(e) => e,
            Err(e) => {
                out!("### Prompt encoding: skipped ({e})\n");
                return;
            }
        };
    out!("### Prompt encoding (all-MiniLM-L6-v2, CPU, batch 1, best of {repeats})\n");
    out!("| prompt | tokens | tokenize (ms) | tokenize + encode (ms) |\n|---|---|---|---|");
    for prompt in PROMPTS {
        let tokens = encoder.tokenizer.tokenize(prompt).expect("a prompt");
        let best = |f: &dyn Fn()| {
            f();
            (0..repeats.max(1))
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let tokenize = best(&|| {
            encoder.tokenizer.tokenize(prompt).expect("a prompt");
        });
        let encode = best(&|| {
            let e = encoder.encode(prompt).expect("a prompt");
            e.pooled.into_data();
        });
        out!(
            "| `{prompt}` | {} | {tokenize:.2} | {encode:.2} |",
            tokens.ids.len()
        );
    }
    out!("");
}
