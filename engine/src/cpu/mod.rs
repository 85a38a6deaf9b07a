//! Our CPU kernels: the fused attention forward and backward ([`attention`]) with its
//! vectorised row passes ([`simd`]), and the burn extension and autodiff node that put it under
//! the model's attention on burn flex ([`backend`]).

pub(crate) mod attention;
pub(crate) mod backend;
pub(crate) mod simd;

pub use attention::{Heads, backward as attention_backward, forward as attention_forward};
pub use backend::*;

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// 0 = not decided yet (read `ARD_CPU_ATTENTION` on first use), 1 = burn's, 2 = ours.
static CPU_ATTENTION: AtomicU8 = AtomicU8::new(0);

/// Sets whether the model's attention on flex uses the fused kernel (`true`, the default) or
/// burn's attention (`false`); overrides `ARD_CPU_ATTENTION`.
pub fn set_cpu_attention(fused: bool) {
    CPU_ATTENTION.store(if fused { 2 } else { 1 }, Relaxed);
}

/// Whether the model's attention on `device` runs the fused CPU kernel: on flex, f32, unless
/// `ARD_CPU_ATTENTION=burn` or [`set_cpu_attention`] chose burn's.
pub fn use_cpu_attention(device: &burn::tensor::Device, dtype: burn::tensor::DType) -> bool {
    if CPU_ATTENTION.load(Relaxed) == 0 {
        let burn = std::env::var("ARD_CPU_ATTENTION").is_ok_and(|v| v.trim().eq_ignore_ascii_case("burn"));
        set_cpu_attention(!burn);
    }
    CPU_ATTENTION.load(Relaxed) == 2 && dtype == burn::tensor::DType::F32 && on_flex(device)
}
