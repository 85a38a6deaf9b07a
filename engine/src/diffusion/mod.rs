//! Diffusion: the noise schedule, DDIM sampling with classifier-free guidance (Song et al.,
//! "Denoising Diffusion Implicit Models", ICLR 2021), sampling any loaded model step by step,
//! and the teacher's training loss.

pub(crate) mod ddim;
pub(crate) mod loss;
pub(crate) mod sampling;
pub(crate) mod schedule;

pub use ddim::*;
pub use loss::*;
pub use sampling::*;
pub use schedule::*;
