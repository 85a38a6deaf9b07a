//! The networks: the DiT teacher (Peebles & Xie, "Scalable Diffusion Models with
//! Transformers", ICCV 2023) and the ARD student built on it (Kim et al., "Autoregressive
//! Distillation of Diffusion Transformers", CVPR 2025), with their weight files; conditioned on
//! class labels, or on prompts through cross-attention (PixArt-α, Chen et al., ICLR 2024).

pub(crate) mod attention;
pub(crate) mod block;
pub(crate) mod config;
pub(crate) mod cross_attention;
pub(crate) mod dit;
pub(crate) mod embedding;
pub(crate) mod final_layer;
pub(crate) mod init;
pub(crate) mod loaded;
pub(crate) mod params;
pub(crate) mod precision;
pub(crate) mod student;
pub(crate) mod text_condition;

pub use attention::*;
pub use block::*;
pub use config::*;
pub use cross_attention::*;
pub use dit::*;
pub use embedding::*;
pub use final_layer::*;
pub use init::*;
pub use loaded::*;
pub use params::*;
pub use precision::*;
pub use student::*;
pub use text_condition::*;
