//! The DiT output head (Peebles & Xie 2023, reference `FinalLayer`): adaLN-modulated LayerNorm
//! and a linear map to patch values. The ARD student has one per step.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::dispatch::linear;
use crate::error::Result;
use crate::model::block::{norm_modulate, split_last};
use crate::model::config::DitConfig;
use crate::model::params::{LinearInit, ParamSource, ParamWriter};

#[derive(Module, Debug)]
pub struct FinalLayer {
    pub linear: Linear,
    /// SiLU then Linear(H, 2H): shift and scale.
    pub ada_ln: Linear,
}

impl FinalLayer {
    pub fn load(r: &mut ParamSource, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        Ok(Self {
            linear: r.linear(&format!("{prefix}.linear"), h, out, LinearInit::AdaLnZero)?,
            ada_ln: r.linear(
                &format!("{prefix}.adaLN_modulation.1"),
                h,
                2 * h,
                LinearInit::AdaLnZero,
            )?,
        })
    }

    pub fn save(&self, w: &mut ParamWriter, prefix: &str) {
        w.linear(&format!("{prefix}.linear"), &self.linear);
        w.linear(&format!("{prefix}.adaLN_modulation.1"), &self.ada_ln);
    }

    /// `x: [B, T, H]`, `c: [B, H]` → `[B, T, p·p·C_out]`
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Tensor<3> {
        let m = split_last(linear(&self.ada_ln, silu(c)).unsqueeze_dim::<3>(1), 2);
        let [shift, scale] = <[Tensor<3>; 2]>::try_from(m).expect("two modulation chunks");
        linear(&self.linear, norm_modulate(x, shift, scale))
    }
}
