//! The float64 definition of masked attention that every attention kernel is tested against.

use crate::ops::AttentionMask;

/// `[bh, tq, head_dim]` queries against `[bh, tk, head_dim]` keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub bh: usize,
    pub tq: usize,
    pub tk: usize,
    pub head_dim: usize,
}

/// Float64 attention on the CPU, the definition the kernels are tested against.
pub fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    mask: AttentionMask,
) -> Vec<f32> {
    let AttentionShape {
        bh,
        tq,
        tk,
        head_dim: d,
    } = shape;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; bh * tq * d];
    for b in 0..bh {
        for i in 0..tq {
            let (lo, hi) = mask.key_range(i, tk);
            let qi = &q[(b * tq + i) * d..][..d];
            let scores: Vec<f64> = (lo..hi)
                .map(|j| {
                    let kj = &k[(b * tk + j) * d..][..d];
                    scale
                        * qi.iter()
                            .zip(kj)
                            .map(|(&a, &c)| a as f64 * c as f64)
                            .sum::<f64>()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (w, j) in weights.iter().zip(lo..hi) {
                let vj = &v[(b * tk + j) * d..][..d];
                for (o, &x) in out[(b * tq + i) * d..][..d].iter_mut().zip(vj) {
                    *o += (w / total * x as f64) as f32;
                }
            }
        }
    }
    out
}
