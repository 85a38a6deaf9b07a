//! Fused attention on the CPU, forward and backward, with ARD's trajectory masks (the
//! FlashAttention-2 recipe of Dao, 2023, in its CPU form: one block of query rows at a time
//! against exactly the keys its mask lets it see, softmax statistics saved per row so the
//! backward pass recomputes the probabilities instead of storing them).
//!
//! Shapes are per head: `q: [bh, tq, d]`, `k, v: [bh, tk, d]`, row-major and contiguous; the
//! products run on the `gemm` crate (the kernels burn flex itself multiplies with), the row
//! passes on [`super::simd`]. Heads run in parallel on rayon.

use rayon::prelude::*;

use super::simd;
use crate::ops::AttentionMask;

/// Query rows per block: a block's scores (`ROWS × keys`) stay in L2 for the key counts ARD
/// uses (≤ 1024 keys: 256 KiB).
const ROWS: usize = 64;

/// Sizes of one fused attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// batch × heads
    pub bh: usize,
    /// query rows per head
    pub tq: usize,
    /// key rows per head
    pub tk: usize,
    /// head dimension
    pub d: usize,
}

/// Query blocks `[r0, r1)` whose rows all see the same key range `[lo, hi)`: blocks never cross
/// a trajectory step, so the mask is a range of whole keys, never an element-wise test.
fn blocks(tq: usize, tk: usize, mask: AttentionMask) -> Vec<(usize, usize, usize, usize)> {
    let step_rows = match mask {
        AttentionMask::None => tq,
        AttentionMask::BlockCausal {
            tokens_per_step, ..
        }
        | AttentionMask::BlockDiagonal {
            tokens_per_step, ..
        } => tokens_per_step.max(1),
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < tq {
        let step_end = tq.min((start / step_rows + 1) * step_rows);
        let mut r0 = start;
        while r0 < step_end {
            let r1 = step_end.min(r0 + ROWS);
            let (lo, hi) = mask.key_range(r0, tk);
            out.push((r0, r1, lo, hi));
            r0 = r1;
        }
        start = step_end;
    }
    out
}

/// `dst[m×n] (= or +=) alpha · lhs[m×k] · rhs[k×n]`, each matrix given by (pointer, row stride,
/// column stride), on `parallelism`'s threads. Safety: the pointers address matrices of those
/// sizes and strides.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    alpha: f32,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `scores[r × (hi−lo)] = scale · q[r0..r1] · k[lo..hi]ᵀ` for one head.
fn scores(
    q: &[f32],
    k: &[f32],
    d: usize,
    rows: (usize, usize),
    keys: (usize, usize),
    scale: f32,
    s: &mut [f32],
) {
    let (m, n) = (rows.1 - rows.0, keys.1 - keys.0);
    // SAFETY: q holds rows r0..r1 of d floats, k keys lo..hi, s at least m·n floats.
    unsafe {
        matmul(
            (m, n, d),
            s.as_mut_ptr(),
            n,
            false,
            (q[rows.0 * d..].as_ptr(), d, 1),
            (k[keys.0 * d..].as_ptr(), 1, d),
            scale,
            gemm::Parallelism::None,
        )
    }
}

/// Forward pass: the output `[bh, tq, d]` and each row's log-sum-exp of its scaled scores
/// `[bh, tq]` (what the backward pass needs to rebuild the probabilities).
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: Heads,
    mask: AttentionMask,
) -> (Vec<f32>, Vec<f32>) {
    let Heads { bh, tq, tk, d } = shape;
    assert_eq!(
        (q.len(), k.len(), v.len()),
        (bh * tq * d, bh * tk * d, bh * tk * d)
    );
    let scale = 1.0 / (d as f32).sqrt();
    let plan = blocks(tq, tk, mask);
    let mut out = vec![0f32; bh * tq * d];
    let mut lse = vec![0f32; bh * tq];
    out.par_chunks_mut((tq * d).max(1))
        .zip(lse.par_chunks_mut(tq.max(1)))
        .enumerate()
        .for_each(|(h, (out, lse))| {
            let (q, k, v) = (
                &q[h * tq * d..][..tq * d],
                &k[h * tk * d..][..tk * d],
                &v[h * tk * d..][..tk * d],
            );
            let mut s = vec![0f32; ROWS * tk];
            for &(r0, r1, lo, hi) in &plan {
                let (m, n) = (r1 - r0, hi - lo);
                if n == 0 {
                    out[r0 * d..r1 * d].fill(0.0);
                    lse[r0..r1].fill(f32::NEG_INFINITY);
                    continue;
                }
                let s = &mut s[..m * n];
                scores(q, k, d, (r0, r1), (lo, hi), scale, s);
                for (i, row) in s.chunks_exact_mut(n).enumerate() {
                    let max = simd::row_max(row);
                    let sum = simd::exp_shifted(row, max);
                    simd::scale(row, 1.0 / sum);
                    lse[r0 + i] = max + sum.ln();
                }
                // SAFETY: s is m×n, v holds keys lo..hi of d floats, out rows r0..r1.
                unsafe {
                    matmul(
                        (m, d, n),
                        out[r0 * d..].as_mut_ptr(),
                        d,
                        false,
                        (s.as_ptr(), n, 1),
                        (v[lo * d..].as_ptr(), d, 1),
                        1.0,
                        gemm::Parallelism::None,
                    )
                }
            }
        });
    (out, lse)
}

