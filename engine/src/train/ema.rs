//! The exponential moving average of the weights that every job ships (DiT's and ARD's EMA
//! model), with the warm-up `min(decay, (1 + i)/(10 + i))`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::container::TensorContainer;

/// Untracked copies of a module's float parameters, by id.
struct CollectParams(TensorContainer<ParamId>);

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        // Without autodiff: an EMA built from tracked tensors would chain a graph through every
        // iteration.
        self.0
            .register::<Tensor<D>>(p.id, p.val().without_autodiff());
    }
}

/// `ema ← decay·ema + (1 − decay)·live`, pairing parameters by id.
struct EmaUpdate<'a> {
    live: &'a TensorContainer<ParamId>,
    decay: f32,
}

impl ModuleMapper for EmaUpdate<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(live) = self.live.get::<Tensor<D>>(&p.id) else {
            return p;
        };
        let d = self.decay;
        p.map(|e| (e.without_autodiff() * d + live * (1.0 - d)).without_autodiff())
    }
}

/// The decay used after `iteration` steps: the target, warmed up as min(decay, (1+i)/(10+i)).
pub fn ema_decay_at(target: f64, iteration: u64) -> f64 {
    let i = iteration as f64;
    target.min((1.0 + i) / (10.0 + i))
}

/// `ema ← decay·ema + (1 − decay)·live`, parameter by parameter.
pub fn update_ema<M: Module>(ema: M, live: &M, decay: f32) -> M {
    let mut params = CollectParams(TensorContainer::new());
    live.visit(&mut params);
    ema.map(&mut EmaUpdate {
        live: &params.0,
        decay,
    })
}
