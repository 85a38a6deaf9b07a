//! What a batch is conditioned on — class labels, or prompts as a sentence encoder's token
//! states — and how a text-conditioned DiT reads a prompt: PixArt-α's caption projection
//! (Chen et al., ICLR 2024; an MLP from the encoder's width to the model's) gives the tokens
//! every block cross-attends to, and the pooled prompt embedding, projected, joins the
//! timestep embedding in adaLN (as SD3's pooled text vector, Esser et al. 2024): a small
//! model learns a global condition through adaLN far sooner than through attention alone.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor};

use crate::dispatch::{gelu_tanh, linear};
use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::model::config::{DitConfig, TextConfig};
use crate::model::params::{LinearInit, ParamSource, ParamWriter};
use crate::model::precision::cast_like;

/// Prompts encoded for a batch: token states padded to the longest prompt, the true lengths,
/// and the pooled embeddings.
#[derive(Clone, Debug)]
pub struct PromptBatch {
    /// `[B, L, C]`: each prompt's token states, zeros after its length.
    pub states: Tensor<3>,
    /// Tokens of each prompt (≤ L).
    pub lengths: Vec<usize>,
    /// `[B, C]`: each prompt's mean-pooled embedding.
    pub pooled: Tensor<2>,
}

impl PromptBatch {
    /// Prompts `states[i]: [1, T_i, C]` with `pooled[i]: [1, C]`, padded to the longest.
    pub fn from_prompts(states: &[Tensor<3>], pooled: &[Tensor<2>]) -> Self {
        let longest = states.iter().map(|s| s.dims()[1]).max().unwrap_or(1);
        let padded = states
            .iter()
            .map(|s| pad_tokens(s.clone(), longest))
            .collect();
        Self {
            states: Tensor::cat(padded, 0),
            lengths: states.iter().map(|s| s.dims()[1]).collect(),
            pooled: Tensor::cat(pooled.to_vec(), 0),
        }
    }

    /// The same prompt `n` times.
    pub fn repeat(&self, n: usize) -> Self {
        Self {
            states: self.states.clone().repeat_dim(0, n),
            lengths: self.lengths.repeat(n),
            pooled: self.pooled.clone().repeat_dim(0, n),
        }
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Prompts `range` of the batch.
    pub fn narrow(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            states: self.states.clone().narrow(0, range.start, range.len()),
            lengths: self.lengths[range.clone()].to_vec(),
            pooled: self.pooled.clone().narrow(0, range.start, range.len()),
        }
    }

    /// `a` then `b`, padded to the longer.
    pub fn cat(a: &Self, b: &Self) -> Self {
        let l = a.states.dims()[1].max(b.states.dims()[1]);
        let (sa, sb) = (
            pad_tokens(a.states.clone(), l),
            pad_tokens(b.states.clone(), l),
        );
        Self {
            states: Tensor::cat(vec![sa, sb], 0),
            lengths: [a.lengths.clone(), b.lengths.clone()].concat(),
            pooled: Tensor::cat(vec![a.pooled.clone(), b.pooled.clone()], 0),
        }
    }
}

/// Prompts encoded on the host (a request that any device can run): token states padded to
/// the longest, lengths, pooled embeddings.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPrompts {
    /// `[B, L, C]`
    pub states: HostTensor,
    pub lengths: Vec<usize>,
    /// `[B, C]`
    pub pooled: HostTensor,
}

impl HostPrompts {
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Width of the token states.
    pub fn channels(&self) -> usize {
        self.pooled.shape[1]
    }

    pub fn to_device(&self, device: &Device) -> Result<PromptBatch> {
        Ok(PromptBatch {
            states: self.states.to_device(device)?,
            lengths: self.lengths.clone(),
            pooled: self.pooled.to_device(device)?,
        })
    }

    /// Prompts `idx` of the batch, padded to the longest of them.
    pub fn rows(&self, idx: &[usize]) -> Self {
        let parts: Vec<Self> = idx
            .iter()
            .map(|&i| Self {
                states: self.states.rows(&[i]),
                lengths: vec![self.lengths[i]],
                pooled: self.pooled.rows(&[i]),
            })
            .collect();
        Self::stack(&parts.iter().collect::<Vec<_>>())
    }

