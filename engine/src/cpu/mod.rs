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
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

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
