//! The tensor operations the model is written in, as one interface ([`Kernels`]) whose default
//! methods are burn's own ops. `cpu/` and `wgsl/` implement it with our kernels; the model calls
//! only `dispatch.rs`, which picks an implementation per call. The model never asks which
//! backend it runs on.

pub mod mask;
pub mod reference;

pub use mask::AttentionMask;
pub use reference::{AttentionShape, attention_reference};

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use burn::nn::Linear;
use burn::tensor::FloatDType;
use burn::tensor::activation::sigmoid;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

/// LayerNorm's ε in DiT (`elementwise_affine=False, eps=1e-6`).
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// The operations a kernel set provides. Every method has burn's implementation; a set
/// overrides what it computes faster, and must compute the same function (parity-tested).
pub trait Kernels {
    /// softmax(q kᵀ / √d) v over the keys `mask` lets each query see.
    /// `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]`.
    fn attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: AttentionMask,
    ) -> Tensor<4> {
        masked_attention(q, k, v, mask)
    }

    /// softmax(q kᵀ / √d) v where query row-set b sees only its first `lengths[b]` keys (a
    /// batch of prompts padded to the longest). Shapes as [`Kernels::attention`].
    fn key_padded_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        lengths: &[usize],
    ) -> Tensor<4> {
        key_padded_attention(q, k, v, lengths)
    }

    /// `layer(x)`: `x: [.., in]` → `[.., out]`.
    fn linear<const D: usize>(&self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        layer.forward(x)
    }

    /// GELU with the tanh approximation (timm's `approx_gelu`), as
    /// `x · σ(2·√(2/π)·(x + 0.044715·x³))`: the same function as
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` without a `powf` and a `tanh` per element.
    fn gelu_tanh<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        const TWO_SQRT_2_OVER_PI: f64 =
            2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
        let inner = x.clone() * (x.clone() * x.clone() * 0.044715 + 1.0) * TWO_SQRT_2_OVER_PI;
        x * sigmoid(inner)
    }

    /// adaLN's `layer_norm(x) · (1 + scale) + shift` over the last axis.
    /// `x: [.., T, H]`, `shift, scale`: broadcastable to `x`.
    fn ln_modulate<const D: usize>(
        &self,
        x: Tensor<D>,
        shift: Tensor<D>,
        scale: Tensor<D>,
    ) -> Tensor<D> {
        modulate(layer_norm(x), shift, scale)
    }

    /// How a batch of `batch` images of `tokens` tokens each is split into lanes that run side
    /// by side at inference; `None`: the set runs a batch as one.
    fn lanes(&self, _batch: usize, _tokens: usize) -> Option<Vec<Range<usize>>> {
        None
    }
}

/// burn's ops, with nothing overridden.
pub struct BurnKernels;

impl Kernels for BurnKernels {}

/// adaLN's modulation, `x · (1 + scale) + shift`.
pub fn modulate<const D: usize>(x: Tensor<D>, shift: Tensor<D>, scale: Tensor<D>) -> Tensor<D> {
    x * (scale + 1.0) + shift
}

/// LayerNorm over the last axis without affine parameters (ε [`LAYER_NORM_EPS`]), as burn's
/// fused `layer_norm` with a unit scale. Half-precision activations are normalised in f32 and
/// handed back in their own type.
pub fn layer_norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let width = x.dims()[D - 1];
    let dtype = x.dtype();
    let gamma = Tensor::<1>::ones([width], &x.device());
    let y = burn::tensor::module::layer_norm(x.cast(FloatDType::F32), gamma, None, LAYER_NORM_EPS);
    y.cast(FloatDType::from(dtype))
}

/// Calls of burn's attention ([`BurnKernels`]) in this process.
static BURN_ATTENTION_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many attentions burn's ops have computed in this process.
pub fn burn_attention_calls() -> u64 {
    BURN_ATTENTION_CALLS.load(Relaxed)
}

/// burn's attention with the keys after each batch item's length masked out.
fn key_padded_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, lengths: &[usize]) -> Tensor<4> {
    BURN_ATTENTION_CALLS.fetch_add(1, Relaxed);
    let ([b, h, lq, _], lk) = (q.dims(), k.dims()[2]);
    assert_eq!(lengths.len(), b, "one length per batch item");
    let padding: Vec<bool> = lengths
        .iter()
        .flat_map(|&n| (0..lk).map(move |j| j >= n))
        .collect();
    let mask = Tensor::<4, Bool>::from_data(TensorData::new(padding, [b, 1, 1, lk]), &q.device())
        .expand([b, h, lq, lk]);
    burn_attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
}

/// burn's attention under `mask`, one call per group of queries that see the same keys (a
/// step of a block-causal or block-diagonal mask), so no masked score is ever formed.
fn masked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: AttentionMask) -> Tensor<4> {
    BURN_ATTENTION_CALLS.fetch_add(1, Relaxed);
    let attend = |q, k, v| burn_attention(q, k, v, None, None, AttentionModuleOptions::default());
    let (lq, lk) = (q.dims()[2], k.dims()[2]);
    let group = match mask {
        AttentionMask::None => return attend(q, k, v),
        AttentionMask::BlockCausal {
            tokens_per_step, ..
        }
        | AttentionMask::BlockDiagonal {
            tokens_per_step, ..
        } => tokens_per_step.max(1),
    };
    let outs = (0..lq)
        .step_by(group)
        .map(|start| {
            let rows = group.min(lq - start);
            let (lo, hi) = mask.key_range(start, lk);
            attend(
                q.clone().narrow(2, start, rows),
                k.clone().narrow(2, lo, hi - lo),
                v.clone().narrow(2, lo, hi - lo),
            )
        })
        .collect();
    Tensor::cat(outs, 2)
}
