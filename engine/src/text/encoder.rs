//! The prompt encoder a text-conditioned model reads: a tokenizer and a BERT from one folder
//! (`config.json`, `tokenizer.json`, one `.safetensors`), giving the token states the model's
//! cross-attention reads and the mean-pooled sentence embedding.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::weights::TensorFile;
use crate::model::config::TextConfig;
use crate::model::params::ParamSource;
use crate::model::text_condition::{HostPrompts, PromptBatch};
use crate::text::bert::{Bert, mean_pool};
use crate::text::config::BertConfig;
use crate::text::tokenizer::{PromptTokenizer, Tokens};

/// Tokens a prompt is cut to by default (sentence-transformers' `max_seq_length` of
/// all-MiniLM-L6-v2; special tokens included).
pub const MAX_PROMPT_TOKENS: usize = 256;
/// The name a text-conditioned model's metadata gives the encoder it was trained with.
pub const MINILM_L6_V2: &str = "all-MiniLM-L6-v2";

/// A prompt, encoded.
#[derive(Clone, Debug)]
pub struct EncodedPrompt {
    /// `[1, T, H]`: one state per token, `[CLS]` and `[SEP]` included.
    pub states: Tensor<3>,
    /// `[1, H]`: the mean of the token states (Sentence-BERT's pooling).
    pub pooled: Tensor<2>,
    pub tokens: Tokens,
}

/// Tokenizer + BERT.
pub struct TextEncoder {
    pub tokenizer: PromptTokenizer,
    pub bert: Bert,
    /// The weight file it was read from.
    pub weights: PathBuf,
}

impl TextEncoder {
    /// Reads the encoder in `dir`: `config.json`, `tokenizer.json` and its one `.safetensors`.
    pub fn read_dir(dir: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let weights = weight_file(dir)?;
        Self::read(
            &dir.join("config.json"),
            &dir.join("tokenizer.json"),
            &weights,
            max_tokens,
            device,
        )
    }

    /// The encoder in `dir` for a model that reads `text`: prompts cut to its tokens, and
    /// token states of its width (another width is refused, naming both).
    pub fn read_for(dir: &Path, text: &TextConfig, device: &Device) -> Result<Self> {
        let encoder = Self::read_dir(dir, text.max_tokens, device)?;
        let width = encoder.bert.config.hidden_size;
        if width != text.caption_channels {
            return Err(EngineError::Mismatch(format!(
                "{}: token states {width} wide; the model reads {} ({})",
                dir.display(),
                text.caption_channels,
                text.encoder
            )));
        }
        Ok(encoder)
    }

    /// Reads the three files; a weight file whose tensors do not fit the config is refused
    /// naming the first tensor that does not.
    pub fn read(
        config: &Path,
        tokenizer: &Path,
        weights: &Path,
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self> {
        let config = BertConfig::read(config)?;
        if max_tokens < 2 || max_tokens > config.max_position_embeddings {
            return Err(EngineError::InvalidSetting(format!(
                "prompts of {max_tokens} tokens: the encoder takes 2 to {}",
                config.max_position_embeddings
            )));
        }
        let tokenizer = PromptTokenizer::read(tokenizer, max_tokens)?;
        let file = TensorFile::read(weights)?;
        let mut source = ParamSource::file(&file, device);
        let bert = Bert::load(&mut source, &config)?;
        source.finish().or_else(allow_unused_parts)?;
        Ok(Self {
            tokenizer,
            bert,
            weights: weights.to_path_buf(),
        })
    }

    /// `prompts` encoded for a model (on the host): token states padded to the longest prompt,
    /// lengths, pooled embeddings. A prompt repeated in the list is encoded once.
    pub fn encode_prompts(&self, prompts: &[String]) -> Result<HostPrompts> {
        let mut encoded: Vec<(&str, EncodedPrompt)> = Vec::new();
        let mut order = Vec::with_capacity(prompts.len());
        for p in prompts {
            let i = match encoded.iter().position(|(q, _)| *q == p.as_str()) {
                Some(i) => i,
                None => {
                    encoded.push((p, self.encode(p)?));
                    encoded.len() - 1
                }
            };
            order.push(i);
        }
        let states: Vec<_> = order.iter().map(|&i| encoded[i].1.states.clone()).collect();
        let pooled: Vec<_> = order.iter().map(|&i| encoded[i].1.pooled.clone()).collect();
        let batch = PromptBatch::from_prompts(&states, &pooled);
        Ok(HostPrompts {
            states: HostTensor::from_tensor(batch.states),
            lengths: batch.lengths,
            pooled: HostTensor::from_tensor(batch.pooled),
        })
    }

    /// The empty prompt: guidance's null condition (`[CLS] [SEP]`).
    pub fn null_prompt(&self) -> Result<HostPrompts> {
        self.encode_prompts(&[String::new()])
    }

    /// `prompt`'s token states and pooled embedding.
    pub fn encode(&self, prompt: &str) -> Result<EncodedPrompt> {
        let tokens = self.tokenizer.tokenize(prompt)?;
        let states = self.bert.forward(&tokens.ids)?;
        Ok(EncodedPrompt {
            pooled: mean_pool(states.clone()),
            states,
            tokens,
        })
    }
}

/// Parts of a `BertModel` file that mean pooling does not read: the `[CLS]` pooler
/// (`pooler.dense`) and, in older files, the `embeddings.position_ids` buffer (0..max
/// positions). Any other unread key is an error.
fn allow_unused_parts(e: EngineError) -> Result<()> {
    match e {
        EngineError::UnexpectedKeys { keys }
            if keys
                .iter()
                .all(|k| k.starts_with("pooler.dense.") || k == "embeddings.position_ids") =>
        {
            Ok(())
        }
        other => Err(other),
    }
}

/// The one `.safetensors` file in `dir`.
fn weight_file(dir: &Path) -> Result<PathBuf> {
    let read = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    match files.len() {
        1 => Ok(files.remove(0)),
        0 => Err(EngineError::DataNotFound(format!(
            "no .safetensors weights in the text encoder folder {}",
            dir.display()
        ))),
        n => Err(EngineError::InvalidSetting(format!(
            "{n} .safetensors files in the text encoder folder {}: keep one",
            dir.display()
        ))),
    }
}
