//! The discriminator of the adversarial stage (Kim et al., CVPR 2025, §3.3; after LADD, Sauer et
//! al., "Fast High-Resolution Image Synthesis with Latent Adversarial Diffusion Distillation",
//! 2024): the frozen teacher is the feature extractor. A sample is re-noised to a timestep t,
//! the teacher runs on (x_t, t, y), and the tokens after each of its blocks go to a light head
//! of their own, which gives one logit per token:
//!
//! `h = LReLU(LocalNorm(SNConv₁(f)))`, `h = (LReLU(LocalNorm(SNConv_k(h))) + h) / √2`,
//! `logit = ⟨SNConv₁(h), W_c·c⟩ / √d_c` — the projection discriminator (Miyato & Koyama, ICLR
//! 2018) onto the teacher's own class + time conditioning `c`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::gan::spectral::SpectralConv1d;
use crate::io::host::HostTensor;
use crate::model::params::{Init, InitOptions, LinearInit, ParamSource};

/// Shape of the discriminator's heads (one per teacher block).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    /// Width of the class/time projection.
    pub cmap_dim: usize,
    /// Kernel of the residual block's 1-D convolution over the tokens (odd, circular padding).
    pub kernel: usize,
    /// Images per group of the local batch normalisation.
    pub virtual_batch: usize,
}

impl Default for DiscriminatorConfig {
    /// The reference's head: a projection of width 64, a kernel of 9, norm groups of 8.
    fn default() -> Self {
        Self {
            cmap_dim: 64,
            kernel: 9,
            virtual_batch: 8,
        }
    }
}

/// Slope of the heads' leaky ReLU.
const LEAKY_SLOPE: f64 = 0.2;
/// The local batch normalisation's epsilon.
const NORM_EPS: f64 = 1e-5;

/// Batch normalisation over groups of images (and all their tokens), per channel, with an
/// affine map: statistics never mix more than `virtual_batch` images, as the reference's
/// `BatchNormLocal`.
#[derive(Module, Debug)]
pub struct LocalNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
}

impl LocalNorm {
    fn load(r: &mut ParamSource, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            weight: r.param(&format!("{prefix}.weight"), [c], Init::Ones)?,
            bias: r.param(&format!("{prefix}.bias"), [c], Init::Zeros)?,
        })
    }

    /// `x: [B, T, C]` → `[B, T, C]`, normalised per group of `group` images.
    pub fn forward(&self, x: Tensor<3>, group: usize) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let group = group.clamp(1, b.max(1));
        let parts: Vec<Tensor<3>> = (0..b)
            .step_by(group)
            .map(|start| {
                let n = group.min(b - start);
                let xg = x.clone().narrow(0, start, n).reshape([1, n * t, c]);
                let mean = xg.clone().mean_dim(1);
                let centred = xg - mean;
                let var = centred.clone().square().mean_dim(1);
                (centred / (var + NORM_EPS).sqrt()).reshape([n, t, c])
            })
            .collect();
        let x = Tensor::cat(parts, 0);
        x * self.weight.val().reshape([1, 1, c]) + self.bias.val().reshape([1, 1, c])
    }
}

/// One head: reads the tokens after one teacher block.
#[derive(Module, Debug)]
pub struct DiscHead {
    pub conv_in: SpectralConv1d,
    pub norm_in: LocalNorm,
    pub conv_res: SpectralConv1d,
    pub norm_res: LocalNorm,
    /// Tokens → the projection's space.
    pub cls: SpectralConv1d,
    /// Conditioning → the projection's space.
    pub cmapper: Linear,
}

impl DiscHead {
    fn load(
        r: &mut ParamSource,
        prefix: &str,
        hidden: usize,
        cfg: &DiscriminatorConfig,
    ) -> Result<Self> {
        let h = hidden;
        Ok(Self {
            conv_in: SpectralConv1d::load(r, &format!("{prefix}.conv_in"), h, h, 1)?,
            norm_in: LocalNorm::load(r, &format!("{prefix}.norm_in"), h)?,
            conv_res: SpectralConv1d::load(r, &format!("{prefix}.conv_res"), h, h, cfg.kernel)?,
            norm_res: LocalNorm::load(r, &format!("{prefix}.norm_res"), h)?,
            cls: SpectralConv1d::load(r, &format!("{prefix}.cls"), h, cfg.cmap_dim, 1)?,
            cmapper: r.linear(
                &format!("{prefix}.cmapper"),
                h,
                cfg.cmap_dim,
                LinearInit::Xavier,
            )?,
        })
    }

