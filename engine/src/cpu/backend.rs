//! The fused CPU attention inside burn: a backend extension on burn flex, and its own autodiff
//! node (the forward saves the row log-sum-exp; the backward is [`super::attention::backward`]),
//! so training never builds burn's decomposed softmax.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::{AutodiffBackend, Backend, backend_extension, tensor::FloatTensor};
use burn::tensor::{DType, Shape, Tensor, TensorData};

use super::attention::{self, Heads};
use super::simd;
use crate::ops::AttentionMask;

/// ARD's fused attention as a burn backend extension (burn flex, with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait CpuAttentionBackend: Backend {
    /// `q: [BH, Tq, D]`, `k, v: [BH, Tk, D]` → (`out: [BH, Tq, D]`, `lse: [BH, Tq]`).
    fn cpu_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: AttentionMask,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients `(dq, dk, dv)` from the forward's inputs, output, log-sum-exp and `dout`.
    #[allow(clippy::too_many_arguments)]
    fn cpu_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        mask: AttentionMask,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (q, k, v, out, lse, dout, mask);
        panic!("the fused CPU attention has first-order gradients only")
    }

    /// LayerNorm (no affine, ε 1e-6) then adaLN's `· (1 + scale) + shift` over the last axis:
    /// `x: [.., T, H]`, `shift, scale: [.., 1, H]` (one modulation per group of T rows) →
    /// (`y` like `x`, per-row `(mean, 1/σ)`).
    fn cpu_ln_modulate(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Its gradients `(dx, dshift, dscale)` from the input, `scale`, the row statistics and `dy`.
    fn cpu_ln_modulate_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (x, scale, stats, dy);
        panic!("the fused CPU LayerNorm has first-order gradients only")
    }

    /// GELU's tanh approximation in one pass (any shape).
    fn cpu_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Its gradient given the input `x` and the output's gradient `dy`.
    fn cpu_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = (x, dy);
        panic!("the fused CPU GELU has first-order gradients only")
    }
}

/// Elements per rayon task of the element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 15;

/// `t` as a contiguous f32 tensor (our CPU kernels read f32 only).
pub(super) fn host(t: &FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "our fused CPU kernels read f32");
    t.to_contiguous()
}

pub(super) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

pub(super) fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, Shape::from(shape)))
}

fn heads(q: &FlexTensor, k: &FlexTensor) -> Heads {
    let (qs, ks) = (q.layout().shape(), k.layout().shape());
    Heads {
        bh: qs[0],
        tq: qs[1],
        tk: ks[1],
        d: qs[2],
    }
}

