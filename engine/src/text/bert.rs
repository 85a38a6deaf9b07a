//! BERT's encoder (Devlin et al. 2019) in the layout of `transformers`' `BertModel`: word,
//! position and token-type embeddings, then post-LayerNorm layers of self-attention and a GELU
//! MLP. all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, Sentence-BERT) is
//! a 6-layer one whose sentence embedding is the mean of its token states.

use burn::nn::Linear;
use burn::tensor::activation::gelu;
use burn::tensor::module::layer_norm;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::dispatch::{attention, linear};
use crate::error::{EngineError, Result};
use crate::model::params::{Init, LinearInit, ParamSource};
use crate::ops::AttentionMask;
use crate::text::config::BertConfig;

/// LayerNorm with its gain and bias (`weight`, `bias`).
#[derive(Clone, Debug)]
struct AffineLayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
}

impl AffineLayerNorm {
    fn load(r: &mut ParamSource, prefix: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: r
                .param(&format!("{prefix}.weight"), [width], Init::Ones)?
                .val(),
            beta: r
                .param(&format!("{prefix}.bias"), [width], Init::Zeros)?
                .val(),
            eps,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps)
    }
}

/// Word + position + token-type (all type 0) embeddings, then LayerNorm.
#[derive(Clone, Debug)]
struct Embeddings {
    word: Tensor<2>,
    position: Tensor<2>,
    token_type: Tensor<2>,
    norm: AffineLayerNorm,
}

impl Embeddings {
    fn load(r: &mut ParamSource, c: &BertConfig) -> Result<Self> {
        let normal = Init::Normal(0.02);
        let h = c.hidden_size;
        Ok(Self {
            word: r
                .param(
                    "embeddings.word_embeddings.weight",
                    [c.vocab_size, h],
                    normal,
                )?
                .val(),
            position: r
                .param(
                    "embeddings.position_embeddings.weight",
                    [c.max_position_embeddings, h],
                    normal,
                )?
                .val(),
            token_type: r
                .param(
                    "embeddings.token_type_embeddings.weight",
                    [c.type_vocab_size, h],
                    normal,
                )?
                .val(),
            norm: AffineLayerNorm::load(r, "embeddings.LayerNorm", h, c.layer_norm_eps)?,
        })
    }

    /// `ids: [T]` → `[1, T, H]`
    fn forward(&self, ids: Tensor<1, Int>) -> Tensor<3> {
        let t = ids.dims()[0];
        let h = self.word.dims()[1];
        let x = self.word.clone().select(0, ids)
            + self.position.clone().narrow(0, 0, t)
            + self.token_type.clone().narrow(0, 0, 1);
        self.norm.forward(x.reshape([1, t, h]))
    }
}

/// One post-LayerNorm layer: `x = LN(x + attn(x))`, `x = LN(x + mlp(x))`.
#[derive(Clone, Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: AffineLayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: AffineLayerNorm,
    num_heads: usize,
}

impl Layer {
    fn load(r: &mut ParamSource, prefix: &str, c: &BertConfig) -> Result<Self> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let mut lin = |name: &str, d_in, d_out| {
            r.linear(
                &format!("{prefix}.{name}"),
                d_in,
                d_out,
                LinearInit::Normal(0.02),
            )
        };
        let query = lin("attention.self.query", h, h)?;
        let key = lin("attention.self.key", h, h)?;
        let value = lin("attention.self.value", h, h)?;
        let attention_out = lin("attention.output.dense", h, h)?;
        let intermediate = lin("intermediate.dense", h, i)?;
        let output = lin("output.dense", i, h)?;
        Ok(Self {
            query,
            key,
            value,
            attention_out,
            attention_norm: AffineLayerNorm::load(
                r,
                &format!("{prefix}.attention.output.LayerNorm"),
                h,
                eps,
            )?,
            intermediate,
            output,
            output_norm: AffineLayerNorm::load(r, &format!("{prefix}.output.LayerNorm"), h, eps)?,
            num_heads: c.num_attention_heads,
        })
    }

    /// `x: [B, T, H]` → `[B, T, H]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let (nh, hd) = (self.num_heads, h / self.num_heads);
        let heads = |l: &Linear| linear(l, x.clone()).reshape([b, t, nh, hd]).swap_dims(1, 2);
        let mixed = attention(
            heads(&self.query),
            heads(&self.key),
            heads(&self.value),
            AttentionMask::None,
        )
        .swap_dims(1, 2)
        .reshape([b, t, h]);
        let x = self
            .attention_norm
            .forward(x + linear(&self.attention_out, mixed));
        let mlp = linear(&self.output, gelu(linear(&self.intermediate, x.clone())));
        self.output_norm.forward(x + mlp)
    }
}

/// BERT's encoder: token ids in, one state per token out.
#[derive(Clone, Debug)]
pub struct Bert {
    pub config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    device: Device,
}

impl Bert {
    /// Reads every parameter of `config` from `r` (`transformers`' key names, without a
    /// `bert.` prefix).
    pub fn load(r: &mut ParamSource, config: &BertConfig) -> Result<Self> {
        config.validate()?;
        let embeddings = Embeddings::load(r, config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|l| Layer::load(r, &format!("encoder.layer.{l}"), config))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            embeddings,
            layers,
            device: r.device().clone(),
        })
    }

    /// The token states of one sequence: `ids: [T]` → `[1, T, H]`. Refuses ids outside the
    /// vocabulary and sequences longer than the position table.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor<3>> {
        let c = &self.config;
        if ids.is_empty() || ids.len() > c.max_position_embeddings {
            return Err(EngineError::InvalidSetting(format!(
                "{} tokens: the text encoder takes 1 to {}",
                ids.len(),
                c.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(EngineError::InvalidSetting(format!(
                "token id {bad} is outside the vocabulary of {} (tokenizer and weights disagree)",
                c.vocab_size
            )));
        }
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let ids =
            Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &self.device);
        let mut x = self.embeddings.forward(ids);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        Ok(x)
    }
}

/// Sentence-BERT's mean pooling over the tokens: `states: [1, T, H]` → `[1, H]`.
pub fn mean_pool(states: Tensor<3>) -> Tensor<2> {
    states.mean_dim(1).squeeze_dim(1)
}
