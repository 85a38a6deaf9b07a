//! ARD Studio engine: the DiT teacher, its DDIM sampler, and the autoregressive-distillation
//! (ARD) student, with weight files that use the reference implementation's key names.
//!
//! Everything computes on a runtime [`burn::tensor::Device`]: `flex` on the CPU or `wgpu`.

pub mod attention;
pub mod classes;
pub mod config;
pub mod data;
pub mod device;
pub mod diffusion_loss;
pub mod distill_loss;
pub mod dit;
pub mod dit_block;
pub mod embedding;
pub mod error;
pub mod eval;
pub mod feature_net;
pub mod final_layer;
pub mod generate;
pub mod host;
pub mod init;
pub mod jobs;
pub mod model;
pub mod params;
pub mod png_settings;
pub mod preview;
pub mod sampler;
pub mod schedule;
pub mod student;
pub mod studio;
pub mod train;
pub mod trajectories;
pub mod weights;
pub mod wgsl_attention;

pub use burn;
pub use burn::tensor::Device;
pub use config::{DitConfig, ModelKind, ModelMeta, StudentConfig};
pub use error::{EngineError, Result};
pub use host::HostTensor;
pub use model::{LoadedModel, Model};
