//! Prompts to token ids with a Hugging Face `tokenizer.json` (BERT's WordPiece for MiniLM),
//! through the `tokenizers` crate, truncated to the encoder's length.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{EngineError, Result};

/// A prompt's token ids, with the special tokens, and whether it was cut to fit.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// A `tokenizer.json` set to cut prompts to `max_tokens` tokens (special tokens included).
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pub max_tokens: usize,
}

impl PromptTokenizer {
    /// Reads `path`; a file that does not parse is refused with the parser's reason.
    pub fn read(path: &Path, max_tokens: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_bytes(&bytes, max_tokens).map_err(|e| EngineError::bad_file(path, e.to_string()))
    }

    /// Parses a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8], max_tokens: usize) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| {
            EngineError::Format(format!(
                "not a tokenizer.json the tokenizers crate reads: {e}"
            ))
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EngineError::InvalidSetting(format!("truncation to {max_tokens}: {e}")))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            max_tokens,
        })
    }

    /// `prompt`'s ids with the special tokens (`[CLS] … [SEP]`; the empty prompt is those two).
    pub fn tokenize(&self, prompt: &str) -> Result<Tokens> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| EngineError::InvalidSetting(format!("cannot tokenize the prompt: {e}")))?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }
}
