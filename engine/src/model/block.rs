//! The DiT block with adaLN-Zero conditioning (Peebles & Xie 2023, reference `DiTBlock`), and
//! its parts: LayerNorm, modulation, timm's MLP with tanh-GELU.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::dispatch::{gelu_tanh, linear};
use crate::error::Result;
use crate::model::attention::{Mixing, SelfAttention};
use crate::model::config::DitConfig;
use crate::model::cross_attention::CrossAttention;
use crate::model::params::{LinearInit, ParamSource, ParamWriter};
use crate::model::text_condition::TextContext;

/// adaLN's `modulate(layer_norm(x), shift, scale)`, on the kernels `dispatch.rs` picks.
pub use crate::dispatch::ln_modulate as norm_modulate;
pub use crate::ops::{layer_norm, modulate};

/// Splits `[.., n·H]` into n tensors of `[.., H]`.
pub fn split_last<const D: usize>(x: Tensor<D>, n: usize) -> Vec<Tensor<D>> {
    x.chunk(n, D - 1)
}

/// timm's `Mlp` with tanh-approximated GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(&self.fc2, gelu_tanh(linear(&self.fc1, x)))
    }
}

/// Attention and MLP, each modulated (shift, scale) and gated by the conditioning; in a
/// text-conditioned model, cross-attention to the prompt between them (PixArt-α's block).
#[derive(Module, Debug)]
pub struct DitBlock {
    pub attn: SelfAttention,
    /// Text-conditioned models only: attention to the prompt's tokens.
    pub cross_attn: Option<CrossAttention>,
    pub mlp: Mlp,
    /// SiLU then Linear(H, 6H): shift/scale/gate for attention, then for the MLP.
    pub ada_ln: Linear,
}

impl DitBlock {
    pub fn load(r: &mut ParamSource, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attn: SelfAttention::load(r, &format!("{prefix}.attn"), h, cfg.num_heads)?,
            cross_attn: match cfg.is_text() {
                true => Some(CrossAttention::load(
                    r,
                    &format!("{prefix}.cross_attn"),
                    h,
                    cfg.num_heads,
                )?),
                false => None,
            },
            mlp: Mlp {
                fc1: r.linear(
                    &format!("{prefix}.mlp.fc1"),
                    h,
                    cfg.mlp_hidden,
                    LinearInit::Xavier,
                )?,
                fc2: r.linear(
                    &format!("{prefix}.mlp.fc2"),
                    cfg.mlp_hidden,
                    h,
                    LinearInit::Xavier,
                )?,
            },
            ada_ln: r.linear(
                &format!("{prefix}.adaLN_modulation.1"),
                h,
                6 * h,
                LinearInit::AdaLnZero,
            )?,
        })
    }

    pub fn save(&self, w: &mut ParamWriter, prefix: &str) {
        self.attn.save(w, &format!("{prefix}.attn"));
        if let Some(cross) = &self.cross_attn {
            cross.save(w, &format!("{prefix}.cross_attn"));
        }
        w.linear(&format!("{prefix}.mlp.fc1"), &self.mlp.fc1);
        w.linear(&format!("{prefix}.mlp.fc2"), &self.mlp.fc2);
        w.linear(&format!("{prefix}.adaLN_modulation.1"), &self.ada_ln);
    }

    /// `x: [B, S, T, H]` tokens of S steps, `c: [B, S, H]` one conditioning per step, the
    /// prompt's `context` (text models) → `[B, S, T, H]`
    pub fn forward(
        &self,
        x: Tensor<4>,
        c: Tensor<3>,
        mixing: Mixing,
        context: Option<&TextContext>,
    ) -> Tensor<4> {
        let [b, s, t, h] = x.dims();
        let m = split_last(linear(&self.ada_ln, silu(c)).unsqueeze_dim::<4>(2), 6);
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ] = <[Tensor<4>; 6]>::try_from(m).expect("six modulation chunks");

        let h_attn = norm_modulate(x.clone(), shift_msa, scale_msa);
        let attn = self
            .attn
            .forward(h_attn.reshape([b, s * t, h]), mixing)
            .reshape([b, s, t, h]);
        let mut x = x + gate_msa * attn;
        if let (Some(cross), Some(context)) = (&self.cross_attn, context) {
            x = x.clone() + cross.forward(x, context);
        }

        let h_mlp = norm_modulate(x.clone(), shift_mlp, scale_mlp);
        x + gate_mlp * self.mlp.forward(h_mlp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn gelu_tanh_matches_the_float64_tanh_formula() {
        let device = crate::device::DeviceChoice::Cpu.device().unwrap();
        let x = Tensor::<2>::random([64, 513], Distribution::Uniform(-12.0, 12.0), &device);
        let xs = x.to_data().try_to_vec::<f32>().unwrap();
        let ys = gelu_tanh(x).to_data().try_to_vec::<f32>().unwrap();
        let c = (2.0 / std::f64::consts::PI).sqrt();
        for (&x, &y) in xs.iter().zip(&ys) {
            let x = x as f64;
            let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
            let err = (y as f64 - want).abs() / want.abs().max(1e-3);
            assert!(err < 1e-5, "gelu_tanh({x}) = {y}, want {want}");
        }
        let edge = Tensor::<1>::from_data(TensorData::from([-1e4f32, 0.0, 1e4]), &device);
        let ys = gelu_tanh(edge).to_data().try_to_vec::<f32>().unwrap();
        assert_eq!(ys, vec![0.0, 0.0, 1e4]);
    }

    #[test]
    fn layer_norm_matches_the_float64_definition() {
        let device = crate::device::DeviceChoice::Cpu.device().unwrap();
        let (rows, width) = (37, 96);
        let x = Tensor::<2>::random([rows, width], Distribution::Normal(3.0, 2.0), &device);
        let xs = x.to_data().try_to_vec::<f32>().unwrap();
        let ys = layer_norm(x).to_data().try_to_vec::<f32>().unwrap();
        for (row, out) in xs.chunks(width).zip(ys.chunks(width)) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
            for (&v, &y) in row.iter().zip(out) {
                let want = (v as f64 - mean) / (var + 1e-6).sqrt();
                assert!(
                    (y as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{y} vs {want}"
                );
            }
        }
    }
}