impl CpuAttentionBackend for Flex {
    fn cpu_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: AttentionMask,
    ) -> (FlexTensor, FlexTensor) {
        let (q, k, v) = (host(&q), host(&k), host(&v));
        let shape = heads(&q, &k);
        let (out, lse) = attention::forward(slice(&q), slice(&k), slice(&v), shape, mask);
        let Heads { bh, tq, d, .. } = shape;
        (tensor(out, vec![bh, tq, d]), tensor(lse, vec![bh, tq]))
    }

    fn cpu_attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        out: FlexTensor,
        lse: FlexTensor,
        dout: FlexTensor,
        mask: AttentionMask,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [q, k, v, out, lse, dout] = [q, k, v, out, lse, dout].map(|t| host(&t));
        let shape = heads(&q, &k);
        let (dq, dk, dv) = attention::backward(
            slice(&q),
            slice(&k),
            slice(&v),
            slice(&out),
            slice(&lse),
            slice(&dout),
            shape,
            mask,
        );
        let Heads { bh, tq, tk, d } = shape;
        (
            tensor(dq, vec![bh, tq, d]),
            tensor(dk, vec![bh, tk, d]),
            tensor(dv, vec![bh, tk, d]),
        )
    }

    fn cpu_ln_modulate(
        x: FlexTensor,
        shift: FlexTensor,
        scale: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        use rayon::prelude::*;
        let [x, shift, scale] = [x, shift, scale].map(|t| host(&t));
        let (xs, sh, sc) = (slice(&x), slice(&shift), slice(&scale));
        let shape = x.layout().shape().to_vec();
        let h = shape[shape.len() - 1];
        let group = xs.len() / (sh.len() / h).max(1);
        let mut y = vec![0f32; xs.len()];
        let mut stats = vec![0f32; 2 * xs.len() / h.max(1)];
        y.par_chunks_mut(group.max(1))
            .zip(stats.par_chunks_mut((2 * group / h.max(1)).max(1)))
            .enumerate()
            .for_each(|(g, (y, st))| {
                let x = &xs[g * group..][..y.len()];
                simd::ln_modulate(x, &sh[g * h..][..h], &sc[g * h..][..h], y, st);
            });
        let rows = xs.len() / h.max(1);
        (tensor(y, shape), tensor(stats, vec![rows, 2]))
    }

    fn cpu_ln_modulate_backward(
        x: FlexTensor,
        scale: FlexTensor,
        stats: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        use rayon::prelude::*;
        let [x, scale, stats, dy] = [x, scale, stats, dy].map(|t| host(&t));
        let (xs, sc, st, gs) = (slice(&x), slice(&scale), slice(&stats), slice(&dy));
        let shape = x.layout().shape().to_vec();
        let mod_shape = scale.layout().shape().to_vec();
        let h = shape[shape.len() - 1];
        let group = xs.len() / (sc.len() / h).max(1);
        let mut dx = vec![0f32; xs.len()];
        let mut dshift = vec![0f32; sc.len()];
        let mut dscale = vec![0f32; sc.len()];
        dx.par_chunks_mut(group.max(1))
            .zip(dshift.par_chunks_mut(h.max(1)))
            .zip(dscale.par_chunks_mut(h.max(1)))
            .enumerate()
            .for_each(|(g, ((dx, ds), dc))| {
                let rows = g * group / h..(g * group + dx.len()) / h;
                simd::ln_modulate_grad(
                    &xs[g * group..][..dx.len()],
                    &sc[g * h..][..h],
                    &st[2 * rows.start..2 * rows.end],
                    &gs[g * group..][..dx.len()],
                    dx,
                    ds,
                    dc,
                );
            });
        (
            tensor(dx, shape),
            tensor(dshift, mod_shape.clone()),
            tensor(dscale, mod_shape),
        )
    }

    fn cpu_gelu_tanh(x: FlexTensor) -> FlexTensor {
        elementwise(&[&x], |i, o| simd::gelu_tanh(i[0], o))
    }

    fn cpu_gelu_tanh_backward(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        elementwise(&[&x, &dy], |i, o| simd::gelu_tanh_grad(i[0], i[1], o))
    }
}

/// `out = f(inputs)` element by element, in parallel chunks; the output has the first input's
/// shape.
fn elementwise(inputs: &[&FlexTensor], f: impl Fn(&[&[f32]], &mut [f32]) + Sync) -> FlexTensor {
    use rayon::prelude::*;
    let hosts: Vec<FlexTensor> = inputs.iter().map(|t| host(t)).collect();
    let slices: Vec<&[f32]> = hosts.iter().map(slice).collect();
    let mut out = vec![0f32; slices[0].len()];
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .enumerate()
        .for_each(|(i, o)| {
            let start = i * ELEMENTWISE_CHUNK;
            let parts: Vec<&[f32]> = slices.iter().map(|s| &s[start..start + o.len()]).collect();
            f(&parts, o);
        });
    tensor(out, hosts[0].layout().shape().to_vec())
}

/// What the backward pass keeps: the inner tensors of the forward's inputs and results.
#[derive(Clone, Debug)]
struct Saved<B: CpuAttentionBackend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    mask: AttentionMask,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: CpuAttentionBackend> Backward<B, 3> for AttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let Saved {
            q,
            k,
            v,
            out,
            lse,
            mask,
        } = ops.state;
        let (dq, dk, dv) = B::cpu_attention_backward(q, k, v, out, lse, dout, mask);
        for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: CpuAttentionBackend, C: CheckpointStrategy> CpuAttentionBackend for Autodiff<B, C> {
    fn cpu_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: AttentionMask,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (q, q_node) = q.into_parts();
        let (k, k_node) = k.into_parts();
        let (v, v_node) = v.into_parts();
        match AttentionBackward
            .prepare::<C>([q_node, k_node, v_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, lse) = B::cpu_attention(q.clone(), k.clone(), v.clone(), mask);
                let saved = Saved {
                    q,
                    k,
                    v,
                    out: out.clone(),
                    lse: lse.clone(),
                    mask,
                };
                (
                    prep.finish(saved, out),
                    <Self as AutodiffBackend>::from_inner(lse),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (out, lse) = B::cpu_attention(q, k, v, mask);
                (prep.finish(out), <Self as AutodiffBackend>::from_inner(lse))
            }
        }
    }

    fn cpu_ln_modulate(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (x, x_node) = x.into_parts();
        let (shift, shift_node) = shift.into_parts();
        let (scale, scale_node) = scale.into_parts();
        let prep = LnModulateBackward.prepare::<C>([x_node, shift_node, scale_node]);
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, stats) = B::cpu_ln_modulate(x.clone(), shift, scale.clone());
                let saved = LnSaved {
                    x,
                    scale,
                    stats: stats.clone(),
                };
                (
                    prep.finish(saved, y),
                    <Self as AutodiffBackend>::from_inner(stats),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, stats) = B::cpu_ln_modulate(x, shift, scale);
                (prep.finish(y), <Self as AutodiffBackend>::from_inner(stats))
            }
        }
    }

    fn cpu_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match GeluBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::cpu_gelu_tanh(x.clone());
                prep.finish(x, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cpu_gelu_tanh(x)),
        }
    }
}

