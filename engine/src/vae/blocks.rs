//! The VAE's building blocks, as diffusers names them: `Conv`, `ResnetBlock2D` (GroupNorm,
//! SiLU, 3×3 convolutions, a 1×1 shortcut when the width changes), the mid-block's
//! single-head self-attention, and the 2× down/up-samplers (the encoder's stride-2 convolution
//! after a right/bottom pad of one, the decoder's nearest-neighbour doubling then a convolution).

use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::config::VAE_NORM_EPS;
use crate::error::Result;
use crate::model::params::{Init, LinearInit, ParamSource};

/// A 2-D convolution with bias.
pub struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
}

impl Conv {
    /// The device its weights live on.
    pub fn device(&self) -> Device {
        self.weight.device()
    }

    /// `prefix.weight` `[c_out, c_in, k, k]` and `prefix.bias`, "same" padding (k / 2 each side).
    pub fn load(
        r: &mut ParamSource,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
    ) -> Result<Self> {
        let pad = k / 2;
        Self::with_options(
            r,
            prefix,
            [c_in, c_out, k],
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        )
    }

    fn with_options(
        r: &mut ParamSource,
        prefix: &str,
        [c_in, c_out, k]: [usize; 3],
        options: ConvOptions<2>,
    ) -> Result<Self> {
        let fan = Init::Xavier {
            fan_in: c_in * k * k,
            fan_out: c_out * k * k,
        };
        Ok(Self {
            weight: r
                .param(&format!("{prefix}.weight"), [c_out, c_in, k, k], fan)?
                .val(),
            bias: r
                .param(&format!("{prefix}.bias"), [c_out], Init::Zeros)?
                .val(),
            options,
        })
    }

    /// `x: [B, c_in, H, W]` → `[B, c_out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        )
    }
}

/// diffusers' GroupNorm (affine, ε = 1e-6) over `channels`.
pub fn group_norm(
    r: &mut ParamSource,
    prefix: &str,
    groups: usize,
    channels: usize,
) -> Result<GroupNorm> {
    Ok(GroupNorm {
        gamma: Some(r.param(&format!("{prefix}.weight"), [channels], Init::Ones)?),
        beta: Some(r.param(&format!("{prefix}.bias"), [channels], Init::Zeros)?),
        num_groups: groups,
        num_channels: channels,
        epsilon: VAE_NORM_EPS,
        affine: true,
    })
}

/// `ResnetBlock2D` without a time embedding: `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`,
/// the residual through a 1×1 `conv_shortcut` when the width changes.
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    norm2: GroupNorm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResnetBlock {
    pub fn load(
        r: &mut ParamSource,
        prefix: &str,
        groups: usize,
        c_in: usize,
        c_out: usize,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(r, &format!("{prefix}.norm1"), groups, c_in)?,
            conv1: Conv::load(r, &format!("{prefix}.conv1"), c_in, c_out, 3)?,
            norm2: group_norm(r, &format!("{prefix}.norm2"), groups, c_out)?,
            conv2: Conv::load(r, &format!("{prefix}.conv2"), c_out, c_out, 3)?,
            shortcut: if c_in != c_out {
                Some(Conv::load(
                    r,
                    &format!("{prefix}.conv_shortcut"),
                    c_in,
                    c_out,
                    1,
                )?)
            } else {
                None
            },
        })
    }

    /// `x: [B, c_in, H, W]` → `[B, c_out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        residual + h
    }
}

/// The mid-block's self-attention over all H·W positions, one head of the full width, with a
/// residual connection. Reads both diffusers spellings: `to_q/to_k/to_v/to_out.0` and the older
/// `query/key/value/proj_attn`.
pub struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialAttention {
    pub fn load(r: &mut ParamSource, prefix: &str, groups: usize, c: usize) -> Result<Self> {
        let old = r.contains(&format!("{prefix}.query.weight"));
        let [q, k, v, out] = if old {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        // Old checkpoints store these as 1×1 convolutions, `[C, C, 1, 1]`.
        let mut linear = |name: &str| {
            let key = format!("{prefix}.{name}");
            if r.shape_of(&format!("{key}.weight"))
                .is_some_and(|s| s.len() == 4)
            {
                r.patch_linear(&key, c, [c, 1, 1])
            } else {
                r.linear(&key, c, c, LinearInit::Xavier)
            }
        };
        let (q, k, v, out) = (linear(q)?, linear(k)?, linear(v)?, linear(out)?);
        Ok(Self {
            norm: group_norm(r, &format!("{prefix}.group_norm"), groups, c)?,
            q,
            k,
            v,
            out,
        })
    }

    /// `x: [B, C, H, W]` → `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        // [B, C, H, W] → [B, H·W, C]
        let tokens = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let heads = |t: Tensor<3>| t.unsqueeze_dim::<4>(1);
        let attended = crate::dispatch::attention(
            heads(self.q.forward(tokens.clone())),
            heads(self.k.forward(tokens.clone())),
            heads(self.v.forward(tokens)),
            crate::ops::AttentionMask::None,
        );
        let out = self.out.forward(attended.squeeze_dim::<3>(1));
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}

/// The encoder's 2× down-sampler: pad one column right and one row bottom, 3×3 stride 2.
pub fn downsample(r: &mut ParamSource, prefix: &str, c: usize) -> Result<Conv> {
    let options = ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 1);
    Conv::with_options(r, &format!("{prefix}.conv"), [c, c, 3], options)
}

/// The decoder's 2× up-sampler: nearest-neighbour doubling, then a 3×3 convolution.
pub struct Upsample {
    conv: Conv,
}

impl Upsample {
    pub fn load(r: &mut ParamSource, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv::load(r, &format!("{prefix}.conv"), c, c, 3)?,
        })
    }

    /// `x: [B, C, H, W]` → `[B, C, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let doubled = x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
        self.conv.forward(doubled)
    }
}
