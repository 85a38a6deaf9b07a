//! The ARD student (Kim et al., "Autoregressive Distillation of Diffusion Transformers", CVPR
//! 2025; reference `models_ARD.py`): the teacher's DiT fed the whole trajectory history.
//!
//! K steps. Step k's input (x_T for k = 0, then the previous step's estimate) is patch-embedded
//! with the shared embedding and positions; every token carries its step's time marker, so the
//! adaLN conditioning is `t_embed(marker_k) + y_embed(y)` per step. The lower N blocks
//! (`history_layers`) let step k attend to steps ≤ k; the upper blocks see only the step itself.
//! Head k (a copy of the teacher's final layer) regresses step k's target directly.

use std::ops::ControlFlow;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::error::{EngineError, Result};
use crate::model::attention::{KvCache, Mixing};
use crate::model::config::{DitConfig, StudentConfig};
use crate::model::dit::Dit;
use crate::model::final_layer::FinalLayer;
use crate::model::params::{ParamSource, ParamWriter};
use crate::model::precision::to_f32;
use crate::model::text_condition::{Cond, TextContext};

#[derive(Module, Debug)]
pub struct ArdStudent {
    /// Embeddings, blocks, and head 0 (`final_layer`).
    pub dit: Dit,
    /// Heads of steps 1..K (`final_layer2` … `final_layerK`).
    pub extra_heads: Vec<FinalLayer>,
    #[module(skip)]
    pub student: StudentConfig,
}

/// Reference key prefix of step k's head.
fn head_key(k: usize) -> String {
    if k == 0 {
        "final_layer".into()
    } else {
        format!("final_layer{}", k + 1)
    }
}

fn copy_linear(l: &Linear) -> Linear {
    Linear {
        weight: Param::from_tensor(l.weight.val()),
        bias: l.bias.as_ref().map(|b| Param::from_tensor(b.val())),
    }
}

fn copy_head(h: &FinalLayer) -> FinalLayer {
    FinalLayer {
        linear: copy_linear(&h.linear),
        ada_ln: copy_linear(&h.ada_ln),
    }
}

