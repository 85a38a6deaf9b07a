//! Text conditioning: prompts through a pretrained sentence encoder, all-MiniLM-L6-v2 (a
//! 6-layer BERT: Devlin et al. 2019; Wang et al. 2020; Reimers & Gurevych 2019), whose token
//! states a text-conditioned DiT cross-attends to (PixArt-α, Chen et al. 2024).

pub mod bert;
pub mod config;
pub mod encoder;
pub mod tokenizer;

pub use bert::{Bert, mean_pool};
pub use config::BertConfig;
pub use encoder::*;
pub use tokenizer::{PromptTokenizer, Tokens};
