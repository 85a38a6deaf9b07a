//! The DiT block with adaLN-Zero conditioning.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu_approximate, silu};

use crate::attention::{Mixing, SelfAttention};
use crate::config::DitConfig;
use crate::error::Result;
use crate::params::{ParamReader, ParamWriter};

/// LayerNorm over the last axis without affine parameters (eps 1e-6).
pub fn layer_norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + 1e-6).sqrt()
}

/// `x · (1 + scale) + shift`
pub fn modulate<const D: usize>(x: Tensor<D>, shift: Tensor<D>, scale: Tensor<D>) -> Tensor<D> {
    x * (scale + 1.0) + shift
}

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
        self.fc2.forward(gelu_approximate(self.fc1.forward(x)))
    }
}

/// Attention and MLP, each modulated (shift, scale) and gated by the conditioning.
#[derive(Module, Debug)]
pub struct DitBlock {
    pub attn: SelfAttention,
    pub mlp: Mlp,
    /// SiLU then Linear(H, 6H): shift/scale/gate for attention, then for the MLP.
    pub ada_ln: Linear,
}

impl DitBlock {
    pub fn load(r: &mut ParamReader, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attn: SelfAttention::load(r, &format!("{prefix}.attn"), h, cfg.num_heads)?,
            mlp: Mlp {
                fc1: r.linear(&format!("{prefix}.mlp.fc1"), h, cfg.mlp_hidden)?,
                fc2: r.linear(&format!("{prefix}.mlp.fc2"), cfg.mlp_hidden, h)?,
            },
            ada_ln: r.linear(&format!("{prefix}.adaLN_modulation.1"), h, 6 * h)?,
        })
    }

    pub fn save(&self, w: &mut ParamWriter, prefix: &str) {
        self.attn.save(w, &format!("{prefix}.attn"));
        w.linear(&format!("{prefix}.mlp.fc1"), &self.mlp.fc1);
        w.linear(&format!("{prefix}.mlp.fc2"), &self.mlp.fc2);
        w.linear(&format!("{prefix}.adaLN_modulation.1"), &self.ada_ln);
    }

    /// `x: [B, S, T, H]` tokens of S steps, `c: [B, S, H]` one conditioning per step
    /// → `[B, S, T, H]`
    pub fn forward(&self, x: Tensor<4>, c: Tensor<3>, mixing: Mixing) -> Tensor<4> {
        let [b, s, t, h] = x.dims();
        let m = split_last(self.ada_ln.forward(silu(c)).unsqueeze_dim::<4>(2), 6);
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ] = <[Tensor<4>; 6]>::try_from(m).expect("six modulation chunks");

        let h_attn = modulate(layer_norm(x.clone()), shift_msa, scale_msa);
        let attn = self
            .attn
            .forward(h_attn.reshape([b, s * t, h]), mixing)
            .reshape([b, s, t, h]);
        let x = x + gate_msa * attn;

        let h_mlp = modulate(layer_norm(x.clone()), shift_mlp, scale_mlp);
        x + gate_mlp * self.mlp.forward(h_mlp)
    }
}