/// Backward pass: `(dq, dk, dv)` given the forward's output and log-sum-exp and the output's
/// gradient `dout`. The probabilities are recomputed per block from `q`, `k` and `lse`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    shape: Heads,
    mask: AttentionMask,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Heads { bh, tq, tk, d } = shape;
    let scale = 1.0 / (d as f32).sqrt();
    let plan = blocks(tq, tk, mask);
    let mut dq = vec![0f32; bh * tq * d];
    let mut dk = vec![0f32; bh * tk * d];
    let mut dv = vec![0f32; bh * tk * d];
    dq.par_chunks_mut((tq * d).max(1))
        .zip(dk.par_chunks_mut((tk * d).max(1)))
        .zip(dv.par_chunks_mut((tk * d).max(1)))
        .enumerate()
        .for_each(|(h, ((dq, dk), dv))| {
            let (qo, ql, ko, kl) = (h * tq * d, tq * d, h * tk * d, tk * d);
            let (q, out, dout) = (&q[qo..][..ql], &out[qo..][..ql], &dout[qo..][..ql]);
            let (k, v) = (&k[ko..][..kl], &v[ko..][..kl]);
            let lse = &lse[h * tq..][..tq];
            let mut p = vec![0f32; ROWS * tk];
            let mut dp = vec![0f32; ROWS * tk];
            for &(r0, r1, lo, hi) in &plan {
                let (m, n) = (r1 - r0, hi - lo);
                if n == 0 {
                    continue;
                }
                let (p, dp) = (&mut p[..m * n], &mut dp[..m * n]);
                scores(q, k, d, (r0, r1), (lo, hi), scale, p);
                for (i, row) in p.chunks_exact_mut(n).enumerate() {
                    simd::exp_shifted(row, lse[r0 + i]);
                }
                // SAFETY (all four products): p, dp are m×n; q, out, dout hold rows r0..r1 of d
                // floats; k, v, dk, dv keys lo..hi.
                unsafe {
                    // dv[lo..hi] += pᵀ · dout[r0..r1]
                    matmul(
                        (n, d, m),
                        dv[lo * d..].as_mut_ptr(),
                        d,
                        true,
                        (p.as_ptr(), 1, n),
                        (dout[r0 * d..].as_ptr(), d, 1),
                        1.0,
                        gemm::Parallelism::None,
                    );
                    // dp = dout[r0..r1] · v[lo..hi]ᵀ
                    matmul(
                        (m, n, d),
                        dp.as_mut_ptr(),
                        n,
                        false,
                        (dout[r0 * d..].as_ptr(), d, 1),
                        (v[lo * d..].as_ptr(), 1, d),
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
                for (i, (pr, dpr)) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)).enumerate() {
                    let r = r0 + i;
                    let di = simd::dot(&dout[r * d..][..d], &out[r * d..][..d]);
                    simd::softmax_grad(pr, dpr, di, scale);
                }
                unsafe {
                    // dq[r0..r1] = ds · k[lo..hi]
                    matmul(
                        (m, d, n),
                        dq[r0 * d..].as_mut_ptr(),
                        d,
                        false,
                        (dp.as_ptr(), n, 1),
                        (k[lo * d..].as_ptr(), d, 1),
                        1.0,
                        gemm::Parallelism::None,
                    );
                    // dk[lo..hi] += dsᵀ · q[r0..r1]
                    matmul(
                        (n, d, m),
                        dk[lo * d..].as_mut_ptr(),
                        d,
                        true,
                        (dp.as_ptr(), 1, n),
                        (q[r0 * d..].as_ptr(), d, 1),
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{AttentionShape, attention_reference};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    fn rel_err(a: &[f32], b: &[f64]) -> f64 {
        assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
        let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
        // A floor for references that vanish (one visible key: the softmax gradient is 0, and
        // f32 rounding of terms of size |dout|·|v| ~ 1 leaves ~1e-7 there): an rms of 0.1,
        // against entries of rms ~1 where the reference does not vanish. (At 1e-2 a fresh draw
        // failed once at 1.1e-5.)
        let den: f64 = b
            .iter()
            .map(|y| y * y)
            .sum::<f64>()
            .max(1e-2 * b.len() as f64);
        (num / den).sqrt()
    }

    /// Float64 gradients of `Σ out ∘ dout` by the softmax-Jacobian formulas, row by row.
    fn backward64(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        s: Heads,
        mask: AttentionMask,
    ) -> [Vec<f64>; 3] {
        let Heads { bh, tq, tk, d } = s;
        let scale = 1.0 / (d as f64).sqrt();
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; bh * tq * d],
            vec![0f64; bh * tk * d],
            vec![0f64; bh * tk * d],
        );
        for h in 0..bh {
            for i in 0..tq {
                let (lo, hi) = mask.key_range(i, tk);
                let qi = |c: usize| q[(h * tq + i) * d + c] as f64;
                let kj = |j: usize, c: usize| k[(h * tk + j) * d + c] as f64;
                let vj = |j: usize, c: usize| v[(h * tk + j) * d + c] as f64;
                let go = |c: usize| dout[(h * tq + i) * d + c] as f64;
                let sc: Vec<f64> = (lo..hi)
                    .map(|j| scale * (0..d).map(|c| qi(c) * kj(j, c)).sum::<f64>())
                    .collect();
                let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / z).collect();
                let dp: Vec<f64> = (lo..hi)
                    .map(|j| (0..d).map(|c| go(c) * vj(j, c)).sum())
                    .collect();
                let di: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (jj, j) in (lo..hi).enumerate() {
                    let ds = p[jj] * (dp[jj] - di) * scale;
                    for c in 0..d {
                        dv[(h * tk + j) * d + c] += p[jj] * go(c);
                        dq[(h * tq + i) * d + c] += ds * kj(j, c);
                        dk[(h * tk + j) * d + c] += ds * qi(c);
                    }
                }
            }
        }
        [dq, dk, dv]
    }

    fn masks(t: usize) -> [AttentionMask; 4] {
        [
            AttentionMask::None,
            AttentionMask::BlockCausal {
                tokens_per_step: t,
                q_step_offset: 0,
            },
            AttentionMask::BlockCausal {
                tokens_per_step: t,
                q_step_offset: 2,
            },
            AttentionMask::BlockDiagonal {
                tokens_per_step: t,
                q_step_offset: 0,
            },
        ]
    }

    #[test]
    fn forward_and_backward_match_float64_on_odd_shapes() {
        let mut rng = StdRng::seed_from_u64(rand::rng().random());
        // (bh, tokens per step, steps of queries, head dim): odd sizes, blocks across ROWS.
        for (bh, t, steps, d) in [(3, 7, 3, 5), (2, 70, 2, 16), (1, 13, 4, 72), (2, 1, 5, 3)] {
            for mask in masks(t) {
                let offset = match mask {
                    AttentionMask::BlockCausal { q_step_offset, .. } => q_step_offset,
                    _ => 0,
                };
                let (tq, tk) = (t * steps, t * (steps + offset));
                let shape = Heads { bh, tq, tk, d };
                let (q, k, v) = (
                    random(bh * tq * d, &mut rng),
                    random(bh * tk * d, &mut rng),
                    random(bh * tk * d, &mut rng),
                );
                let dout = random(bh * tq * d, &mut rng);
                let (out, lse) = forward(&q, &k, &v, shape, mask);
                let want = attention_reference(
                    &q,
                    &k,
                    &v,
                    AttentionShape {
                        bh,
                        tq,
                        tk,
                        head_dim: d,
                    },
                    mask,
                );
                let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
                let e = rel_err(&out, &want);
                assert!(e < 1e-5, "{shape:?} {mask:?}: forward error {e}");
                let (dq, dk, dv) = backward(&q, &k, &v, &out, &lse, &dout, shape, mask);
                let [wq, wk, wv] = backward64(&q, &k, &v, &dout, shape, mask);
                for (name, got, want) in [("dq", &dq, &wq), ("dk", &dk, &wk), ("dv", &dv, &wv)] {
                    let e = rel_err(got, want);
                    assert!(e < 1e-5, "{shape:?} {mask:?}: {name} error {e}");
                }
            }
        }
    }

    #[test]
    fn nan_inputs_give_nan_outputs() {
        let shape = Heads {
            bh: 1,
            tq: 3,
            tk: 3,
            d: 2,
        };
        let mut q = vec![0.5f32; 6];
        q[0] = f32::NAN;
        let (out, _) = forward(&q, &[0.1; 6], &[0.2; 6], shape, AttentionMask::None);
        assert!(out[0].is_nan() && out[1].is_nan(), "{out:?}");
    }
}
