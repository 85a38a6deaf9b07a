//! The variance-preserving noise schedule and timestep respacing (guided-diffusion's, as used
//! by DiT), in f64 like the reference's numpy code.

/// Training timesteps of the reference schedule.
pub const TRAIN_TIMESTEPS: usize = 1000;

/// `np.linspace(1e-4·s, 0.02·s, n)` with `s = 1000/n`.
pub fn linear_betas(n: usize) -> Vec<f64> {
    let scale = 1000.0 / n as f64;
    let (start, end) = (scale * 0.0001, scale * 0.02);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let mut b: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    b[n - 1] = end;
    b
}

/// `cumprod(1 − β)`
pub fn alpha_bar_from_betas(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// guided-diffusion's `space_timesteps(n, [count])`: `count` steps evenly spread over 0..n,
/// each rounded half-to-even as Python's `round` does (25 of 1000 gives 0, 42, 83, 125, 166, …).
pub fn space_timesteps(num_timesteps: usize, count: usize) -> Vec<usize> {
    assert!(
        (1..=num_timesteps).contains(&count),
        "cannot take {count} steps out of {num_timesteps}"
    );
    let stride = if count <= 1 {
        1.0
    } else {
        (num_timesteps - 1) as f64 / (count - 1) as f64
    };
    let mut cur = 0.0f64;
    let mut steps = Vec::with_capacity(count);
    for _ in 0..count {
        steps.push(cur.round_ties_even() as usize);
        cur += stride;
    }
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// A schedule restricted to a subset of the training timesteps.
#[derive(Clone, Debug)]
pub struct RespacedSchedule {
    /// Original timestep of each respaced index (what the model is called with).
    pub timesteps: Vec<usize>,
    /// ᾱ at each respaced index.
    pub alpha_bar: Vec<f64>,
    /// ᾱ at the previous respaced index (1 before the first).
    pub alpha_bar_prev: Vec<f64>,
}

impl RespacedSchedule {
    /// The reference linear schedule of 1000 steps, respaced to `count` steps.
    pub fn linear(count: usize) -> Self {
        Self::from_base(&alpha_bar_from_betas(&linear_betas(TRAIN_TIMESTEPS)), count)
    }

    /// Respaces a base ᾱ as guided-diffusion's `SpacedDiffusion`: new β from ratios of kept
    /// ᾱ values, then ᾱ again as their cumulative product.
    pub fn from_base(base_alpha_bar: &[f64], count: usize) -> Self {
        let timesteps = space_timesteps(base_alpha_bar.len(), count);
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(timesteps.len());
        for &t in &timesteps {
            betas.push(1.0 - base_alpha_bar[t] / last);
            last = base_alpha_bar[t];
        }
        let alpha_bar = alpha_bar_from_betas(&betas);
        let mut alpha_bar_prev = vec![1.0];
        alpha_bar_prev.extend_from_slice(&alpha_bar[..alpha_bar.len() - 1]);
        Self {
            timesteps,
            alpha_bar,
            alpha_bar_prev,
        }
    }

    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_25_step_respacing() {
        let t = space_timesteps(1000, 25);
        assert_eq!(t.len(), 25);
        assert_eq!(&t[..6], &[0, 42, 83, 125, 166, 208]);
        assert_eq!(t[20], 832);
        assert_eq!(t[24], 999);
    }

    #[test]
    fn respaced_alpha_bar_matches_base() {
        let base = alpha_bar_from_betas(&linear_betas(1000));
        let s = RespacedSchedule::from_base(&base, 25);
        for (i, &t) in s.timesteps.iter().enumerate() {
            assert!((s.alpha_bar[i] - base[t]).abs() < 1e-12);
        }
        assert_eq!(s.alpha_bar_prev[0], 1.0);
        assert!(
            (base[999] - 4.035e-5).abs() < 1e-7,
            "alpha_bar at T: {}",
            base[999]
        );
    }
}
