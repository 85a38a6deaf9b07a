//! ARD Studio engine: the DiT teacher, its DDIM sampler, and the autoregressive-distillation
//! (ARD) student, with weight files that use the reference implementation's key names.
//!
//! Everything computes on a runtime [`burn::tensor::Device`]: `flex` on the CPU or `wgpu`.
//!
//! | module | what |
//! |---|---|
//! | [`model`] | architectures and presets, DiT block, ARD student, block-causal attention, precision, weight files |
//! | [`text`] | prompts to token states: the tokenizer and the MiniLM sentence encoder (BERT) |
//! | [`diffusion`] | noise schedule, DDIM + guidance, sampling a model step by step, the teacher's loss |
//! | [`distill`] | trajectory sets, the distillation loss |
//! | [`gan`] | stage 2: the teacher-feature discriminator, hinge losses, adversarial fine-tuning |
//! | [`train`] | options and defaults, AdamW / EMA / checkpoints, training jobs, the pipeline |
//! | [`eval`] | feature network, FID / KID / precision-recall, FLOPs |
//! | [`data`] | datasets, latent folders (ImageFolder → SD-VAE latents), class names, prompt matching |
//! | [`io`] | safetensors / `.pt` files, host tensors, previews, PNG settings |
//! | [`cpu`] | our CPU kernels: fused attention forward/backward, its burn extension and autodiff node |
//! | [`wgsl`] | our WGSL attention kernel: tiling, float64 reference, wgpu runner, burn extension |
//! | [`vae`] | the SD VAE (AutoencoderKL): latents ↔ pixels for ImageNet-scale latent models |
//! | [`studio`] | the app's engine thread: requests in, events out |

pub mod conditioning;
pub mod cpu;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod dispatch;
pub mod distill;
pub mod error;
pub mod eval;
pub mod gan;
pub mod io;
pub mod jobs;
pub mod model;
pub mod ops;
pub mod studio;
pub mod text;
pub mod train;
pub mod vae;
pub mod wgsl;

pub use burn;
pub use burn::tensor::Device;
pub use error::{EngineError, Result};
pub use io::HostTensor;
pub use model::{DitConfig, LoadedModel, Model, ModelKind, ModelMeta, StudentConfig};
