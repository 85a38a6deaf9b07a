//! The Stable Diffusion VAE (`AutoencoderKL`; Rombach et al., "High-Resolution Image Synthesis
//! with Latent Diffusion Models", CVPR 2022), in which DiT and ARD model ImageNet: the
//! architecture ([`config`]), its blocks ([`blocks`]) and the encoder/decoder ([`model`]), with
//! diffusers' key names.

pub mod blocks;
pub mod config;
pub mod model;

pub use config::{SD_LATENT_SCALE, VAE_NORM_EPS, VaeConfig};
pub use model::{AutoencoderKL, Posterior, is_vae};
