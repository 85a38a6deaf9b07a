//! Training and evaluation data: IDX and ImageFolder datasets, captioned image sets (the emoji
//! set, `ard dataset emoji`), and latent folders (images encoded by the SD VAE).

pub(crate) mod captioned;
pub(crate) mod datasets;
pub mod emoji;
pub(crate) mod latents;
pub(crate) mod open;

pub use captioned::*;
pub use datasets::*;
pub use latents::*;
pub use open::*;
