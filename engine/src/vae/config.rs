//! The AutoencoderKL architecture: diffusers' `config.json` fields, the Stable Diffusion preset,
//! and what the weight shapes tell when no `config.json` lies beside the file.

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;

/// The latent scale of the SD VAE: DiT's latents are the posterior times this (Rombach et al.).
pub const SD_LATENT_SCALE: f32 = 0.18215;

/// GroupNorm's epsilon everywhere in the VAE (diffusers' `eps=1e-6`).
pub const VAE_NORM_EPS: f64 = 1e-6;

/// The fields of a diffusers `AutoencoderKL` `config.json` that decide the network.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels of each resolution level, finest first (each level but the last halves H, W).
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder has one more).
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scale")]
    pub scaling_factor: f32,
}

fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn sd_scale() -> f32 {
    SD_LATENT_SCALE
}

impl VaeConfig {
    /// The Stable Diffusion VAE (`sd-vae-ft-ema`, `sd-vae-ft-mse`): the one DiT and ARD decode
    /// with. 8× down-sampling, 4 latent channels.
    pub fn sd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: SD_LATENT_SCALE,
        }
    }

    /// Parses a diffusers `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::Format(format!("VAE config.json: {e}")))?;
        config.check()?;
        Ok(config)
    }

    /// The architecture of the weights at `path`: its `config.json` when one lies beside it,
    /// else the SD preset with the widths, depth and latent size read from the shapes.
    pub fn for_weights(path: &Path, file: &TensorFile) -> Result<Self> {
        let beside = path.with_file_name("config.json");
        if beside.is_file() {
            let text = std::fs::read_to_string(&beside).map_err(|e| EngineError::io(&beside, e))?;
            return Self::from_json(&text);
        }
        Self::from_shapes(file)
    }

    /// The SD preset adjusted to the shapes of `file` (group count stays SD's 32: shapes do
    /// not hold it).
    pub fn from_shapes(file: &TensorFile) -> Result<Self> {
        let shape = |key: &str| file.tensors.get(key).map(|t| t.shape.clone());
        let mut widths = Vec::new();
        while let Some(s) = shape(&format!(
            "encoder.down_blocks.{}.resnets.0.conv1.weight",
            widths.len()
        )) {
            widths.push(s[0]);
        }
        if widths.is_empty() {
            return Err(EngineError::WrongKind(
                "not an AutoencoderKL: no `encoder.down_blocks.0.resnets.0.conv1.weight` (diffusers key names expected)".into(),
            ));
        }
        let mut layers = 0;
        while file.tensors.contains_key(&format!(
            "encoder.down_blocks.0.resnets.{layers}.conv1.weight"
        )) {
            layers += 1;
        }
        let conv_in = shape("encoder.conv_in.weight").unwrap_or_default();
        let post = shape("post_quant_conv.weight").unwrap_or_default();
        let conv_out = shape("decoder.conv_out.weight").unwrap_or_default();
        let sd = Self::sd();
        let config = Self {
            in_channels: conv_in.get(1).copied().unwrap_or(sd.in_channels),
            out_channels: conv_out.first().copied().unwrap_or(sd.out_channels),
            block_out_channels: widths,
            layers_per_block: layers,
            latent_channels: post.first().copied().unwrap_or(sd.latent_channels),
            norm_num_groups: sd.norm_num_groups,
            scaling_factor: sd.scaling_factor,
        };
        config.check()?;
        Ok(config)
    }

    /// Spatial down-sampling factor between image and latent.
    pub fn downsampling(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(EngineError::InvalidSetting(format!("VAE config: {what}")));
        if self.block_out_channels.is_empty() || self.layers_per_block == 0 {
            return bad("needs at least one level and one layer per block".into());
        }
        if self.norm_num_groups == 0 {
            return bad("norm_num_groups is 0".into());
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c % self.norm_num_groups != 0)
        {
            return bad(format!(
                "{c} channels do not split into {} groups (is norm_num_groups right? put the diffusers config.json beside the weights)",
                self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return bad(format!(
                "scaling_factor {} must be positive",
                self.scaling_factor
            ));
        }
        Ok(())
    }
}
