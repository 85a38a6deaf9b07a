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

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// 0 = not decided yet (read `ARD_CPU_KERNELS` on first use), 1 = burn's, 2 = ours.
static CPU_KERNELS: AtomicU8 = AtomicU8::new(0);

/// Sets whether the model on flex uses our kernels (`true`, the default: fused attention, GELU)
/// or burn's own ops (`false`); overrides `ARD_CPU_KERNELS`.
pub fn set_cpu_kernels(fused: bool) {
    CPU_KERNELS.store(if fused { 2 } else { 1 }, Relaxed);
}

/// Whether the model on `device` runs our CPU kernels: on flex, f32, unless
/// `ARD_CPU_KERNELS=burn` or [`set_cpu_kernels`] chose burn's ops.
pub fn use_cpu_kernels(device: &burn::tensor::Device, dtype: burn::tensor::DType) -> bool {
    if CPU_KERNELS.load(Relaxed) == 0 {
        let burn =
            std::env::var("ARD_CPU_KERNELS").is_ok_and(|v| v.trim().eq_ignore_ascii_case("burn"));
        set_cpu_kernels(!burn);
    }
    CPU_KERNELS.load(Relaxed) == 2 && dtype == burn::tensor::DType::F32 && on_flex(device)
}
