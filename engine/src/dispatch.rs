//! The one place that picks kernels. The model calls these functions; each asks the tensor's
//! device and element type once and hands the work to a [`Kernels`] set: ours on the CPU
//! (`cpu/`, burn flex, f32), our WGSL attention on wgpu when switched on (`wgsl/`), burn's own
//! ops everywhere else.
//!
//! The user's choices: `ARD_CPU_KERNELS=burn` (or [`set_cpu_kernels`]) runs burn's ops on the
//! CPU too; `ARD_WGSL=1` / `f16` (or [`set_fused_attention`]) switches our WGSL attention on.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};

use crate::cpu::{CpuKernels, cpu_attention_calls};
use crate::device::{on_flex, on_wgpu};
use crate::ops::{AttentionMask, BurnKernels, Kernels, burn_attention_calls};
use crate::wgsl::{WgslKernels, fused_attention_supported, wgsl_attention_calls};

/// Which set computes an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    Burn,
    Cpu,
    Wgsl,
}

/// 0 = not decided yet (read `ARD_CPU_KERNELS` on first use), 1 = burn's, 2 = ours.
static CPU_KERNELS: AtomicU8 = AtomicU8::new(0);

/// Sets whether the model on flex uses our kernels (`true`, the default) or burn's own ops
/// (`false`); overrides `ARD_CPU_KERNELS`.
pub fn set_cpu_kernels(ours: bool) {
    CPU_KERNELS.store(if ours { 2 } else { 1 }, Relaxed);
}

/// Whether our CPU kernels are switched on (unless `ARD_CPU_KERNELS=burn`).
fn cpu_kernels_on() -> bool {
    if CPU_KERNELS.load(Relaxed) == 0 {
        let burn =
            std::env::var("ARD_CPU_KERNELS").is_ok_and(|v| v.trim().eq_ignore_ascii_case("burn"));
        set_cpu_kernels(!burn);
    }
    CPU_KERNELS.load(Relaxed) == 2
}

/// Whether and how the model's attention uses our WGSL kernel on wgpu devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedAttention {
    /// burn's attention.
    Off,
    /// Our kernel on the f32 tensors.
    F32,
    /// Our kernel with queries, keys, values and output stored as f16 (cast around the kernel;
    /// f32 arithmetic inside); where the device has no f16, as `F32`.
    F16,
}

impl FusedAttention {
    /// From `ARD_WGSL`: `1` or `f32`, `f16` (any case); anything else (or unset) is off.
    pub fn from_env() -> Self {
        let value = std::env::var("ARD_WGSL").unwrap_or_default();
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "f32" => Self::F32,
            "f16" => Self::F16,
            _ => Self::Off,
        }
    }
}

/// 0 = not decided yet (read `ARD_WGSL` on first use), 1 = off, 2 = f32, 3 = f16.
static FUSED: AtomicU8 = AtomicU8::new(0);

/// Sets the model's use of our WGSL attention for this process (overrides `ARD_WGSL`).
pub fn set_fused_attention(mode: FusedAttention) {
    let code = match mode {
        FusedAttention::Off => 1,
        FusedAttention::F32 => 2,
        FusedAttention::F16 => 3,
    };
    FUSED.store(code, Relaxed);
}

/// The WGSL attention mode in force. Off by default: on the one adapter measured so far
/// (lavapipe) burn's autotuned attention is faster (`ard-bench`, docs/benchmarks.md).
pub fn fused_attention() -> FusedAttention {
    if FUSED.load(Relaxed) == 0 {
        set_fused_attention(FusedAttention::from_env());
    }
    match FUSED.load(Relaxed) {
        2 => FusedAttention::F32,
        3 => FusedAttention::F16,
        _ => FusedAttention::Off,
    }
}

/// The set that computes the model's ops (all but attention) on `device` for `dtype`.
pub fn kernels_for(device: &Device, dtype: DType) -> KernelSet {
    if dtype == DType::F32 && cpu_kernels_on() && on_flex(device) {
        KernelSet::Cpu
    } else {
        KernelSet::Burn
    }
}

/// The set that computes an attention of head dimension `head_dim` on `device` for `dtype`.
pub fn attention_kernels_for(device: &Device, dtype: DType, head_dim: usize) -> KernelSet {
    match kernels_for(device, dtype) {
        KernelSet::Burn
            if dtype == DType::F32
                && fused_attention() != FusedAttention::Off
                && on_wgpu(device)
                && fused_attention_supported(device, head_dim) =>
        {
            KernelSet::Wgsl
        }
        set => set,
    }
}

/// Attentions each set has computed in this process, in the order burn, CPU, WGSL, as each
/// kernel counts its own calls: how a caller or a test knows which kernel ran.
pub fn attention_calls() -> [u64; 3] {
    [
        burn_attention_calls(),
        cpu_attention_calls(),
        wgsl_attention_calls(),
    ]
}

/// softmax(q kᵀ / √d) v under `mask`: `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: AttentionMask) -> Tensor<4> {
    match attention_kernels_for(&q.device(), q.dtype(), q.dims()[3]) {
        KernelSet::Burn => BurnKernels.attention(q, k, v, mask),
        KernelSet::Cpu => CpuKernels.attention(q, k, v, mask),
        KernelSet::Wgsl => WgslKernels {
            f16: fused_attention() == FusedAttention::F16,
        }
        .attention(q, k, v, mask),
    }
}

/// Attention from queries to a padded batch of keys (cross-attention to prompts of several
/// lengths): item b sees its first `lengths[b]` keys; `None`: every key. Shapes as
/// [`attention`].
pub fn key_padded_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    lengths: Option<&[usize]>,
) -> Tensor<4> {
    let Some(lengths) = lengths else {
        return attention(q, k, v, AttentionMask::None);
    };
    match attention_kernels_for(&q.device(), q.dtype(), q.dims()[3]) {
        KernelSet::Burn => BurnKernels.key_padded_attention(q, k, v, lengths),
        KernelSet::Cpu => CpuKernels.key_padded_attention(q, k, v, lengths),
        KernelSet::Wgsl => WgslKernels { f16: false }.key_padded_attention(q, k, v, lengths),
    }
}

/// `layer(x)`: `x: [.., in]` → `[.., out]`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    match kernels_for(&x.device(), x.dtype()) {
        KernelSet::Cpu => CpuKernels.linear(layer, x),
        _ => BurnKernels.linear(layer, x),
    }
}

/// GELU with the tanh approximation (timm's `approx_gelu`).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match kernels_for(&x.device(), x.dtype()) {
        KernelSet::Cpu => CpuKernels.gelu_tanh(x),
        _ => BurnKernels.gelu_tanh(x),
    }
}

/// adaLN's `layer_norm(x) · (1 + scale) + shift` over the last axis.
pub fn ln_modulate<const D: usize>(x: Tensor<D>, shift: Tensor<D>, scale: Tensor<D>) -> Tensor<D> {
    match kernels_for(&x.device(), x.dtype()) {
        KernelSet::Cpu => CpuKernels.ln_modulate(x, shift, scale),
        _ => BurnKernels.ln_modulate(x, shift, scale),
    }
}

/// How an inference batch of `batch` images of `tokens` tokens each on `device` is split into
/// lanes that run side by side; `None`: as one batch.
pub fn lanes(
    device: &Device,
    dtype: DType,
    batch: usize,
    tokens: usize,
) -> Option<Vec<Range<usize>>> {
    match kernels_for(device, dtype) {
        KernelSet::Cpu => CpuKernels.lanes(batch, tokens),
        _ => BurnKernels.lanes(batch, tokens),
    }
}
