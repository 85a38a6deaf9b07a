//! Stage 2 of ARD (Kim et al., "Autoregressive Distillation of Diffusion Transformers", CVPR
//! 2025, §3.3): adversarial fine-tuning of the distilled student against a discriminator built
//! on the frozen teacher (after LADD, Sauer et al. 2024), with hinge losses and VQGAN's
//! adaptive weight. The authors' code lacks these losses; the design is ours
//! (`docs/distillation.md`).

pub(crate) mod discriminator;
pub(crate) mod finetune;
pub(crate) mod loss;
pub(crate) mod spectral;

pub use discriminator::*;
pub use finetune::*;
pub use loss::*;
pub use spectral::*;