    /// `f: [B, T, H]` block tokens, `c: [B, H]` the teacher's conditioning → logits `[B, T]`
    pub fn forward(&self, f: Tensor<3>, c: Tensor<2>, group: usize) -> Tensor<2> {
        let h = leaky_relu(
            self.norm_in.forward(self.conv_in.forward(f), group),
            LEAKY_SLOPE,
        );
        let r = leaky_relu(
            self.norm_res
                .forward(self.conv_res.forward(h.clone()), group),
            LEAKY_SLOPE,
        );
        let h = (r + h) * std::f64::consts::FRAC_1_SQRT_2;
        let out = self.cls.forward(h); // [B, T, d_c]
        let [b, t, d] = out.dims();
        let cmap = self.cmapper.forward(c).reshape([b, 1, d]);
        ((out * cmap).sum_dim(2) / (d as f64).sqrt()).reshape([b, t])
    }

    fn power_iteration(self) -> Self {
        Self {
            conv_in: self.conv_in.power_iteration(),
            conv_res: self.conv_res.power_iteration(),
            cls: self.cls.power_iteration(),
            ..self
        }
    }
}

/// One head per teacher block.
#[derive(Module, Debug)]
pub struct Discriminator {
    pub heads: Vec<DiscHead>,
    #[module(skip)]
    pub config: DiscriminatorConfig,
}

impl Discriminator {
    /// Fresh heads for a teacher of `depth` blocks of width `hidden` (seeded).
    pub fn fresh(
        depth: usize,
        hidden: usize,
        config: &DiscriminatorConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if config.kernel.is_multiple_of(2) || config.cmap_dim == 0 || config.virtual_batch == 0 {
            return Err(EngineError::Config(format!(
                "discriminator heads need an odd kernel, a projection width ≥ 1 and norm groups ≥ 1 (got kernel {}, width {}, groups {})",
                config.kernel, config.cmap_dim, config.virtual_batch
            )));
        }
        let mut r = ParamSource::fresh(
            InitOptions {
                seed,
                zero_init: true,
            },
            device,
        );
        let heads = (0..depth)
            .map(|i| DiscHead::load(&mut r, &format!("heads.{i}"), hidden, config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            heads,
            config: config.clone(),
        })
    }

    /// Per-block tokens (depth × `[B, T, H]`) and the conditioning `[B, H]` → one logit map
    /// `[B, T]` per head.
    pub fn forward(&self, features: &[Tensor<3>], c: &Tensor<2>) -> Vec<Tensor<2>> {
        self.heads
            .iter()
            .zip(features)
            .map(|(head, f)| head.forward(f.clone(), c.clone(), self.config.virtual_batch))
            .collect()
    }

    /// One power iteration in every spectrally normalised layer (once per discriminator step).
    pub fn power_iteration(self) -> Self {
        Self {
            heads: self
                .heads
                .into_iter()
                .map(DiscHead::power_iteration)
                .collect(),
            config: self.config,
        }
    }
}

/// `x_t = √ᾱ_t·x + √(1−ᾱ_t)·ε` for `x: [B, C, H, W]` with one timestep per image (`ε` drawn on
/// the host, so the draw is the iteration's).
pub fn renoise(
    x: Tensor<4>,
    t: &[usize],
    eps: &HostTensor,
    alpha_bar: &[f64],
) -> Result<Tensor<4>> {
    let device = x.device();
    let b = t.len();
    let column = |f: &dyn Fn(f64) -> f64| {
        let v: Vec<f32> = t.iter().map(|&ti| f(alpha_bar[ti]) as f32).collect();
        Tensor::<4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &device)
    };
    let a = column(&|ab| ab.sqrt());
    let s = column(&|ab| (1.0 - ab).sqrt());
    Ok(x * a + eps.to_device::<4>(&device)? * s)
}
