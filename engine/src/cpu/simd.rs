//! Row kernels of the fused attention, written so the compiler vectorises them: a polynomial
//! `exp` (Cephes' `expf`: range reduction by ln 2, degree-5 polynomial, exponent by bit shift)
//! and reductions over 16 independent lanes. Each public function picks the widest instruction
//! set the CPU has at run time (AVX-512, AVX2; SSE2 otherwise).

const LANES: usize = 16;

/// `exp(x)` for `x` in `[-87.3, 88.3]` (clamped outside), relative error about 2e-7.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // t's bits are those of 1.5 · 2²³ + n: its low bits hold n, so 2ⁿ is built without a
    // float-to-int conversion (which would not vectorise).
    e * f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

#[inline(always)]
fn max_impl(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `row[j] = exp(row[j] - shift)`; returns the sum of the new values.
#[inline(always)]
fn exp_shifted_impl(row: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp_lane(*x - shift);
            *a += *x;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_lane(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn scale_impl(row: &mut [f32], by: f32) {
    for x in row {
        *x *= by;
    }
}

/// `ds[j] = p[j] · (dp[j] − d) · scale`, in place over `dp`.
#[inline(always)]
fn softmax_grad_impl(p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
    for (g, &pj) in dp.iter_mut().zip(p) {
        *g = pj * (*g - d) * scale;
    }
}

/// `√(2/π)` and the cubic term of GELU's tanh approximation, `2·√(2/π)` its sigmoid form.
const GELU_CUBIC: f32 = 0.044_715;
const GELU_TWO_K: f32 = 2.0 * 0.797_884_6;

#[inline(always)]
fn gelu_tanh_impl(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let u = GELU_TWO_K * (v + GELU_CUBIC * v * v * v);
        let e = exp_lane(-u);
        // σ(u) < 1e-30: the output is 0 in f32 (exp's clamp would leave a tiny residue).
        *o = if e > 1e30 { 0.0 } else { v / (1.0 + e) };
    }
}

#[inline(always)]
fn gelu_tanh_grad_impl(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        let u = GELU_TWO_K * (v + GELU_CUBIC * v * v * v);
        let s = 1.0 / (1.0 + exp_lane(-u));
        let du = GELU_TWO_K * (1.0 + 3.0 * GELU_CUBIC * v * v);
        *g = d * (s + v * s * (1.0 - s) * du);
    }
}

/// LayerNorm's ε ([`crate::ops::LAYER_NORM_EPS`]) in f32.
const LAYER_NORM_EPS: f32 = crate::ops::LAYER_NORM_EPS as f32;

#[inline(always)]
fn sum_impl(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// One group of rows of width `h` that share a modulation: `y = norm(x) · (1 + scale) + shift`,
/// `stats` = (mean, 1/σ) per row.
#[inline(always)]
fn ln_modulate_impl(x: &[f32], shift: &[f32], scale: &[f32], y: &mut [f32], stats: &mut [f32]) {
    let h = shift.len();
    for ((xr, yr), st) in x
        .chunks_exact(h)
        .zip(y.chunks_exact_mut(h))
        .zip(stats.chunks_exact_mut(2))
    {
        let mean = sum_impl(xr) / h as f32;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v - mean;
        }
        let var = dot_impl(yr, yr) / h as f32;
        let rstd = 1.0 / (var + LAYER_NORM_EPS).sqrt();
        for ((o, &sh), &sc) in yr.iter_mut().zip(shift).zip(scale) {
            *o = *o * rstd * (1.0 + sc) + sh;
        }
        st[0] = mean;
        st[1] = rstd;
    }
}

/// The gradient of [`ln_modulate_impl`] for one group: `dx` per row, `dshift` and `dscale`
/// summed over the group's rows (both overwritten).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_modulate_grad_impl(
    x: &[f32],
    scale: &[f32],
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dshift: &mut [f32],
    dscale: &mut [f32],
) {
    let h = scale.len();
    dshift.fill(0.0);
    dscale.fill(0.0);
    let rows = x
        .chunks_exact(h)
        .zip(dy.chunks_exact(h))
        .zip(dx.chunks_exact_mut(h));
    for (((xr, gr), dxr), st) in rows.zip(stats.chunks_exact(2)) {
        let (mean, rstd) = (st[0], st[1]);
        // dxr holds n = norm(x) first, then the gradient.
        for (n, &v) in dxr.iter_mut().zip(xr) {
            *n = (v - mean) * rstd;
        }
        let (mut sum_dn, mut sum_dn_n) = ([0f32; LANES], [0f32; LANES]);
        for (j, ((&n, &g), &sc)) in dxr.iter().zip(gr).zip(scale).enumerate() {
            let dn = g * (1.0 + sc);
            sum_dn[j % LANES] += dn;
            sum_dn_n[j % LANES] += dn * n;
        }
        for (((ds, dc), &n), &g) in dshift
            .iter_mut()
            .zip(dscale.iter_mut())
            .zip(dxr.iter())
            .zip(gr)
        {
            *ds += g;
            *dc += g * n;
        }
        let mean_dn = sum_dn.iter().sum::<f32>() / h as f32;
        let mean_dn_n = sum_dn_n.iter().sum::<f32>() / h as f32;
        for ((o, &g), &sc) in dxr.iter_mut().zip(gr).zip(scale) {
            let n = *o;
            *o = rstd * (g * (1.0 + sc) - mean_dn - n * mean_dn_n);
        }
    }
}

