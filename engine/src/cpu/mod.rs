//! Our CPU kernels: the fused attention forward and backward ([`attention`]), the vectorised
//! row and element-wise passes (exp, softmax gradient, GELU: [`simd`]), and the burn extension
//! and autodiff nodes that put them under the model on burn flex ([`backend`]), and the linear
//! layer with its bias fused into the product ([`linear`]).

pub(crate) mod attention;
pub(crate) mod backend;
pub(crate) mod linear;
pub(crate) mod simd;

pub use attention::{Heads, backward as attention_backward, forward as attention_forward};
pub use backend::*;
pub use linear::{CpuLinearBackend, cpu_linear};

use std::ops::Range;

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::ops::{AttentionMask, BurnKernels, Kernels};

/// Tokens per lane of a CPU inference batch (see [`lanes`]).
const LANE_TOKENS: usize = 512;

/// The batch `0..batch` of images of `tokens` tokens each, split for CPU inference into lanes
/// that run side by side on rayon: each lane holds at most [`LANE_TOKENS`] tokens (its
/// activations stay in cache; at least one image), and there are at least as many lanes as
/// cores while there are images.
pub fn lanes(batch: usize, tokens: usize) -> Vec<Range<usize>> {
    let per_lane = (LANE_TOKENS / tokens.max(1))
        .min(batch.div_ceil(rayon::current_num_threads().max(1)))
        .max(1);
    (0..batch)
        .step_by(per_lane)
        .map(|start| start..batch.min(start + per_lane))
        .collect()
}

/// Our CPU kernels on burn flex (f32): fused attention and LayerNorm + modulation with their
/// own gradients, the GELU pass, the linear layer with its bias fused into the product, and
/// inference batches split into lanes. `dispatch.rs` decides when they run.
pub struct CpuKernels;

impl Kernels for CpuKernels {
    fn attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: AttentionMask,
    ) -> Tensor<4> {
        cpu_attention(q, k, v, mask)
    }

    fn linear<const D: usize>(&self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        match &layer.bias {
            Some(bias) if layer.weight.val().dtype() == x.dtype() => {
                cpu_linear(x, layer.weight.val(), bias.val())
            }
            _ => layer.forward(x),
        }
    }

    fn gelu_tanh<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        cpu_gelu_tanh(x)
    }

    /// One fused pass when the modulation is one row of `[.., 1, H]` per group of rows;
    /// burn's ops otherwise.
    fn ln_modulate<const D: usize>(
        &self,
        x: Tensor<D>,
        shift: Tensor<D>,
        scale: Tensor<D>,
    ) -> Tensor<D> {
        let (xd, sd) = (x.dims(), shift.dims());
        let per_group =
            sd == scale.dims() && (0..D).all(|i| sd[i] == xd[i] || (i == D - 2 && sd[i] == 1));
        if per_group {
            cpu_ln_modulate(x, shift, scale)
        } else {
            BurnKernels.ln_modulate(x, shift, scale)
        }
    }

    fn lanes(&self, batch: usize, tokens: usize) -> Option<Vec<Range<usize>>> {
        Some(lanes(batch, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes cover the batch in order without gaps, hold at most `LANE_TOKENS` tokens (or one
    /// image), and give every core a lane while there are images.
    #[test]
    fn lanes_cover_the_batch_in_cache_sized_pieces() {
        let cores = rayon::current_num_threads();
        for (batch, tokens) in [(1, 256), (2, 256), (16, 256), (17, 49), (5, 4096), (64, 1)] {
            let lanes = lanes(batch, tokens);
            assert_eq!(lanes.first().map(|r| r.start), Some(0));
            assert_eq!(lanes.last().map(|r| r.end), Some(batch));
            assert!(lanes.windows(2).all(|w| w[0].end == w[1].start));
            assert!(lanes.iter().all(|r| !r.is_empty()));
            assert!(
                lanes
                    .iter()
                    .all(|r| r.len() == 1 || r.len() * tokens <= LANE_TOKENS),
                "{batch}×{tokens}: {lanes:?}"
            );
            assert!(
                lanes.len() >= batch.min(cores),
                "{batch}×{tokens}: {lanes:?}"
            );
        }
    }
}
