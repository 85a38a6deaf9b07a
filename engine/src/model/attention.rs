//! Multi-head self-attention over trajectory steps (timm's `Attention`, as DiT uses it), with
//! ARD's block-causal mask and key/value cache (Kim et al., CVPR 2025).
//!
//! Tokens come grouped by trajectory step. The three ways a block mixes them:
//! - [`Mixing::Full`]: every token sees every token (the teacher; one step at a time).
//! - [`Mixing::BlockCausal`]: a token of step k sees the tokens of steps ≤ k (ARD's lower N
//!   blocks in the teacher-forced pass). Computed as K attentions over growing key prefixes, so
//!   no masked score is ever formed.
//! - [`Mixing::Cached`]: the current step's queries against the cached keys/values of the
//!   earlier steps plus its own (ARD's lower N blocks at inference); the cache grows by one step.
//!
//! The block-diagonal mask of the upper blocks is [`Mixing::Full`] with the steps folded into
//! the batch.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::dispatch::{attention, linear};
use crate::error::Result;
use crate::model::params::{LinearInit, ParamSource, ParamWriter};
use crate::ops::AttentionMask;

/// How the tokens of a pass attend to each other.
pub enum Mixing<'a> {
    Full,
    BlockCausal { steps: usize },
    Cached(&'a mut KvCache),
}

/// Keys and values of the steps seen so far by one block, `[B, heads, tokens, head_dim]`.
#[derive(Default, Clone, Debug)]
pub struct KvCache {
    pub keys: Option<Tensor<4>>,
    pub values: Option<Tensor<4>>,
}

impl KvCache {
    /// Cached tokens (steps × tokens per step).
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let k = match self.keys.take() {
            Some(prev) => Tensor::cat(vec![prev, k], 2),
            None => k,
        };
        let v = match self.values.take() {
            Some(prev) => Tensor::cat(vec![prev, v], 2),
            None => v,
        };
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        (k, v)
    }
}

/// softmax(q kᵀ / √d) v — `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]`.
pub fn scaled_dot_product(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    attention(q, k, v, AttentionMask::None)
}

/// The block-causal pass over `steps` steps of tokens: a token of step k sees the keys of
/// steps ≤ k (every kernel skips the masked keys rather than scoring them).
fn block_causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, steps: usize) -> Tensor<4> {
    let mask = AttentionMask::BlockCausal {
        tokens_per_step: q.dims()[2] / steps,
        q_step_offset: 0,
    };
    attention(q, k, v, mask)
}

/// timm's `Attention`: fused qkv projection, heads, output projection.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl SelfAttention {
    pub fn load(
        r: &mut ParamSource,
        prefix: &str,
        hidden: usize,
        num_heads: usize,
    ) -> Result<Self> {
        Ok(Self {
            qkv: r.linear(
                &format!("{prefix}.qkv"),
                hidden,
                3 * hidden,
                LinearInit::Xavier,
            )?,
            proj: r.linear(
                &format!("{prefix}.proj"),
                hidden,
                hidden,
                LinearInit::Xavier,
            )?,
            num_heads,
        })
    }

    pub fn save(&self, w: &mut ParamWriter, prefix: &str) {
        w.linear(&format!("{prefix}.qkv"), &self.qkv);
        w.linear(&format!("{prefix}.proj"), &self.proj);
    }

    /// `x: [B, L, H]` (L = steps × tokens, grouped by step) → `[B, L, H]`
    pub fn forward(&self, x: Tensor<3>, mixing: Mixing) -> Tensor<3> {
        let [b, l, h] = x.dims();
        let (nh, hd) = (self.num_heads, h / self.num_heads);
        // [B, L, 3H] → [3, B, heads, L, head_dim]
        let qkv = linear(&self.qkv, x)
            .reshape([b, l, 3, nh, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, nh, l, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let out = match mixing {
            Mixing::Full => scaled_dot_product(q, k, v),
            Mixing::BlockCausal { steps } => block_causal(q, k, v, steps),
            Mixing::Cached(cache) => {
                let (k, v) = cache.append(k, v);
                scaled_dot_product(q, k, v)
            }
        };
        linear(&self.proj, out.swap_dims(1, 2).reshape([b, l, h]))
    }
}