/// What the LayerNorm + modulate backward keeps.
#[derive(Clone, Debug)]
struct LnSaved<B: CpuAttentionBackend> {
    x: FloatTensor<B>,
    scale: FloatTensor<B>,
    stats: FloatTensor<B>,
}

#[derive(Debug)]
struct LnModulateBackward;

impl<B: CpuAttentionBackend> Backward<B, 3> for LnModulateBackward {
    type State = LnSaved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let LnSaved { x, scale, stats } = ops.state;
        let (dx, dshift, dscale) = B::cpu_ln_modulate_backward(x, scale, stats, dy);
        for (parent, grad) in ops.parents.into_iter().zip([dx, dshift, dscale]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: CpuAttentionBackend> Backward<B, 1> for GeluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::cpu_gelu_tanh_backward(ops.state, dy));
        }
    }
}

/// `layer_norm(x) · (1 + scale) + shift` in one pass, differentiable; flex devices only.
/// `x: [.., T, H]`, `shift, scale: [.., 1, H]`.
pub fn cpu_ln_modulate<const D: usize>(
    x: Tensor<D>,
    shift: Tensor<D>,
    scale: Tensor<D>,
) -> Tensor<D> {
    let (y, _stats) = burn::backend::Dispatch::cpu_ln_modulate(
        x.into_dispatch(),
        shift.into_dispatch(),
        scale.into_dispatch(),
    );
    Tensor::from_dispatch(y)
}

/// GELU's tanh approximation in one vectorised pass, differentiable; flex devices only.
pub fn cpu_gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(burn::backend::Dispatch::cpu_gelu_tanh(x.into_dispatch()))
}

