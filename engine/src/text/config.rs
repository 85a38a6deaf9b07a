//! The text encoder's architecture, read from a Hugging Face `config.json` (BERT's fields).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// BERT's architecture (Devlin et al. 2019), as `transformers`' `BertConfig` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Only `gelu` (the exact, erf form) is supported.
    pub hidden_act: String,
}

impl BertConfig {
    /// all-MiniLM-L6-v2 (sentence-transformers): 6 layers, hidden 384, 12 heads.
    pub fn minilm_l6() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }

    /// Reads `config.json` (unknown fields are ignored).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| EngineError::bad_file(path, format!("not a BERT config.json: {e}")))?;
        config
            .validate()
            .map_err(|e| EngineError::bad_file(path, e.to_string()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::InvalidSetting(m));
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act {:?}: only \"gelu\" is supported",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.type_vocab_size == 0 {
            return bad("vocabulary, positions and token types must not be empty".into());
        }
        Ok(())
    }
}
