//! Cross-attention from the image tokens to the prompt's tokens (PixArt-α's
//! `MultiHeadCrossAttention`: queries from the image, keys and values from the projected
//! prompt, no normalisation before it). A prompt's padding is never attended to.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::dispatch::{key_padded_attention, linear};
use crate::error::Result;
use crate::model::params::{LinearInit, ParamSource, ParamWriter};
use crate::model::text_condition::TextContext;

#[derive(Module, Debug)]
pub struct CrossAttention {
    pub q: Linear,
    pub kv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl CrossAttention {
    pub fn load(
        r: &mut ParamSource,
        prefix: &str,
        hidden: usize,
        num_heads: usize,
    ) -> Result<Self> {
        let mut lin =
            |name: &str, out: usize, init| r.linear(&format!("{prefix}.{name}"), hidden, out, init);
        Ok(Self {
            q: lin("q_linear", hidden, LinearInit::Xavier)?,
            kv: lin("kv_linear", 2 * hidden, LinearInit::Xavier)?,
            // PixArt-α zeroes the output projection: training starts from the label-free DiT.
            proj: lin("proj", hidden, LinearInit::AdaLnZero)?,
            num_heads,
        })
    }

    pub fn save(&self, w: &mut ParamWriter, prefix: &str) {
        w.linear(&format!("{prefix}.q_linear"), &self.q);
        w.linear(&format!("{prefix}.kv_linear"), &self.kv);
        w.linear(&format!("{prefix}.proj"), &self.proj);
    }

    /// `x: [B', S, T, H]` (B' = B, or B × steps with the steps folded into the batch, item-major)
    /// against `context.tokens: [B, L, H]` → `[B', S, T, H]`. Each image token attends to its
    /// own prompt independently, so steps and tokens are all queries of one prompt.
    pub fn forward(&self, x: Tensor<4>, context: &TextContext) -> Tensor<4> {
        let [b_x, s, t, h] = x.dims();
        let [b, l, _] = context.tokens.dims();
        let (nh, hd) = (self.num_heads, h / self.num_heads);
        let lq = b_x * s * t / b;
        let q = linear(&self.q, x.reshape([b, lq, h]))
            .reshape([b, lq, nh, hd])
            .swap_dims(1, 2);
        let kv = linear(&self.kv, context.tokens.clone())
            .reshape([b, l, 2, nh, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| kv.clone().narrow(0, i, 1).reshape([b, nh, l, hd]);
        let out = key_padded_attention(q, part(0), part(1), context.lengths.as_deref());
        linear(&self.proj, out.swap_dims(1, 2).reshape([b, lq, h])).reshape([b_x, s, t, h])
    }
}