impl ArdStudent {
    pub fn load(r: &mut ParamSource, dit: &DitConfig, student: &StudentConfig) -> Result<Self> {
        student.validate(dit)?;
        let base = Dit::load(r, dit)?;
        let extra_heads = (1..student.steps)
            .map(|k| FinalLayer::load(r, &head_key(k), dit))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dit: base,
            extra_heads,
            student: student.clone(),
        })
    }

    /// A student initialised from its teacher: every head starts as the teacher's final layer.
    pub fn from_teacher(teacher: Dit, student: StudentConfig) -> Result<Self> {
        student.validate(teacher.config())?;
        let extra_heads = (1..student.steps)
            .map(|_| copy_head(&teacher.final_layer))
            .collect();
        Ok(Self {
            dit: teacher,
            extra_heads,
            student,
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        self.dit.save(w);
        for (i, h) in self.extra_heads.iter().enumerate() {
            h.save(w, &head_key(i + 1));
        }
    }

    pub fn config(&self) -> &StudentConfig {
        &self.student
    }

    pub fn steps(&self) -> usize {
        self.config().steps
    }

    pub fn head(&self, k: usize) -> &FinalLayer {
        if k == 0 {
            &self.dit.final_layer
        } else {
            &self.extra_heads[k - 1]
        }
    }

    /// Per-step conditioning `t_embed(marker_k) + y_embed(y)`: `cond`: B labels or prompts →
    /// `[B, K, H]`, and the prompts' context (every step attends to the same prompt).
    pub fn step_conditions(&self, cond: &Cond) -> (Tensor<3>, Option<TextContext>) {
        let markers: Vec<f32> = self
            .config()
            .time_markers
            .iter()
            .map(|&t| t as f32)
            .collect();
        let (y, context) = self.dit.embed_condition(cond); // [B, H]
        let t = self.dit.t_embedder.forward(&markers, &y.device()); // [K, H]
        (t.unsqueeze_dim::<3>(0) + y.unsqueeze_dim::<3>(1), context)
    }

    /// Teacher-forced pass over all K steps at once (training).
    /// `inputs`: K tensors `[B, C, H, W]` (x_T, then the targets of steps 0..K−1),
    /// `cond`: B labels or prompts → K outputs `[B, C_out, H, W]`.
    pub fn forward_teacher_forced(
        &self,
        inputs: &[Tensor<4>],
        cond: impl Into<Cond>,
    ) -> Result<Vec<Tensor<4>>> {
        let (x, c) = self.teacher_forced_tokens(inputs, cond)?;
        let k = x.dims()[1];
        Ok((0..k).map(|s| self.step_output(&x, &c, s)).collect())
    }

    /// The teacher-forced pass up to the heads: `inputs` as [`Self::forward_teacher_forced`]
    /// → the last block's tokens `[B, K, T, H]` and the per-step conditioning `[B, K, H]`.
    pub fn teacher_forced_tokens(
        &self,
        inputs: &[Tensor<4>],
        cond: impl Into<Cond>,
    ) -> Result<(Tensor<4>, Tensor<3>)> {
        let steps = self.steps();
        if inputs.len() != steps {
            return Err(EngineError::Mismatch(format!(
                "the student takes {steps} inputs (x_T and {} history states), got {}",
                steps - 1,
                inputs.len()
            )));
        }
        let (c, context) = self.step_conditions(&cond.into()); // [B, K, H]
        let context = context.as_ref();
        let tokens: Vec<Tensor<3>> = inputs.iter().map(|x| self.dit.embed(x.clone())).collect();
        let mut x = Tensor::stack::<4>(tokens, 1); // [B, K, T, H]
        let [b, k, t, h] = x.dims();
        let history = self.config().history_layers;
        for (i, block) in self.dit.blocks.iter().enumerate() {
            x = if i < history {
                block.forward(x, c.clone(), Mixing::BlockCausal { steps: k }, context)
            } else {
                // Block-diagonal: fold the steps into the batch.
                block
                    .forward(
                        x.reshape([b * k, 1, t, h]),
                        c.clone().reshape([b * k, 1, h]),
                        Mixing::Full,
                        context,
                    )
                    .reshape([b, k, t, h])
            };
        }
        Ok((x, c))
    }

    /// Head `s` on its step's tokens: `x: [B, K, T, H]`, `c: [B, K, H]` → `[B, C_out, H, W]`.
    pub fn step_output(&self, x: &Tensor<4>, c: &Tensor<3>, s: usize) -> Tensor<4> {
        let [b, _, t, h] = x.dims();
        let xs = x.clone().narrow(1, s, 1).reshape([b, t, h]);
        let cs = c.clone().narrow(1, s, 1).reshape([b, h]);
        self.dit.unpatchify(self.head(s).forward(xs, cs))
    }

    /// Step k at inference: `x: [B, C, H, W]` (the noise, then the previous prediction) and
    /// `ck: [B, 1, H]` through every block, the lower `history_layers` against their caches
    /// (which grow by this step's keys and values) → the prediction `[B, C, H, W]` (f32).
    fn infer_step(
        &self,
        k: usize,
        x: Tensor<4>,
        ck: Tensor<3>,
        context: Option<&TextContext>,
        caches: &mut [KvCache],
    ) -> Tensor<4> {
        let channels = self.dit.config().in_channels;
        let [b, _, h] = ck.dims();
        let tokens = self.dit.embed(x);
        let t = tokens.dims()[1];
        let mut tokens = tokens.reshape([b, 1, t, h]);
        for (i, block) in self.dit.blocks.iter().enumerate() {
            let mixing = match caches.get_mut(i) {
                Some(cache) => Mixing::Cached(cache),
                None => Mixing::Full,
            };
            tokens = block.forward(tokens, ck.clone(), mixing, context);
        }
        let out = self
            .head(k)
            .forward(tokens.reshape([b, t, h]), ck.reshape([b, h]));
        to_f32(self.dit.unpatchify(out).narrow(1, 0, channels))
    }

    /// Autoregressive sampling from `noise: [B, C, H, W]`: one step at a time, only the current
    /// step's tokens go through the network, the lower N blocks keep a key/value cache.
    /// `on_step(k, prediction)` sees each step's prediction `[B, C, H, W]` as soon as it exists.
    pub fn sample(
        &self,
        noise: Tensor<4>,
        cond: impl Into<Cond>,
        mut on_step: impl FnMut(usize, &Tensor<4>),
    ) -> Vec<Tensor<4>> {
        self.sample_until(noise, cond, |k, p| {
            on_step(k, p);
            ControlFlow::Continue(())
        })
    }

    /// [`Self::sample`] that stops after the step where `on_step` breaks, returning the
    /// predictions made so far.
    pub fn sample_until(
        &self,
        noise: Tensor<4>,
        cond: impl Into<Cond>,
        mut on_step: impl FnMut(usize, &Tensor<4>) -> ControlFlow<()>,
    ) -> Vec<Tensor<4>> {
        let (c, context) = self.step_conditions(&cond.into()); // [B, K, H]
        let b = c.dims()[0];
        // Lanes run side by side, each with its own caches (one lane off the CPU).
        let tokens = self.dit.config().num_patches();
        let lanes = crate::dispatch::lanes(&c.device(), noise.dtype(), b, tokens)
            .unwrap_or_else(|| std::iter::once(0..b).collect());
        let mut lanes: Vec<Lane> = lanes
            .into_iter()
            .map(|r| Lane {
                x: noise.clone().narrow(0, r.start, r.len()),
                c: c.clone().narrow(0, r.start, r.len()),
                context: context.as_ref().map(|ctx| ctx.narrow(r)),
                caches: vec![KvCache::default(); self.config().history_layers],
            })
            .collect();
        let mut predictions = Vec::with_capacity(self.steps());
        for k in 0..self.steps() {
            let step = |lane: &mut Lane| {
                let ck = lane.c.clone().narrow(1, k, 1);
                let prediction = self.infer_step(
                    k,
                    lane.x.clone(),
                    ck,
                    lane.context.as_ref(),
                    &mut lane.caches,
                );
                lane.x = prediction.clone();
                prediction
            };
            let prediction = if lanes.len() == 1 {
                step(&mut lanes[0])
            } else {
                use rayon::prelude::*;
                Tensor::cat(lanes.par_iter_mut().map(step).collect(), 0)
            };
            let flow = on_step(k, &prediction);
            predictions.push(prediction);
            if flow.is_break() {
                break;
            }
        }
        predictions
    }
}

/// A part of an inference batch that runs with its own caches: its current input `[b, C, H, W]`,
/// per-step conditioning `[b, K, H]` and prompt context.
struct Lane {
    x: Tensor<4>,
    c: Tensor<3>,
    context: Option<TextContext>,
    caches: Vec<KvCache>,
}

/// A random-weight (not zero-initialised) student of 8×8 grey images, 3 classes, K = 3, N = 1 of
/// 2 blocks (hidden 16, 2 heads), drawn with `seed` on `device`: the unit tests' small student.
#[cfg(test)]
pub(crate) fn random_test_student(seed: u64, device: &burn::tensor::Device) -> ArdStudent {
    use crate::model::{InitOptions, Model, init_teacher};
    let dit = DitConfig::fashion_mnist()
        .with_image(8, 1)
        .with_hidden(16)
        .with_depth(2)
        .with_heads(2)
        .with_classes(3);
    let options = InitOptions {
        seed,
        zero_init: false,
    };
    let Model::Teacher(teacher) = init_teacher(&dit, None, options, device).unwrap().model else {
        unreachable!()
    };
    ArdStudent::from_teacher(teacher, StudentConfig::new(3, 1)).unwrap()
}
