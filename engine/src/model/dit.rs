//! The DiT teacher (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023;
//! reference `models.py`): class-conditional diffusion transformer predicting epsilon (and
//! sigma), with classifier-free guidance as its `forward_with_cfg`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::io::host::labels_to_device;
use crate::model::attention::Mixing;
use crate::model::block::DitBlock;
use crate::model::config::DitConfig;
use crate::model::embedding::{
    LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_pos_embed_2d, unpatchify,
};
use crate::model::final_layer::FinalLayer;
use crate::model::params::{Init, ParamSource, ParamWriter};
use crate::model::precision::{cast_like, to_f32};
use crate::model::text_condition::{Cond, TextContext, TextEmbedder};

#[derive(Module, Debug)]
pub struct Dit {
    pub x_embedder: PatchEmbed,
    /// Fixed positions `[1, T, H]` (stored in checkpoints; never trained).
    pub pos_embed: Param<Tensor<3>>,
    pub t_embedder: TimestepEmbedder,
    /// Class-conditional models: the label table.
    pub y_embedder: Option<LabelEmbedder>,
    /// Text-conditioned models: the prompt's projections.
    pub text_embedder: Option<TextEmbedder>,
    pub blocks: Vec<DitBlock>,
    pub final_layer: FinalLayer,
    #[module(skip)]
    pub config: DitConfig,
}

