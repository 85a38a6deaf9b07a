//! `AutoencoderKL`: encoder to a diagonal Gaussian over latents, decoder back to pixels, with
//! diffusers' key names (`encoder.*`, `decoder.*`, `quant_conv`, `post_quant_conv`).

use std::path::Path;

use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use super::blocks::{Conv, ResnetBlock, SpatialAttention, Upsample, downsample, group_norm};
use super::config::VaeConfig;
use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;
use crate::model::params::ParamSource;

/// ResNet, attention, ResNet at the coarsest level.
struct MidBlock {
    resnet0: ResnetBlock,
    attention: SpatialAttention,
    resnet1: ResnetBlock,
}

impl MidBlock {
    fn load(r: &mut ParamSource, prefix: &str, groups: usize, c: usize) -> Result<Self> {
        Ok(Self {
            resnet0: ResnetBlock::load(r, &format!("{prefix}.resnets.0"), groups, c, c)?,
            attention: SpatialAttention::load(r, &format!("{prefix}.attentions.0"), groups, c)?,
            resnet1: ResnetBlock::load(r, &format!("{prefix}.resnets.1"), groups, c, c)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.resnet1
            .forward(self.attention.forward(self.resnet0.forward(x)))
    }
}

/// One resolution level: ResNet blocks, then (all but the coarsest/finest level) a resampler.
struct Level<S> {
    resnets: Vec<ResnetBlock>,
    resample: Option<S>,
}

/// The levels `{prefix}.{i}` of `widths` (the first takes `widths[0]` channels in): `resnets`
/// ResNet blocks each, then the resampler `load_resample` makes, except after the last level.
fn load_levels<S>(
    r: &mut ParamSource,
    prefix: &str,
    widths: &[usize],
    resnets: usize,
    groups: usize,
    mut load_resample: impl FnMut(&mut ParamSource, &str, usize) -> Result<S>,
) -> Result<Vec<Level<S>>> {
    let mut levels = Vec::new();
    let mut c_in = widths[0];
    for (i, &width) in widths.iter().enumerate() {
        let prefix = format!("{prefix}.{i}");
        let resnets = (0..resnets)
            .map(|j| {
                let from = if j == 0 { c_in } else { width };
                ResnetBlock::load(r, &format!("{prefix}.resnets.{j}"), groups, from, width)
            })
            .collect::<Result<_>>()?;
        let last = i + 1 == widths.len();
        let resample = if last {
            None
        } else {
            Some(load_resample(r, &prefix, width)?)
        };
        levels.push(Level { resnets, resample });
        c_in = width;
    }
    Ok(levels)
}

/// Image `[B, 3, H, W]` → moments `[B, 2·latent, H/8, W/8]` (before `quant_conv`).
struct Encoder {
    conv_in: Conv,
    levels: Vec<Level<Conv>>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Encoder {
    fn load(r: &mut ParamSource, c: &VaeConfig) -> Result<Self> {
        let (widths, g) = (&c.block_out_channels, c.norm_num_groups);
        let conv_in = Conv::load(r, "encoder.conv_in", c.in_channels, widths[0], 3)?;
        let levels = load_levels(
            r,
            "encoder.down_blocks",
            widths,
            c.layers_per_block,
            g,
            |r, p, w| downsample(r, &format!("{p}.downsamplers.0"), w),
        )?;
        let c_in = widths[widths.len() - 1];
        Ok(Self {
            conv_in,
            levels,
            mid: MidBlock::load(r, "encoder.mid_block", g, c_in)?,
            norm_out: group_norm(r, "encoder.conv_norm_out", g, c_in)?,
            conv_out: Conv::load(r, "encoder.conv_out", c_in, 2 * c.latent_channels, 3)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.conv_in.forward(x);
        for level in &self.levels {
            for resnet in &level.resnets {
                h = resnet.forward(h);
            }
            if let Some(down) = &level.resample {
                h = down.forward(h);
            }
        }
        let h = self.mid.forward(h);
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}

/// Latent `[B, latent, h, w]` (after `post_quant_conv`) → image `[B, 3, 8h, 8w]`.
struct Decoder {
    conv_in: Conv,
    mid: MidBlock,
    levels: Vec<Level<Upsample>>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Decoder {
    fn load(r: &mut ParamSource, c: &VaeConfig) -> Result<Self> {
        let g = c.norm_num_groups;
        let widths: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let conv_in = Conv::load(r, "decoder.conv_in", c.latent_channels, widths[0], 3)?;
        let mid = MidBlock::load(r, "decoder.mid_block", g, widths[0])?;
        let levels = load_levels(
            r,
            "decoder.up_blocks",
            &widths,
            c.layers_per_block + 1,
            g,
            |r, p, w| Upsample::load(r, &format!("{p}.upsamplers.0"), w),
        )?;
        let c_in = widths[widths.len() - 1];
        Ok(Self {
            conv_in,
            mid,
            levels,
            norm_out: group_norm(r, "decoder.conv_norm_out", g, c_in)?,
            conv_out: Conv::load(r, "decoder.conv_out", c_in, c.out_channels, 3)?,
        })
    }

    fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in &self.levels {
            for resnet in &level.resnets {
                h = resnet.forward(h);
            }
            if let Some(up) = &level.resample {
                h = up.forward(h);
            }
        }
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}

/// The encoder's diagonal Gaussian over latents, each `[B, latent, h, w]`.
pub struct Posterior {
    pub mean: Tensor<4>,
    /// log σ², clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<4>,
}

/// The KL-regularised autoencoder of latent diffusion (Rombach et al., CVPR 2022) in diffusers'
/// layout: the Stable Diffusion VAE that DiT's and ARD's ImageNet models live in.
pub struct AutoencoderKL {
    pub config: VaeConfig,
    encoder: Encoder,
    quant_conv: Conv,
    post_quant_conv: Conv,
    decoder: Decoder,
}

impl std::fmt::Debug for AutoencoderKL {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKL")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKL {
    /// Builds the model from `r` (a file or fresh weights).
    pub fn load(r: &mut ParamSource, config: VaeConfig) -> Result<Self> {
        let l = config.latent_channels;
        Ok(Self {
            encoder: Encoder::load(r, &config)?,
            quant_conv: Conv::load(r, "quant_conv", 2 * l, 2 * l, 1)?,
            post_quant_conv: Conv::load(r, "post_quant_conv", l, l, 1)?,
            decoder: Decoder::load(r, &config)?,
            config,
        })
    }

    /// Reads diffusers weights (safetensors or `.pt`), the architecture from a `config.json`
    /// beside them or else from their shapes; every key must be used.
    pub fn from_file(path: &Path, device: &Device) -> Result<Self> {
        let file = TensorFile::read(path)?;
        Self::from_tensor_file(path, &file, device)
    }

    /// As [`Self::from_file`] for a file already read.
    pub fn from_tensor_file(path: &Path, file: &TensorFile, device: &Device) -> Result<Self> {
        if !is_vae(file) {
            return Err(EngineError::WrongKind(format!(
                "{} is not a VAE (AutoencoderKL with diffusers key names: encoder.*, decoder.*, post_quant_conv.*)",
                path.display()
            )));
        }
        let config = VaeConfig::for_weights(path, file)?;
        let mut r = ParamSource::file(file, device);
        let vae = Self::load(&mut r, config)?;
        r.finish()?;
        Ok(vae)
    }

    /// The device its weights live on (where [`Self::decode_host`] should run).
    pub fn device(&self) -> Device {
        self.post_quant_conv.device()
    }

    /// Refuses a diffusion model whose samples are not this VAE's latents.
    pub fn check_fits(&self, dit: &crate::model::config::DitConfig) -> Result<()> {
        if self.config.latent_channels != dit.in_channels {
            return Err(EngineError::Mismatch(format!(
                "the VAE's latents have {} channels, the model's samples {}",
                self.config.latent_channels, dit.in_channels
            )));
        }
        Ok(())
    }

    /// Decodes a diffusion model's latents `[B, C, h, w]` held on the host.
    pub fn decode_host(
        &self,
        latent: &crate::io::host::HostTensor,
        device: &Device,
    ) -> Result<crate::io::host::HostTensor> {
        let x = latent.to_device::<4>(device)?;
        Ok(crate::io::host::HostTensor::from_tensor(
            self.decode_scaled(x),
        ))
    }

    /// Image in [-1, 1], `[B, 3, H, W]` (H, W multiples of 8) → the posterior.
    pub fn encode(&self, image: Tensor<4>) -> Posterior {
        let moments = self.quant_conv.forward(self.encoder.forward(image));
        let l = self.config.latent_channels;
        Posterior {
            mean: moments.clone().narrow(1, 0, l),
            logvar: moments.narrow(1, l, l).clamp(-30.0, 20.0),
        }
    }

    /// Latent `[B, latent, h, w]` (unscaled: the posterior's space) → image `[B, 3, 8h, 8w]`,
    /// about [-1, 1].
    pub fn decode(&self, latent: Tensor<4>) -> Tensor<4> {
        self.decoder.forward(self.post_quant_conv.forward(latent))
    }

    /// A diffusion model's latent (the posterior × `scaling_factor`) → image.
    pub fn decode_scaled(&self, latent: Tensor<4>) -> Tensor<4> {
        self.decode(latent / self.config.scaling_factor)
    }

    /// Image → the latent a diffusion model sees: the posterior mean × `scaling_factor`.
    pub fn encode_scaled(&self, image: Tensor<4>) -> Tensor<4> {
        self.encode(image).mean * self.config.scaling_factor
    }
}

/// Whether a weight file holds an AutoencoderKL (diffusers key names).
pub fn is_vae(file: &TensorFile) -> bool {
    file.tensors.contains_key("post_quant_conv.weight")
        && file.tensors.keys().any(|k| k.starts_with("decoder."))
}
