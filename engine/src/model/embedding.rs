//! Input embeddings of a DiT (Peebles & Xie 2023, reference `models.py`): patches, fixed 2-D
//! sin-cos positions (MAE's), sinusoidal timesteps through an MLP, and labels with a null row
//! for classifier-free guidance.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::dispatch::linear;
use crate::error::Result;
use crate::model::config::DitConfig;
use crate::model::params::{Init, LinearInit, ParamSource, ParamWriter};
use crate::model::precision::cast_like;

/// `[N, C, H, W]` → `[N, T, C·p·p]`, patches in row-major order, values in (c, y, x) order
/// (the layout of a stride-p convolution's weight).
pub fn patchify(x: Tensor<4>, p: usize) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    let (gh, gw) = (h / p, w / p);
    x.reshape([n, c, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([n, gh * gw, c * p * p])
}

/// `[N, T, p·p·C]` → `[N, C, H, W]` (the reference `unpatchify`: `nhwpqc -> nchpwq`).
pub fn unpatchify(x: Tensor<3>, p: usize, channels: usize) -> Tensor<4> {
    let [n, t, _] = x.dims();
    let g = (t as f64).sqrt().round() as usize;
    x.reshape([n, g, g, p, p, channels])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([n, channels, g * p, g * p])
}

/// Fixed 2-D sin-cos position table `[grid², dim]`: the first half encodes the column, the
/// second the row (MAE's `get_2d_sincos_pos_embed`, computed in f64 as numpy does).
pub fn sincos_pos_embed_2d(dim: usize, grid: usize) -> Vec<f32> {
    let half = dim / 2;
    let one_d = |pos: f64, out: &mut Vec<f32>| {
        let quarter = half / 2;
        let omegas = (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64));
        let args: Vec<f64> = omegas.map(|o| pos * o).collect();
        out.extend(args.iter().map(|a| a.sin() as f32));
        out.extend(args.iter().map(|a| a.cos() as f32));
    };
    let mut table = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            one_d(col as f64, &mut table);
            one_d(row as f64, &mut table);
        }
    }
    table
}

/// Sinusoidal features `[n, dim]` of (possibly fractional) timesteps: `[cos(t·f), sin(t·f)]`
/// with `f_i = exp(−ln(10⁴)·i/half)`, in f32 as the reference computes them.
pub fn timestep_features(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let neg_log = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((i as f32 * neg_log) / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        out.extend(freqs.iter().map(|f| (ti * f).cos()));
        out.extend(freqs.iter().map(|f| (ti * f).sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// Stride-p patch convolution, computed as a linear map over flattened patches.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Linear,
    pub patch_size: usize,
    pub in_channels: usize,
}

impl PatchEmbed {
    pub fn load(r: &mut ParamSource, cfg: &DitConfig) -> Result<Self> {
        let p = cfg.patch_size;
        Ok(Self {
            proj: r.patch_linear("x_embedder.proj", cfg.hidden_size, [cfg.in_channels, p, p])?,
            patch_size: p,
            in_channels: cfg.in_channels,
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        let p = self.patch_size;
        w.patch_linear("x_embedder.proj", &self.proj, [self.in_channels, p, p]);
    }

    /// `[N, C, H, W]` → `[N, T, hidden]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        linear(&self.proj, patchify(x, self.patch_size))
    }
}

/// Timestep → hidden: sinusoidal features, Linear, SiLU, Linear.
#[derive(Module, Debug)]
pub struct TimestepEmbedder {
    pub fc1: Linear,
    pub fc2: Linear,
    pub frequency_size: usize,
}

impl TimestepEmbedder {
    pub fn load(r: &mut ParamSource, cfg: &DitConfig) -> Result<Self> {
        let (h, f) = (cfg.hidden_size, cfg.frequency_embedding_size);
        Ok(Self {
            fc1: r.linear("t_embedder.mlp.0", f, h, LinearInit::Normal(0.02))?,
            fc2: r.linear("t_embedder.mlp.2", h, h, LinearInit::Normal(0.02))?,
            frequency_size: f,
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        w.linear("t_embedder.mlp.0", &self.fc1);
        w.linear("t_embedder.mlp.2", &self.fc2);
    }

    /// `t: [n]` → `[n, hidden]`
    pub fn forward(&self, t: &[f32], device: &Device) -> Tensor<2> {
        let feats = TensorData::new(
            timestep_features(t, self.frequency_size),
            [t.len(), self.frequency_size],
        );
        let x = cast_like(
            Tensor::<2>::from_data(feats, device),
            &self.fc1.weight.val(),
        );
        linear(&self.fc2, silu(linear(&self.fc1, x)))
    }
}

/// Class label → hidden; row `num_classes` is the null class used for guidance.
#[derive(Module, Debug)]
pub struct LabelEmbedder {
    pub table: Param<Tensor<2>>,
    pub num_classes: usize,
}

impl LabelEmbedder {
    pub fn load(r: &mut ParamSource, cfg: &DitConfig) -> Result<Self> {
        Ok(Self {
            table: r.param(
                "y_embedder.embedding_table.weight",
                [cfg.num_classes + 1, cfg.hidden_size],
                Init::Normal(0.02),
            )?,
            num_classes: cfg.num_classes,
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        w.tensor("y_embedder.embedding_table.weight", &self.table);
    }

    /// The label used for the unconditional half of classifier-free guidance.
    pub fn null_class(&self) -> i64 {
        self.num_classes as i64
    }

    /// `y: [B]` → `[B, hidden]`
    pub fn forward(&self, y: Tensor<1, Int>) -> Tensor<2> {
        self.table.val().select(0, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_features_at_zero_are_cos_one_sin_zero() {
        let f = timestep_features(&[0.0], 8);
        assert_eq!(f, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn pos_embed_first_token_is_sin0_cos0() {
        let t = sincos_pos_embed_2d(8, 2);
        assert_eq!(&t[..8], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // token 1 is column 1, row 0: only the first half moves
        assert!((t[8] - 1f32.sin()).abs() < 1e-7);
        assert_eq!(&t[12..16], &[0.0, 0.0, 1.0, 1.0]);
    }
}