impl Dit {
    /// Every teacher tensor under its reference name, read from a file or freshly initialised
    /// (in this order: the fresh weights of a seed depend on it).
    pub fn load(r: &mut ParamSource, cfg: &DitConfig) -> Result<Self> {
        cfg.validate()?;
        let (t, h) = (cfg.num_patches(), cfg.hidden_size);
        let x_embedder = PatchEmbed::load(r, cfg)?;
        let pos_embed = if r.contains("pos_embed") {
            r.param("pos_embed", [1, t, h], Init::Zeros)?
        } else {
            let table = TensorData::new(sincos_pos_embed_2d(h, cfg.grid_size()), [1, t, h]);
            Param::from_tensor(Tensor::from_data(table, r.device()))
        };
        let t_embedder = TimestepEmbedder::load(r, cfg)?;
        let (y_embedder, text_embedder) = match &cfg.text {
            None => (Some(LabelEmbedder::load(r, cfg)?), None),
            Some(text) => (None, Some(TextEmbedder::load(r, cfg, text)?)),
        };
        let blocks = (0..cfg.depth)
            .map(|i| DitBlock::load(r, &format!("blocks.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            x_embedder,
            pos_embed: pos_embed.set_require_grad(false),
            t_embedder,
            y_embedder,
            text_embedder,
            blocks,
            final_layer: FinalLayer::load(r, "final_layer", cfg)?,
            config: cfg.clone(),
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        self.x_embedder.save(w);
        w.tensor("pos_embed", &self.pos_embed);
        self.t_embedder.save(w);
        if let Some(y) = &self.y_embedder {
            y.save(w);
        }
        if let Some(text) = &self.text_embedder {
            text.save(w);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            b.save(w, &format!("blocks.{i}"));
        }
        self.final_layer.save(w, "final_layer");
    }

    pub fn config(&self) -> &DitConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.pos_embed.val().device()
    }

    /// Patch embedding plus positions: `[N, C, H, W]` → `[N, T, hidden]`
    pub fn embed(&self, x: Tensor<4>) -> Tensor<3> {
        let pos = self.pos_embed.val();
        self.x_embedder.forward(cast_like(x, &pos)) + pos
    }

    /// `c = t_embed(t) + y_embed(y)` (or `+ pooled_proj(prompt)`): `t: [B]`, `cond`: B labels
    /// or prompts → `[B, hidden]`, and the prompts' context for the blocks.
    pub fn condition(&self, t: &[f32], cond: &Cond) -> (Tensor<2>, Option<TextContext>) {
        let (extra, context) = self.embed_condition(cond);
        (self.t_embedder.forward(t, &extra.device()) + extra, context)
    }

    /// The condition's part of adaLN's input `[B, H]` (the label's row, or the projected
    /// pooled prompt) and, for prompts, the blocks' context. Panics when `cond` is not the
    /// model's kind (callers check it: `LoadedModel::check_condition`).
    pub fn embed_condition(&self, cond: &Cond) -> (Tensor<2>, Option<TextContext>) {
        match (cond, &self.y_embedder, &self.text_embedder) {
            (Cond::Labels(y), Some(table), _) => (table.forward(y.clone()), None),
            (Cond::Text(prompts), _, Some(text)) => {
                let (context, pooled) = text.forward(prompts);
                (pooled, Some(context))
            }
            (Cond::Labels(_), ..) => panic!("a text-conditioned model takes prompts, not labels"),
            (Cond::Text(_), ..) => panic!("a class-conditional model takes labels, not prompts"),
        }
    }

    /// The class used for the unconditional half of guidance (class models only).
    pub fn null_class(&self) -> Option<i64> {
        self.y_embedder.as_ref().map(LabelEmbedder::null_class)
    }

    pub fn unpatchify(&self, x: Tensor<3>) -> Tensor<4> {
        let cfg = self.config();
        unpatchify(x, cfg.patch_size, cfg.out_channels())
    }

    /// `x: [B, C, H, W]`, `t: [B]`, `cond`: B labels or prompts → `[B, C_out, H, W]` (epsilon,
    /// then sigma channels), in f32 whatever the model's precision.
    pub fn forward(&self, x: Tensor<4>, t: &[f32], cond: impl Into<Cond>) -> Tensor<4> {
        let (tokens, c) = self.blocks_forward(x, t, &cond.into(), |_| {});
        to_f32(self.unpatchify(self.final_layer.forward(tokens, c)))
    }

    /// The tokens after every block, for the adversarial stage's discriminator (the teacher as
    /// a feature extractor): `x: [B, C, H, W]`, `t: [B]`, `cond`: B labels or prompts →
    /// depth × `[B, T, H]` and the conditioning `c: [B, H]`.
    pub fn block_features(
        &self,
        x: Tensor<4>,
        t: &[f32],
        cond: impl Into<Cond>,
    ) -> (Vec<Tensor<3>>, Tensor<2>) {
        let [b, _, _, _] = x.dims();
        let (t_tok, h) = (self.config.num_patches(), self.config.hidden_size);
        let mut features = Vec::with_capacity(self.blocks.len());
        let (_, c) = self.blocks_forward(x, t, &cond.into(), |f| {
            features.push(f.clone().reshape([b, t_tok, h]))
        });
        (features, c)
    }

    /// Embedding and blocks: `x: [B, C, H, W]`, `t: [B]`, `cond` → the last block's tokens
    /// `[B, T, H]` and the conditioning `[B, H]`; `each` sees every block's tokens
    /// `[B, 1, T, H]`.
    fn blocks_forward(
        &self,
        x: Tensor<4>,
        t: &[f32],
        cond: &Cond,
        mut each: impl FnMut(&Tensor<4>),
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, _, _, _] = x.dims();
        let (c, context) = self.condition(t, cond);
        let tokens = self.embed(x);
        let [_, n_tok, h] = tokens.dims();
        let mut tokens = tokens.reshape([b, 1, n_tok, h]);
        let c3 = c.clone().reshape([b, 1, h]);
        for block in &self.blocks {
            tokens = block.forward(tokens, c3.clone(), Mixing::Full, context.as_ref());
            each(&tokens);
        }
        (tokens.reshape([b, n_tok, h]), c)
    }

    /// Classifier-free guidance as the reference `forward_with_cfg`, for a class model: the
    /// batch runs once with its labels and once with the null class ([`Self::forward_guided`]).
    /// `x: [B, C, H, W]` → `[B, C_out, H, W]`
    pub fn forward_with_cfg(
        &self,
        x: Tensor<4>,
        t: &[f32],
        labels: &[i64],
        scale: f32,
        guided_channels: usize,
    ) -> Tensor<4> {
        let device = x.device();
        let null_class = self
            .null_class()
            .expect("labels guide a class-conditional model");
        let null = vec![null_class; labels.len()];
        let cond = Cond::Labels(labels_to_device(labels, &device));
        let null = Cond::Labels(labels_to_device(&null, &device));
        self.forward_guided(x, t, &cond, &null, scale, guided_channels)
    }

    /// Classifier-free guidance: the batch runs once with `cond` and once with `null` (the
    /// null class, or the empty prompt); the first `guided_channels` output channels become
    /// `uncond + scale·(cond − uncond)`, the rest keep the conditional output.
    /// `x: [B, C, H, W]` → `[B, C_out, H, W]`
    pub fn forward_guided(
        &self,
        x: Tensor<4>,
        t: &[f32],
        cond: &Cond,
        null: &Cond,
        scale: f32,
        guided_channels: usize,
    ) -> Tensor<4> {
        let b = cond.len();
        let device = x.device();
        // Where the kernels split a batch into lanes (the CPU's), the conditional and
        // unconditional halves run lane by lane side by side; elsewhere as one batch of 2B.
        let lanes = crate::dispatch::lanes(&device, x.dtype(), b, self.config().num_patches());
        let out = if let Some(lanes) = lanes {
            use rayon::prelude::*;
            let work: Vec<(&Cond, std::ops::Range<usize>)> = [cond, null]
                .into_iter()
                .flat_map(|y| lanes.iter().map(move |r| (y, r.clone())))
                .collect();
            let outs = work
                .into_par_iter()
                .map(|(y, r)| {
                    self.forward(
                        x.clone().narrow(0, r.start, r.len()),
                        &t[r.clone()],
                        y.narrow(r),
                    )
                })
                .collect();
            Tensor::cat(outs, 0)
        } else {
            let both = Cond::cat(cond, null).expect("the null condition is of the model's kind");
            let t2: Vec<f32> = t.iter().chain(t.iter()).copied().collect();
            self.forward(Tensor::cat(vec![x.clone(), x], 0), &t2, both)
        };
        let [_, c_out, _, _] = out.dims();
        let g = guided_channels.min(c_out);
        let cond = out.clone().narrow(0, 0, b);
        let uncond_g = out.narrow(0, b, b).narrow(1, 0, g);
        let guided = uncond_g.clone() + (cond.clone().narrow(1, 0, g) - uncond_g) * scale;
        if g == c_out {
            guided
        } else {
            Tensor::cat(vec![guided, cond.narrow(1, g, c_out - g)], 1)
        }
    }
}
