//! Linear layers on the CPU: `y = x·W + b` as one gemm call whose output starts as the bias
//! rows, and its gradients (`dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ dy`) as two gemm calls reading
//! the transposes by strides plus a column sum. burn flex's `linear` adds the bias in a separate
//! broadcast pass that cost more than the product itself for DiT's qkv projection
//! (a profile of the CPU student); everything else is the same gemm crate burn flex multiplies with.
//!
//! Shapes: `x: [rows, d_in]`, `w: [d_in, d_out]` (burn's layout), `b: [d_out]`, row-major.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::attention::matmul;
use super::backend::{host, slice, tensor};

/// Below this many multiply-adds a product runs on one thread (burn flex's own threshold).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// Rows per task of the bias fill and the bias gradient.
const ROW_CHUNK: usize = 256;

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst[m×n] (= or +=) lhs[m×k] · rhs[k×n]` for a dense row-major `dst`, threaded by size.
/// Safety: as [`matmul`].
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        matmul(
            (m, n, k),
            dst,
            n,
            accumulate,
            lhs,
            rhs,
            1.0,
            parallelism(m, n, k),
        )
    }
}

/// `x·W + b`: `x: [rows, d_in]`, `w: [d_in, d_out]`, `b: [d_out]` → `[rows, d_out]`.
pub fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (rows, d_in, d_out): (usize, usize, usize),
) -> Vec<f32> {
    assert_eq!(
        (x.len(), w.len(), b.len()),
        (rows * d_in, d_in * d_out, d_out)
    );
    let mut y = vec![0f32; rows * d_out];
    y.par_chunks_mut(ROW_CHUNK * d_out.max(1))
        .for_each(|chunk| {
            for row in chunk.chunks_mut(d_out.max(1)) {
                row.copy_from_slice(b);
            }
        });
    // SAFETY: x is rows×d_in, w d_in×d_out, y rows×d_out, all dense row-major.
    unsafe {
        product(
            (rows, d_out, d_in),
            y.as_mut_ptr(),
            true,
            (x.as_ptr(), d_in, 1),
            (w.as_ptr(), d_out, 1),
        )
    }
    y
}

/// The gradients of [`forward`] that are asked for (`want = [dx, dw, db]`) from its inputs and
/// the output's gradient `dy: [rows, d_out]`.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (rows, d_in, d_out): (usize, usize, usize),
    want: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    assert_eq!(
        (x.len(), w.len(), dy.len()),
        (rows * d_in, d_in * d_out, rows * d_out)
    );
    // dx = dy · Wᵀ: Wᵀ[j][i] = w[i·d_out + j], so row stride 1 and column stride d_out.
    let dx = want[0].then(|| {
        let mut dx = vec![0f32; rows * d_in];
        // SAFETY: dy is rows×d_out; Wᵀ read by strides from w (d_in×d_out); dx rows×d_in.
        unsafe {
            product(
                (rows, d_in, d_out),
                dx.as_mut_ptr(),
                false,
                (dy.as_ptr(), d_out, 1),
                (w.as_ptr(), 1, d_out),
            )
        }
        dx
    });
    // dW = xᵀ · dy: xᵀ[i][r] = x[r·d_in + i], so row stride 1 and column stride d_in.
    let dw = want[1].then(|| {
        let mut dw = vec![0f32; d_in * d_out];
        // SAFETY: xᵀ read by strides from x (rows×d_in); dy rows×d_out; dw d_in×d_out.
        unsafe {
            product(
                (d_in, d_out, rows),
                dw.as_mut_ptr(),
                false,
                (x.as_ptr(), 1, d_in),
                (dy.as_ptr(), d_out, 1),
            )
        }
        dw
    });
    let db = want[2].then(|| {
        let width = d_out.max(1);
        dy.par_chunks(ROW_CHUNK * width)
            .fold(
                || vec![0f32; d_out],
                |mut acc, chunk| {
                    for row in chunk.chunks(width) {
                        acc.iter_mut().zip(row).for_each(|(a, &g)| *a += g);
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; d_out],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, &b)| *a += b);
                    a
                },
            )
    });
    [dx, dw, db]
}

/// The fused linear layer as a burn backend extension (burn flex, with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait CpuLinearBackend: Backend {
    /// `x: [.., d_in]`, `w: [d_in, d_out]`, `b: [d_out]` → `[.., d_out]`.
    fn cpu_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `(dx, dw, db)` from the inputs and the output's gradient `dy`; the ones not in `want`
    /// come back as empty tensors.
    fn cpu_linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        want: [bool; 3],
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (x, w, dy, want);
        panic!("the fused CPU linear layer has first-order gradients only")
    }
}

/// `(rows, d_in, d_out)` and the output's shape.
fn sizes(x: &FlexTensor, w: &FlexTensor) -> ((usize, usize, usize), Vec<usize>) {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let d_in = xs[xs.num_dims() - 1];
    let d_out = ws[1];
    assert_eq!(
        ws[0], d_in,
        "linear layer: input width {d_in}, weight {ws:?}"
    );
    let rows = xs.num_elements() / d_in.max(1);
    let mut out: Vec<usize> = xs.iter().copied().collect();
    *out.last_mut().expect("an input of rank ≥ 1") = d_out;
    ((rows, d_in, d_out), out)
}

impl CpuLinearBackend for Flex {
    fn cpu_linear(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        let [x, w, b] = [x, w, b].map(|t| host(&t));
        let (dims, shape) = sizes(&x, &w);
        tensor(forward(slice(&x), slice(&w), slice(&b), dims), shape)
    }

    fn cpu_linear_backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        want: [bool; 3],
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [x, w, dy] = [x, w, dy].map(|t| host(&t));
        let ((rows, d_in, d_out), _) = sizes(&x, &w);
        let [dx, dw, db] = backward(slice(&x), slice(&w), slice(&dy), (rows, d_in, d_out), want);
        let or_empty = |g: Option<Vec<f32>>, shape: Vec<usize>| match g {
            Some(g) => tensor(g, shape),
            None => tensor(Vec::new(), vec![0]),
        };
        (
            or_empty(dx, x.layout().shape().iter().copied().collect()),
            or_empty(dw, vec![d_in, d_out]),
            or_empty(db, vec![d_out]),
        )
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: CpuLinearBackend> Backward<B, 3> for LinearBackward {
    /// The inner input and weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let want = [0, 1, 2].map(|i| ops.parents[i].is_some());
        let (dx, dw, db) = B::cpu_linear_backward(x, w, dy, want);
        for (parent, grad) in ops.parents.into_iter().zip([dx, dw, db]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: CpuLinearBackend, C: CheckpointStrategy> CpuLinearBackend for Autodiff<B, C> {
    fn cpu_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        let (b, b_node) = b.into_parts();
        match LinearBackward
            .prepare::<C>([x_node, w_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::cpu_linear(x.clone(), w.clone(), b);
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cpu_linear(x, w, b)),
        }
    }
}

/// `x·weight + bias` with the fused kernel, differentiable; flex devices and f32 only.
/// `x: [.., d_in]`, `weight: [d_in, d_out]`, `bias: [d_out]` → `[.., d_out]`.
pub fn cpu_linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<D> {
    Tensor::from_dispatch(burn::backend::Dispatch::cpu_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).powi(2))
            .sum();
        let den: f64 = want.iter().map(|w| w * w).sum();
        let rel = (num / den).sqrt();
        assert!(rel < tol, "{name}: relative error {rel}");
    }

    /// Forward and all three gradients against float64 sums, on odd sizes: one small enough
    /// for a single thread, one past the threshold where gemm splits the work and with more
    /// rows than one bias-gradient chunk.
    #[test]
    fn forward_and_gradients_match_float64() {
        let mut seed = 7u64;
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        for (rows, d_in, d_out) in [(13, 7, 11), (301, 203, 151)] {
            let (x, w, b, dy) = (
                draw(rows * d_in),
                draw(d_in * d_out),
                draw(d_out),
                draw(rows * d_out),
            );
            let at = |m: &[f32], i: usize| m[i] as f64;
            let y_want: Vec<f64> = (0..rows * d_out)
                .map(|e| {
                    let (r, j) = (e / d_out, e % d_out);
                    at(&b, j)
                        + (0..d_in)
                            .map(|i| at(&x, r * d_in + i) * at(&w, i * d_out + j))
                            .sum::<f64>()
                })
                .collect();
            let dx_want: Vec<f64> = (0..rows * d_in)
                .map(|e| {
                    let (r, i) = (e / d_in, e % d_in);
                    (0..d_out)
                        .map(|j| at(&dy, r * d_out + j) * at(&w, i * d_out + j))
                        .sum()
                })
                .collect();
            let dw_want: Vec<f64> = (0..d_in * d_out)
                .map(|e| {
                    let (i, j) = (e / d_out, e % d_out);
                    (0..rows)
                        .map(|r| at(&x, r * d_in + i) * at(&dy, r * d_out + j))
                        .sum()
                })
                .collect();
            let db_want: Vec<f64> = (0..d_out)
                .map(|j| (0..rows).map(|r| at(&dy, r * d_out + j)).sum())
                .collect();
            let dims = (rows, d_in, d_out);
            assert_close("y", &forward(&x, &w, &b, dims), &y_want, 1e-6);
            let [dx, dw, db] = backward(&x, &w, &dy, dims, [true; 3]);
            assert_close("dx", &dx.unwrap(), &dx_want, 1e-6);
            assert_close("dw", &dw.unwrap(), &dw_want, 1e-6);
            assert_close("db", &db.unwrap(), &db_want, 1e-6);
            let [dx, dw, db] = backward(&x, &w, &dy, dims, [false, true, false]);
            assert!(dx.is_none() && dw.is_some() && db.is_none());
        }
    }

    /// Under autodiff the fused layer gives burn's `linear` values and the gradients of the
    /// input, weight and bias (a rank-3 input: rows are folded).
    #[test]
    fn gradients_match_burns_linear() {
        let device = burn::tensor::Device::flex().autodiff();
        let normal =
            |shape: Vec<usize>| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let x0 = normal(vec![3, 5, 9]);
        let w0 = normal(vec![1, 9, 6]).reshape([9, 6]);
        let b0 = normal(vec![1, 1, 6]).reshape([6]);
        let probe = normal(vec![3, 5, 6]);
        let run = |fused: bool| {
            let (x, w, b) = (
                x0.clone().require_grad(),
                w0.clone().require_grad(),
                b0.clone().require_grad(),
            );
            let y = if fused {
                cpu_linear(x.clone(), w.clone(), b.clone())
            } else {
                burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()))
            };
            let grads = (y.clone() * probe.clone()).sum().backward();
            (
                values(y.without_autodiff()),
                values(x.grad(&grads).unwrap()),
                values(w.grad(&grads).unwrap()),
                values(b.grad(&grads).unwrap()),
            )
        };
        let ours = run(true);
        let burns = run(false);
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        assert_close("y", &ours.0, &f64s(&burns.0), 1e-6);
        assert_close("dx", &ours.1, &f64s(&burns.1), 1e-6);
        assert_close("dw", &ours.2, &f64s(&burns.2), 1e-6);
        assert_close("db", &ours.3, &f64s(&burns.3), 1e-6);
    }
}
