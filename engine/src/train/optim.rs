//! The optimiser of every training job: AdamW without weight decay (the paper's, PyTorch's
//! defaults otherwise) and clipping by the global gradient norm (PyTorch's `clip_grad_norm_`).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// Squared global gradient norm, collected per parameter.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.parts.push(g.square().sum());
        }
    }
}

/// Multiplies every gradient by `scale`.
struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    scale: f32,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register::<D>(p.id, g * self.scale);
        }
    }
}

/// Clips gradients to a global L2 norm of at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let mut sq = GradSquares {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut sq);
    if sq.parts.is_empty() {
        return 0.0;
    }
    let norm = Tensor::cat(sq.parts, 0).sum().sqrt().into_scalar::<f32>();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        model.visit(&mut ScaleGrads { grads, scale });
    }
    norm
}

/// AdamW with β = (0.9, 0.999), ε = 1e-8 and no weight decay.
pub(crate) fn optimizer() -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init()
}
