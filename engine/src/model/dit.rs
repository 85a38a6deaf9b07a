//! The DiT teacher (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023;
//! reference `models.py`): class-conditional diffusion transformer predicting epsilon (and
//! sigma), with classifier-free guidance as its `forward_with_cfg`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

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

#[derive(Module, Debug)]
pub struct Dit {
    pub x_embedder: PatchEmbed,
    /// Fixed positions `[1, T, H]` (stored in checkpoints; never trained).
    pub pos_embed: Param<Tensor<3>>,
    pub t_embedder: TimestepEmbedder,
    pub y_embedder: LabelEmbedder,
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
        let y_embedder = LabelEmbedder::load(r, cfg)?;
        let blocks = (0..cfg.depth)
            .map(|i| DitBlock::load(r, &format!("blocks.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            x_embedder,
            pos_embed: pos_embed.set_require_grad(false),
            t_embedder,
            y_embedder,
            blocks,
            final_layer: FinalLayer::load(r, "final_layer", cfg)?,
            config: cfg.clone(),
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        self.x_embedder.save(w);
        w.tensor("pos_embed", &self.pos_embed);
        self.t_embedder.save(w);
        self.y_embedder.save(w);
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

    /// `c = t_embed(t) + y_embed(y)`: `t: [B]`, `y: [B]` → `[B, hidden]`
    pub fn condition(&self, t: &[f32], y: Tensor<1, Int>) -> Tensor<2> {
        self.t_embedder.forward(t, &y.device()) + self.y_embedder.forward(y)
    }

    /// Output tokens → image: `[N, T, p·p·C_out]` → `[N, C_out, H, W]`
    pub fn unpatchify(&self, x: Tensor<3>) -> Tensor<4> {
        let cfg = self.config();
        unpatchify(x, cfg.patch_size, cfg.out_channels())
    }

    /// `x: [B, C, H, W]`, `t: [B]`, `y: [B]` → `[B, C_out, H, W]` (epsilon, then sigma
    /// channels), in f32 whatever the model's precision.
    pub fn forward(&self, x: Tensor<4>, t: &[f32], y: Tensor<1, Int>) -> Tensor<4> {
        let (tokens, c) = self.blocks_forward(x, t, y, |_| {});
        to_f32(self.unpatchify(self.final_layer.forward(tokens, c)))
    }

    /// The tokens after every block, for the adversarial stage's discriminator (the teacher as
    /// a feature extractor): `x: [B, C, H, W]`, `t: [B]`, `y: [B]` → depth × `[B, T, H]` and
    /// the conditioning `c: [B, H]`.
    pub fn block_features(
        &self,
        x: Tensor<4>,
        t: &[f32],
        y: Tensor<1, Int>,
    ) -> (Vec<Tensor<3>>, Tensor<2>) {
        let [b, _, _, _] = x.dims();
        let (t_tok, h) = (self.config.num_patches(), self.config.hidden_size);
        let mut features = Vec::with_capacity(self.blocks.len());
        let (_, c) =
            self.blocks_forward(x, t, y, |f| features.push(f.clone().reshape([b, t_tok, h])));
        (features, c)
    }

    /// Embedding and blocks: `x: [B, C, H, W]`, `t: [B]`, `y: [B]` → the last block's tokens
    /// `[B, T, H]` and the conditioning `[B, H]`; `each` sees every block's tokens
    /// `[B, 1, T, H]`.
    fn blocks_forward(
        &self,
        x: Tensor<4>,
        t: &[f32],
        y: Tensor<1, Int>,
        mut each: impl FnMut(&Tensor<4>),
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, _, _, _] = x.dims();
        let c = self.condition(t, y);
        let tokens = self.embed(x);
        let [_, n_tok, h] = tokens.dims();
        let mut tokens = tokens.reshape([b, 1, n_tok, h]);
        let c3 = c.clone().reshape([b, 1, h]);
        for block in &self.blocks {
            tokens = block.forward(tokens, c3.clone(), Mixing::Full);
            each(&tokens);
        }
        (tokens.reshape([b, n_tok, h]), c)
    }

    /// Classifier-free guidance as the reference `forward_with_cfg`: the batch runs once with
    /// its labels and once with the null class; the first `guided_channels` output channels
    /// become `uncond + scale·(cond − uncond)`, the rest keep the conditional output.
    /// `x: [B, C, H, W]` → `[B, C_out, H, W]`
    pub fn forward_with_cfg(
        &self,
        x: Tensor<4>,
        t: &[f32],
        labels: &[i64],
        scale: f32,
        guided_channels: usize,
    ) -> Tensor<4> {
        let b = labels.len();
        let device = x.device();
        let null = vec![self.y_embedder.null_class(); b];
        // Where the kernels split a batch into lanes (the CPU's), the conditional and
        // unconditional halves run lane by lane side by side; elsewhere as one batch of 2B.
        let lanes = crate::dispatch::lanes(&device, x.dtype(), b, self.config().num_patches());
        let out = if let Some(lanes) = lanes {
            use rayon::prelude::*;
            let work: Vec<(&[i64], std::ops::Range<usize>)> = [labels, &null[..]]
                .into_iter()
                .flat_map(|y| lanes.iter().map(move |r| (y, r.clone())))
                .collect();
            let outs = work
                .into_par_iter()
                .map(|(y, r)| {
                    self.forward(
                        x.clone().narrow(0, r.start, r.len()),
                        &t[r.clone()],
                        labels_to_device(&y[r], &device),
                    )
                })
                .collect();
            Tensor::cat(outs, 0)
        } else {
            let mut y = labels.to_vec();
            y.extend(null);
            let t2: Vec<f32> = t.iter().chain(t.iter()).copied().collect();
            self.forward(
                Tensor::cat(vec![x.clone(), x], 0),
                &t2,
                labels_to_device(&y, &device),
            )
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