/// Calls of [`cpu_attention`] in this process.
static CPU_ATTENTION_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many attentions our fused CPU kernel has computed in this process.
pub fn cpu_attention_calls() -> u64 {
    CPU_ATTENTION_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]` with the fused CPU kernel,
/// differentiable. The device must be flex ([`crate::device::on_flex`]) and the tensors f32.
pub fn cpu_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: AttentionMask) -> Tensor<4> {
    CPU_ATTENTION_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let [b, h, lq, d] = q.dims();
    let lk = k.dims()[2];
    let flat = |t: Tensor<4>, l: usize| t.reshape([b * h, l, d]).into_dispatch();
    let (out, _lse) =
        burn::backend::Dispatch::cpu_attention(flat(q, lq), flat(k, lk), flat(v, lk), mask);
    Tensor::<3>::from_dispatch(out).reshape([b, h, lq, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    fn rel<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let num = (a - b.clone())
            .powf_scalar(2.0)
            .sum()
            .into_scalar::<f32>()
            .sqrt();
        let den = b.powf_scalar(2.0).sum().into_scalar::<f32>().sqrt();
        num / den
    }

    /// The fused op under autodiff gives burn's attention's values and gradients, with a
    /// block-causal mask (burn's: a boolean mask) on odd sizes.
    #[test]
    fn gradients_match_burns_attention() {
        let device = burn::tensor::Device::flex().autodiff();
        assert!(
            crate::device::on_flex(&device)
                && crate::device::on_flex(&burn::tensor::Device::flex())
        );
        let (b, h, t, steps, d) = (2, 3, 5, 3, 7);
        let l = t * steps;
        let draw = || Tensor::<4>::random([b, h, l, d], Distribution::Normal(0.0, 1.0), &device);
        let (q0, k0, v0) = (draw(), draw(), draw());
        let weights = Tensor::<4>::random([b, h, l, d], Distribution::Normal(0.0, 1.0), &device);
        let mask = AttentionMask::BlockCausal {
            tokens_per_step: t,
            q_step_offset: 0,
        };
        let run = |fused: bool| {
            let (q, k, v) = (
                q0.clone().require_grad(),
                k0.clone().require_grad(),
                v0.clone().require_grad(),
            );
            let out = if fused {
                cpu_attention(q.clone(), k.clone(), v.clone(), mask)
            } else {
                let allowed: Vec<bool> = (0..l * l)
                    .map(|e| (e % l) >= mask.key_range(e / l, l).1)
                    .collect();
                let masked = Tensor::<2, burn::tensor::Bool>::from_data(
                    TensorData::new(allowed, [l, l]),
                    &device,
                )
                .reshape([1, 1, l, l])
                .expand([b, h, l, l]);
                attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    Some(masked),
                    None,
                    AttentionModuleOptions::default(),
                )
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            let g = |t: &Tensor<4>| t.grad(&grads).expect("a gradient");
            (out.without_autodiff(), [g(&q), g(&k), g(&v)])
        };
        let (ours, our_grads) = run(true);
        let (burns, burn_grads) = run(false);
        assert!(rel(ours, burns) < 1e-5);
        for (name, (a, b)) in ["dq", "dk", "dv"]
            .iter()
            .zip(our_grads.into_iter().zip(burn_grads))
        {
            let e = rel(a, b);
            assert!(e < 1e-4, "{name}: relative error {e}");
        }
    }

    /// The fused GELU under autodiff gives the composite formula's values and gradients.
    #[test]
    fn gelu_gradient_matches_the_composite_formula() {
        let device = burn::tensor::Device::flex().autodiff();
        let x0 = Tensor::<3>::random([3, 17, 41], Distribution::Normal(0.0, 3.0), &device);
        let w = Tensor::<3>::random([3, 17, 41], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x0.clone().require_grad();
            let y = if fused {
                cpu_gelu_tanh(x.clone())
            } else {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * k;
                x.clone() * (inner.tanh() + 1.0) * 0.5
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.without_autodiff(), x.grad(&grads).expect("a gradient"))
        };
        let (y1, g1) = run(true);
        let (y2, g2) = run(false);
        assert!(rel(y1, y2) < 1e-5);
        let e = rel(g1, g2);
        assert!(e < 1e-5, "gradient relative error {e}");
    }

    /// The fused LayerNorm + modulate under autodiff gives the composite's values and the
    /// gradients of x, shift and scale (odd sizes; one modulation per group of rows).
    #[test]
    fn ln_modulate_matches_the_composite() {
        let device = burn::tensor::Device::flex().autodiff();
        let normal = |shape: [usize; 4], std: f64| {
            Tensor::<4>::random(shape, Distribution::Normal(0.5, std), &device)
        };
        let (x0, sh0, sc0) = (
            normal([3, 2, 5, 19], 2.0),
            normal([3, 2, 1, 19], 1.0),
            normal([3, 2, 1, 19], 1.0),
        );
        let w = normal([3, 2, 5, 19], 1.0);
        let run = |fused: bool| {
            let (x, sh, sc) = (
                x0.clone().require_grad(),
                sh0.clone().require_grad(),
                sc0.clone().require_grad(),
            );
            let y = if fused {
                cpu_ln_modulate(x.clone(), sh.clone(), sc.clone())
            } else {
                let gamma = Tensor::<1>::ones([19], &device);
                let n = burn::tensor::module::layer_norm(x.clone(), gamma, None, 1e-6);
                n * (sc.clone() + 1.0) + sh.clone()
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = |t: &Tensor<4>| t.grad(&grads).expect("a gradient");
            (y.without_autodiff(), [g(&x), g(&sh), g(&sc)])
        };
        let (y1, g1) = run(true);
        let (y2, g2) = run(false);
        assert!(rel(y1, y2) < 1e-5);
        for (name, (a, b)) in ["dx", "dshift", "dscale"]
            .iter()
            .zip(g1.into_iter().zip(g2))
        {
            let e = rel(a, b);
            assert!(e < 1e-4, "{name}: relative error {e}");
        }
    }
}