#[inline(always)]
fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Defines a public function that runs `$impl` compiled for AVX-512 or AVX2 when the CPU has
/// them (the `#[inline(always)]` body is re-vectorised inside each `target_feature` copy).
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $impl:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $impl($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $impl($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $impl($($arg),*)
        }
    };
}

multiversion!(
    /// The largest element (`-inf` for an empty row).
    fn row_max(row: &[f32]) -> f32 = max_impl
);
multiversion!(
    /// `row[j] = exp(row[j] − shift)`; returns their sum.
    fn exp_shifted(row: &mut [f32], shift: f32) -> f32 = exp_shifted_impl
);
multiversion!(
    /// `row[j] *= by`.
    fn scale(row: &mut [f32], by: f32) -> () = scale_impl
);
multiversion!(
    /// The softmax backward of one row: `dp[j] = p[j] · (dp[j] − d) · scale`.
    fn softmax_grad(p: &[f32], dp: &mut [f32], d: f32, scale: f32) -> () = softmax_grad_impl
);
multiversion!(
    /// `y = x · σ(2·√(2/π)·(x + 0.044715·x³))`: GELU's tanh approximation.
    fn gelu_tanh(x: &[f32], y: &mut [f32]) -> () = gelu_tanh_impl
);
multiversion!(
    /// `dx = dy · d gelu_tanh(x) / dx`.
    fn gelu_tanh_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) -> () = gelu_tanh_grad_impl
);
multiversion!(
    /// LayerNorm (no affine) then adaLN's modulation, for one group of rows sharing `shift` and
    /// `scale` (width `shift.len()`); `stats` receives (mean, 1/σ) per row.
    fn ln_modulate(x: &[f32], shift: &[f32], scale: &[f32], y: &mut [f32], stats: &mut [f32]) -> () = ln_modulate_impl
);
multiversion!(
    /// The gradient of [`ln_modulate`] for one group.
    fn ln_modulate_grad(
        x: &[f32],
        scale: &[f32],
        stats: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dshift: &mut [f32],
        dscale: &mut [f32]
    ) -> () = ln_modulate_grad_impl
);
multiversion!(
    /// `Σ a[j] b[j]`.
    fn dot(a: &[f32], b: &[f32]) -> f32 = dot_impl
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_over_the_softmax_range() {
        let mut worst = 0f64;
        let mut row: Vec<f32> = (0..20_000).map(|i| -87.0 + i as f32 * 0.00875).collect();
        let inputs = row.clone();
        exp_shifted(&mut row, 0.0);
        for (&x, &e) in inputs.iter().zip(&row) {
            let want = (x as f64).exp();
            worst = worst.max(((e as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        // The sum, over what a softmax row holds after its shift (≤ 0).
        let mut row: Vec<f32> = (0..10_001).map(|i| -i as f32 * 0.003).collect();
        let sum64: f64 = row.iter().map(|&x| (x as f64 - 1.5).exp()).sum();
        let sum = exp_shifted(&mut row, 1.5);
        assert!(
            ((sum as f64 - sum64) / sum64).abs() < 1e-5,
            "{sum} vs {sum64}"
        );
        let mut big = [100f32, -100.0, f32::NAN];
        exp_shifted(&mut big, 0.0);
        assert!(big[0].is_finite() && big[0] > 1e38 && big[1] >= 0.0 && big[1] < 1e-37);
        assert!(big[2].is_nan(), "NaN must propagate, got {}", big[2]);
    }

    #[test]
    fn gelu_and_its_gradient_match_float64() {
        let x: Vec<f32> = (0..4001).map(|i| -20.0 + i as f32 * 0.01).collect();
        let dy: Vec<f32> = x.iter().map(|v| (v * 1.7).cos()).collect();
        let (mut y, mut dx) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        gelu_tanh(&x, &mut y);
        gelu_tanh_grad(&x, &dy, &mut dx);
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let f = |v: f64| 0.5 * v * (1.0 + (k * (v + 0.044715 * v.powi(3))).tanh());
        for i in 0..x.len() {
            let v = x[i] as f64;
            let h = 1e-5;
            let want = f(v);
            let grad = dy[i] as f64 * (f(v + h) - f(v - h)) / (2.0 * h);
            assert!(
                (y[i] as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                "gelu({v}) = {} vs {want}",
                y[i]
            );
            assert!(
                (dx[i] as f64 - grad).abs() < 1e-5 * (1.0 + grad.abs()),
                "gelu'({v}): {} vs {grad}",
                dx[i]
            );
        }
    }

    #[test]
    fn ln_modulate_matches_float64() {
        let (h, rows) = (37, 3);
        let x: Vec<f32> = (0..h * rows)
            .map(|i| 4.0 + (i as f32 * 0.77).sin() * 3.0)
            .collect();
        let shift: Vec<f32> = (0..h).map(|i| (i as f32 * 0.3).cos()).collect();
        let scale: Vec<f32> = (0..h).map(|i| (i as f32 * 0.2).sin()).collect();
        let (mut y, mut stats) = (vec![0f32; h * rows], vec![0f32; 2 * rows]);
        ln_modulate(&x, &shift, &scale, &mut y, &mut stats);
        for r in 0..rows {
            let row: Vec<f64> = x[r * h..][..h].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / h as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
            for j in 0..h {
                let n = (row[j] - mean) / (var + 1e-6).sqrt();
                let want = n * (1.0 + scale[j] as f64) + shift[j] as f64;
                let got = y[r * h + j] as f64;
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "row {r} col {j}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn reductions_cover_tails() {
        for n in [0usize, 1, 15, 16, 17, 33, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-5);
            let max = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(row_max(&a), max);
        }
    }
}