    /// The prompts of `parts` in order, token states cut or padded with zeros to the longest
    /// prompt.
    pub fn stack(parts: &[&Self]) -> Self {
        let longest = parts
            .iter()
            .flat_map(|p| p.lengths.iter())
            .copied()
            .max()
            .unwrap_or(1);
        let c = parts.first().map_or(0, |p| p.channels());
        let (mut states, mut lengths, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
        for p in parts {
            let l = p.states.shape[1];
            for (b, &n) in p.lengths.iter().enumerate() {
                let row = &p.states.data[b * l * c..(b + 1) * l * c];
                states.extend_from_slice(&row[..n * c]);
                states.resize(states.len() + (longest - n) * c, 0.0);
                lengths.push(n);
            }
            pooled.extend_from_slice(&p.pooled.data);
        }
        let n = lengths.len();
        Self {
            states: HostTensor::new(vec![n, longest, c], states),
            lengths,
            pooled: HostTensor::new(vec![n, c], pooled),
        }
    }

    /// The same prompt `n` times (`self` holds one).
    pub fn repeat(&self, n: usize) -> Self {
        let rows = |t: &HostTensor| t.rows(&vec![0; n]);
        Self {
            states: rows(&self.states),
            lengths: vec![self.lengths[0]; n],
            pooled: rows(&self.pooled),
        }
    }
}

/// `states: [B, T, C]` with zero tokens appended up to `to` (≥ T).
fn pad_tokens(states: Tensor<3>, to: usize) -> Tensor<3> {
    let [b, t, c] = states.dims();
    if t >= to {
        return states;
    }
    let zeros = cast_like(
        Tensor::<3>::zeros([b, to - t, c], &states.device()),
        &states,
    );
    Tensor::cat(vec![states, zeros], 1)
}

/// What a batch is conditioned on.
// Both variants hold device tensors; a box would only move the size around.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Cond {
    /// `[B]` class labels (the null class for guidance is `num_classes`).
    Labels(Tensor<1, Int>),
    /// Prompts (the empty prompt is the null condition).
    Text(PromptBatch),
}

impl From<Tensor<1, Int>> for Cond {
    fn from(y: Tensor<1, Int>) -> Self {
        Cond::Labels(y)
    }
}

impl From<PromptBatch> for Cond {
    fn from(p: PromptBatch) -> Self {
        Cond::Text(p)
    }
}

impl Cond {
    pub fn len(&self) -> usize {
        match self {
            Cond::Labels(y) => y.dims()[0],
            Cond::Text(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items `range` of the batch.
    pub fn narrow(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Cond::Labels(y) => Cond::Labels(y.clone().narrow(0, range.start, range.len())),
            Cond::Text(p) => Cond::Text(p.narrow(range)),
        }
    }

    /// `a` then `b` (both of one kind).
    pub fn cat(a: &Self, b: &Self) -> Result<Self> {
        match (a, b) {
            (Cond::Labels(x), Cond::Labels(y)) => {
                Ok(Cond::Labels(Tensor::cat(vec![x.clone(), y.clone()], 0)))
            }
            (Cond::Text(x), Cond::Text(y)) => Ok(Cond::Text(PromptBatch::cat(x, y))),
            _ => Err(EngineError::WrongKind(
                "labels and prompts cannot share a batch".into(),
            )),
        }
    }
}

/// The projected prompt tokens the blocks cross-attend to, with each prompt's length.
#[derive(Clone, Debug)]
pub struct TextContext {
    /// `[B, L, H]`
    pub tokens: Tensor<3>,
    /// Real tokens of each prompt; `None` when every prompt fills all L.
    pub lengths: Option<Vec<usize>>,
}

impl TextContext {
    /// Items `range` of the batch.
    pub fn narrow(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            tokens: self.tokens.clone().narrow(0, range.start, range.len()),
            lengths: self.lengths.as_ref().map(|l| l[range].to_vec()),
        }
    }
}

/// Prompt → the model's width: PixArt-α's caption projection (`y_proj`: linear, GELU-tanh,
/// linear) of the token states, and a linear projection of the pooled embedding.
#[derive(Module, Debug)]
pub struct TextEmbedder {
    pub fc1: Linear,
    pub fc2: Linear,
    pub pooled: Linear,
    pub max_tokens: usize,
}

impl TextEmbedder {
    pub fn load(r: &mut ParamSource, cfg: &DitConfig, text: &TextConfig) -> Result<Self> {
        let (c, h) = (text.caption_channels, cfg.hidden_size);
        Ok(Self {
            // PixArt-α draws the caption projection from N(0, 0.02²).
            fc1: r.linear("y_embedder.y_proj.fc1", c, h, LinearInit::Normal(0.02))?,
            fc2: r.linear("y_embedder.y_proj.fc2", h, h, LinearInit::Normal(0.02))?,
            pooled: r.linear("y_embedder.pooled_proj", c, h, LinearInit::Xavier)?,
            max_tokens: text.max_tokens,
        })
    }

    pub fn save(&self, w: &mut ParamWriter) {
        w.linear("y_embedder.y_proj.fc1", &self.fc1);
        w.linear("y_embedder.y_proj.fc2", &self.fc2);
        w.linear("y_embedder.pooled_proj", &self.pooled);
    }

    /// `prompts` → the blocks' context `[B, L', H]` (cut to `max_tokens`) and the pooled
    /// condition `[B, H]` that joins the timestep embedding.
    pub fn forward(&self, prompts: &PromptBatch) -> (TextContext, Tensor<2>) {
        let [_, l, _] = prompts.states.dims();
        let keep = l.min(self.max_tokens);
        let states = cast_like(
            prompts.states.clone().narrow(1, 0, keep),
            &self.fc1.weight.val(),
        );
        let tokens = linear(&self.fc2, gelu_tanh(linear(&self.fc1, states)));
        let lengths: Vec<usize> = prompts.lengths.iter().map(|&n| n.min(keep)).collect();
        let full = lengths.iter().all(|&n| n == keep);
        let context = TextContext {
            tokens,
            lengths: (!full).then_some(lengths),
        };
        let pooled = cast_like(prompts.pooled.clone(), &self.pooled.weight.val());
        (context, linear(&self.pooled, pooled))
    }
}
