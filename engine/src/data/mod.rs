//! Training and evaluation data: IDX and ImageFolder datasets, and latent folders (images
//! encoded by the SD VAE).

pub(crate) mod datasets;
pub(crate) mod latents;
pub(crate) mod open;

pub use datasets::*;
pub use latents::*;
pub use open::*;
