//! 1-D convolution over a token sequence with spectral normalisation (Miyato et al., "Spectral
//! Normalization for Generative Adversarial Networks", ICLR 2018): the weight is divided by its
//! largest singular value, estimated by one power iteration per discriminator step, so that
//! each layer is 1-Lipschitz.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::Result;
use crate::model::params::{Init, ParamSource};

/// Keeps a vector away from zero length before normalising it (PyTorch's `eps`).
const NORM_EPS: f32 = 1e-12;

/// A spectrally normalised convolution of kernel `k` (odd) over tokens `[B, T, C_in]` →
/// `[B, T, C_out]`, with circular padding along the token axis.
#[derive(Module, Debug)]
pub struct SpectralConv1d {
    /// `[C_out, C_in, k]` (PyTorch's Conv1d layout).
    pub weight: Param<Tensor<3>>,
    pub bias: Param<Tensor<1>>,
    /// Estimate of the weight matrix's first left singular vector `[C_out]`, never trained.
    pub u: Param<Tensor<1>>,
}

fn normalize(v: Tensor<1>) -> Tensor<1> {
    let norm = v.clone().square().sum().sqrt().clamp_min(NORM_EPS);
    v / norm
}

impl SpectralConv1d {
    /// Fresh (Xavier weight, zero bias, random unit `u`) or read as `prefix.{weight,bias,u}`.
    pub fn load(
        r: &mut ParamSource,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
    ) -> Result<Self> {
        let weight = r.param(
            &format!("{prefix}.weight"),
            [c_out, c_in, k],
            Init::Xavier {
                fan_in: c_in * k,
                fan_out: c_out * k,
            },
        )?;
        let bias = r.param(&format!("{prefix}.bias"), [c_out], Init::Zeros)?;
        let mut u = r.host(&format!("{prefix}.u"), &[c_out], Init::Normal(1.0))?;
        let norm = u
            .data
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(NORM_EPS);
        u.data.iter_mut().for_each(|v| *v /= norm);
        let u = Param::from_tensor(u.to_device(r.device())?).set_require_grad(false);
        Ok(Self { weight, bias, u })
    }

    /// The weight as a matrix `[C_out, C_in·k]`.
    fn matrix(&self) -> Tensor<2> {
        let [o, i, k] = self.weight.val().dims();
        self.weight.val().reshape([o, i * k])
    }

    /// One power iteration: `u ← W v / ‖W v‖` with `v = Wᵀu / ‖Wᵀu‖` (outside the graph).
    pub fn power_iteration(mut self) -> Self {
        let w = self.matrix().detach();
        let u = self.u.val().detach();
        let v = normalize(
            w.clone()
                .transpose()
                .matmul(u.unsqueeze_dim(1))
                .squeeze_dim(1),
        );
        let u = normalize(w.matmul(v.unsqueeze_dim(1)).squeeze_dim(1));
        self.u = self.u.map(move |_| u.detach()).set_require_grad(false);
        self
    }

    /// σ = uᵀ W v, the largest singular value's estimate (the gradient flows through W only).
    pub fn sigma(&self) -> Tensor<1> {
        let w = self.matrix();
        let u = self.u.val().detach();
        let v = normalize(
            w.clone()
                .detach()
                .transpose()
                .matmul(u.clone().unsqueeze_dim(1))
                .squeeze_dim(1),
        );
        (w.matmul(v.unsqueeze_dim(1)).squeeze_dim(1) * u).sum()
    }

    /// `x: [B, T, C_in]` → `[B, T, C_out]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c_in] = x.dims();
        let [c_out, _, k] = self.weight.val().dims();
        let device = x.device();
        // im2col with circular padding: column block j holds the token at offset j − k/2.
        let cols = if k == 1 {
            x
        } else {
            let half = (k / 2) as i64;
            let shifted: Vec<Tensor<3>> = (0..k as i64)
                .map(|j| {
                    let idx: Vec<i64> = (0..t as i64)
                        .map(|i| (i + j - half).rem_euclid(t as i64))
                        .collect();
                    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [t]), &device);
                    x.clone().select(1, idx)
                })
                .collect();
            Tensor::cat(shifted, 2)
        };
        // [C_out, C_in, k] → [k·C_in, C_out], matching the column order (offset, channel).
        let w = (self.weight.val() / self.sigma().reshape([1, 1, 1]))
            .permute([2, 1, 0])
            .reshape([k * c_in, c_out]);
        let y = cols.reshape([b * t, k * c_in]).matmul(w) + self.bias.val().unsqueeze_dim(0);
        y.reshape([b, t, c_out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::InitOptions;
    use burn::tensor::Device;

    fn conv(k: usize, device: &Device) -> SpectralConv1d {
        let mut r = ParamSource::fresh(
            InitOptions {
                seed: 3,
                zero_init: false,
            },
            device,
        );
        SpectralConv1d::load(&mut r, "c", 5, 7, k).unwrap()
    }

    /// The largest singular value of a small matrix, in float64 (power iteration to convergence).
    fn sigma_f64(w: &[f32], rows: usize, cols: usize) -> f64 {
        let mut v = vec![1.0f64; cols];
        let mut s = 0.0;
        for _ in 0..2000 {
            let wv: Vec<f64> = (0..rows)
                .map(|i| (0..cols).map(|j| w[i * cols + j] as f64 * v[j]).sum())
                .collect();
            let wtwv: Vec<f64> = (0..cols)
                .map(|j| (0..rows).map(|i| w[i * cols + j] as f64 * wv[i]).sum())
                .collect();
            let n = wtwv.iter().map(|x| x * x).sum::<f64>().sqrt();
            v = wtwv.iter().map(|x| x / n).collect();
            s = n.sqrt();
        }
        s
    }

    #[test]
    fn power_iterations_converge_to_the_largest_singular_value() {
        let device = Device::flex();
        let mut c = conv(3, &device);
        let w = c.weight.val().to_data().try_to_vec::<f32>().unwrap();
        let want = sigma_f64(&w, 7, 15);
        for _ in 0..200 {
            c = c.power_iteration();
        }
        let got = c.sigma().into_scalar::<f32>() as f64;
        assert!((got - want).abs() < 1e-4 * want, "σ {got} vs {want}");
    }

    #[test]
    fn the_convolution_is_circular_and_matches_a_float64_loop() {
        let device = Device::flex();
        let c = conv(3, &device);
        let (b, t, ci, co, k) = (2, 4, 5, 7, 3);
        let xs: Vec<f32> = (0..b * t * ci)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [b, t, ci]), &device);
        let got = c.forward(x).to_data().try_to_vec::<f32>().unwrap();
        let w = c.weight.val().to_data().try_to_vec::<f32>().unwrap();
        let bias = c.bias.val().to_data().try_to_vec::<f32>().unwrap();
        let sigma = c.sigma().into_scalar::<f32>() as f64;
        for bi in 0..b {
            for ti in 0..t {
                for o in 0..co {
                    let mut acc = bias[o] as f64;
                    for j in 0..k {
                        let src = (ti + t + j - k / 2) % t;
                        for i in 0..ci {
                            acc += w[(o * ci + i) * k + j] as f64 / sigma
                                * xs[(bi * t + src) * ci + i] as f64;
                        }
                    }
                    let g = got[(bi * t + ti) * co + o] as f64;
                    assert!((g - acc).abs() < 1e-5 * acc.abs().max(1.0), "{g} vs {acc}");
                }
            }
        }
    }
}
