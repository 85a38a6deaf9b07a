//! Architecture configurations — DiT's (Peebles & Xie, ICCV 2023, reference `models.py`) and the
//! ARD student's extra structure (Kim et al., CVPR 2025) — with the named presets, stored as
//! JSON in a weight file's safetensors header.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;
use crate::io::writer::SafetensorsWriter;

/// DiT architecture (Peebles & Xie), as in the reference `models.py`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    /// Side of the (square) input, in pixels or latent cells.
    pub input_size: usize,
    pub patch_size: usize,
    pub in_channels: usize,
    pub hidden_size: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// Width of each block's MLP (`int(hidden_size * mlp_ratio)`).
    pub mlp_hidden: usize,
    pub num_classes: usize,
    /// Predict a variance as well as epsilon (doubles the output channels).
    pub learn_sigma: bool,
    /// Width of the sinusoidal timestep features fed to the timestep MLP.
    #[serde(default = "default_frequency_embedding_size")]
    pub frequency_embedding_size: usize,
    /// A text-conditioned model (every block cross-attends to the prompt's token states);
    /// `None`: class labels (`num_classes` of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
}

/// What a text-conditioned DiT reads of a prompt: the token states of a sentence encoder,
/// cut to `max_tokens`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// The encoder the model was trained with (its name: `all-MiniLM-L6-v2`).
    pub encoder: String,
    /// Width of the encoder's token states.
    pub caption_channels: usize,
    /// Tokens of a prompt the model reads, `[CLS]` and `[SEP]` included.
    pub max_tokens: usize,
}

/// Prompt tokens a text-conditioned DiT reads by default: CLDR names and keyword lists fit.
pub const TEXT_MAX_TOKENS: usize = 32;

impl TextConfig {
    /// all-MiniLM-L6-v2's token states (width 384), [`TEXT_MAX_TOKENS`] of them.
    pub fn minilm() -> Self {
        Self {
            encoder: "all-MiniLM-L6-v2".into(),
            caption_channels: 384,
            max_tokens: TEXT_MAX_TOKENS,
        }
    }
}

/// DiT's MLP width over the hidden width.
pub const MLP_RATIO: usize = 4;
/// DiT's sinusoidal timestep features.
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

fn default_frequency_embedding_size() -> usize {
    FREQUENCY_EMBEDDING_SIZE
}

impl DitConfig {
    /// ARD Studio's default teacher: 28×28 grey Fashion-MNIST images, patch 4 (49 tokens),
    /// hidden 64, depth 4, 4 heads, 10 classes, epsilon only (0.33 M parameters).
    pub fn fashion_mnist() -> Self {
        Self {
            input_size: 28,
            patch_size: 4,
            in_channels: 1,
            hidden_size: 64,
            depth: 4,
            num_heads: 4,
            mlp_hidden: 64 * MLP_RATIO,
            num_classes: 10,
            learn_sigma: false,
            frequency_embedding_size: FREQUENCY_EMBEDDING_SIZE,
            text: None,
        }
    }

    /// ARD Studio's text-to-image teacher: 32×32 RGB emoji, patch 4 (64 tokens), hidden 96,
    /// depth 6, 4 heads, each block cross-attending to MiniLM's token states.
    pub fn emoji_text() -> Self {
        Self {
            input_size: 32,
            patch_size: 4,
            in_channels: 3,
            hidden_size: 96,
            depth: 6,
            num_heads: 4,
            mlp_hidden: 96 * MLP_RATIO,
            num_classes: 0,
            learn_sigma: false,
            frequency_embedding_size: FREQUENCY_EMBEDDING_SIZE,
            text: Some(TextConfig::minilm()),
        }
    }

    /// DiT-S/2 on 256×256 ImageNet (4×32×32 SD-VAE latents): hidden 384, depth 12, 6 heads.
    pub fn dit_s_2() -> Self {
        Self::imagenet_256(384, 12, 6)
    }

    /// DiT-B/2 on 256×256 ImageNet: hidden 768, depth 12, 12 heads.
    pub fn dit_b_2() -> Self {
        Self::imagenet_256(768, 12, 12)
    }

    /// DiT-L/2 on 256×256 ImageNet: hidden 1024, depth 24, 16 heads.
    pub fn dit_l_2() -> Self {
        Self::imagenet_256(1024, 24, 16)
    }

    /// DiT-XL/2 on 256×256 ImageNet: hidden 1152, depth 28, 16 heads (the paper's teacher).
    pub fn dit_xl_2() -> Self {
        Self::imagenet_256(1152, 28, 16)
    }

    /// The head count of DiT's published sizes (S, B, L, XL, at any patch size and resolution)
    /// by hidden width and depth, with the size's name: what the official checkpoints' shapes
    /// cannot say themselves.
    pub fn official_heads(hidden_size: usize, depth: usize) -> Option<(&'static str, usize)> {
        match (hidden_size, depth) {
            (384, 12) => Some(("DiT-S", 6)),
            (768, 12) => Some(("DiT-B", 12)),
            (1024, 24) => Some(("DiT-L", 16)),
            (1152, 28) => Some(("DiT-XL", 16)),
            _ => None,
        }
    }

    /// DiT's ImageNet-256 models: patch 2 on 4×32×32 latents, 1000 classes, learned sigma.
    fn imagenet_256(hidden_size: usize, depth: usize, num_heads: usize) -> Self {
        Self {
            input_size: 32,
            patch_size: 2,
            in_channels: 4,
            hidden_size,
            depth,
            num_heads,
            mlp_hidden: hidden_size * MLP_RATIO,
            num_classes: 1000,
            learn_sigma: true,
            frequency_embedding_size: FREQUENCY_EMBEDDING_SIZE,
            text: None,
        }
    }

    /// The same architecture on `size`×`size` images of `channels` channels.
    pub fn with_image(mut self, size: usize, channels: usize) -> Self {
        self.input_size = size;
        self.in_channels = channels;
        self
    }

    pub fn with_patch(mut self, patch_size: usize) -> Self {
        self.patch_size = patch_size;
        self
    }

    /// Hidden width; the MLP keeps DiT's ratio of 4.
    pub fn with_hidden(mut self, hidden_size: usize) -> Self {
        self.hidden_size = hidden_size;
        self.mlp_hidden = hidden_size * MLP_RATIO;
        self
    }

    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    pub fn with_heads(mut self, num_heads: usize) -> Self {
        self.num_heads = num_heads;
        self
    }

    pub fn with_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Conditioned on `text` instead of class labels.
    pub fn with_text(mut self, text: TextConfig) -> Self {
        self.text = Some(text);
        self.num_classes = 0;
        self
    }

    pub fn is_text(&self) -> bool {
        self.text.is_some()
    }

    pub fn with_learn_sigma(mut self, learn_sigma: bool) -> Self {
        self.learn_sigma = learn_sigma;
        self
    }

    /// One image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.in_channels, self.input_size, self.input_size]
    }

    /// A batch of `n` images, `[n, C, H, W]`.
    pub fn batch_shape(&self, n: usize) -> Vec<usize> {
        vec![n, self.in_channels, self.input_size, self.input_size]
    }

    /// Output channels classifier-free guidance applies to by default: the first 3, as the
    /// reference DiT's `forward_with_cfg` does (all of them for images of fewer channels); the
    /// rest (learned sigma, a 4th latent channel) keep the conditional output.
    pub fn guided_channels(&self) -> usize {
        self.in_channels.min(3)
    }

    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            self.in_channels * 2
        } else {
            self.in_channels
        }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Tokens per image.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(EngineError::Config(m));
        if self.input_size == 0 || self.patch_size == 0 || self.in_channels == 0 {
            return fail("input size, patch size and channels must be positive".into());
        }
        if !self.input_size.is_multiple_of(self.patch_size) {
            return fail(format!(
                "input size {} is not a multiple of patch size {}",
                self.input_size, self.patch_size
            ));
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return fail(format!(
                "hidden size {} is not divisible into {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.hidden_size.is_multiple_of(4) {
            return fail(format!(
                "hidden size {} must be a multiple of 4 (2-D sin-cos positions)",
                self.hidden_size
            ));
        }
        if self.depth == 0 || self.mlp_hidden == 0 {
            return fail("depth and MLP width must be positive".into());
        }
        match &self.text {
            None if self.num_classes == 0 => {
                return fail("a class-conditional model needs at least one class".into());
            }
            Some(_) if self.num_classes != 0 => {
                return fail("a text-conditioned model has no classes".into());
            }
            Some(t) if t.caption_channels == 0 || t.max_tokens < 2 => {
                return fail("text conditioning needs token states of at least 2 tokens".into());
            }
            _ => {}
        }
        if self.frequency_embedding_size < 2 {
            return fail("frequency embedding size must be at least 2".into());
        }
        Ok(())
    }
}

/// The ARD student's extra structure on top of its teacher's architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentConfig {
    /// Student steps K (one output head each).
    pub steps: usize,
    /// Lower blocks that see the trajectory history through the block-causal mask (N).
    pub history_layers: usize,
    /// Time marker of each step, fed to the timestep embedder per token.
    pub time_markers: Vec<f64>,
    /// Respaced teacher index each step's output stands for (`infer_z{anchor}`); the last is 0.
    pub anchors: Vec<usize>,
    /// Respaced teacher steps the anchors index into.
    #[serde(default = "default_teacher_steps")]
    pub teacher_steps: usize,
    /// Fine-tuned with the adversarial stage (`ard finetune-gan`) after distillation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adversarial: bool,
}

fn default_teacher_steps() -> usize {
    DDIM_STEPS
}

/// The paper's teacher sampler: 25 DDIM steps respaced from the 1000 training steps (the
/// trajectories a student's anchors index, and `diffusion::DdimOptions`' default).
pub const DDIM_STEPS: usize = 25;

/// The reference student's time marker of step 0 (`t = 999`; step k gets `t·(K−k)/K`).
pub const REFERENCE_TIME_MARKER: f64 = 999.0;

impl StudentConfig {
    /// The reference defaults: markers `t·(K−k)/K` with t = 999, anchors on a 25-step teacher
    /// spaced `25·(K−1−k)/(K+1)` (15, 10, 5, 0 for K = 4).
    pub fn new(steps: usize, history_layers: usize) -> Self {
        Self {
            steps,
            history_layers,
            time_markers: default_time_markers(steps, REFERENCE_TIME_MARKER),
            anchors: default_anchors(steps, DDIM_STEPS),
            teacher_steps: DDIM_STEPS,
            adversarial: false,
        }
    }

    pub fn validate(&self, dit: &DitConfig) -> Result<()> {
        let fail = |m: String| Err(EngineError::Config(m));
        if self.steps == 0 {
            return fail("a student needs at least one step".into());
        }
        if self.history_layers > dit.depth {
            return fail(format!(
                "history layers N = {} exceeds the depth {}",
                self.history_layers, dit.depth
            ));
        }
        if self.time_markers.len() != self.steps || self.anchors.len() != self.steps {
            return fail(format!(
                "{} steps need {} time markers and anchors (got {} and {})",
                self.steps,
                self.steps,
                self.time_markers.len(),
                self.anchors.len()
            ));
        }
        Ok(())
    }

    /// Names of the per-step outputs, as in the reference vectors (`infer_z15` … `infer_z0`).
    pub fn output_names(&self, prefix: &str) -> Vec<String> {
        self.anchors
            .iter()
            .map(|a| format!("{prefix}_z{a}"))
            .collect()
    }
}

/// `t·(K−k)/K` for k = 0..K: the reference student's per-step time markers.
pub fn default_time_markers(steps: usize, t: f64) -> Vec<f64> {
    (0..steps)
        .map(|k| t * (steps - k) as f64 / steps as f64)
        .collect()
}

/// Respaced teacher indices of the targets: `S·(K−1−k)/(K+1)`, rounded (15, 10, 5, 0 for K = 4).
pub fn default_anchors(steps: usize, teacher_steps: usize) -> Vec<usize> {
    (0..steps)
        .map(|k| {
            let v = teacher_steps as f64 * (steps - 1 - k) as f64 / (steps + 1) as f64;
            v.round() as usize
        })
        .collect()
}

/// What a weight file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Teacher,
    Student,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Teacher => "teacher",
            ModelKind::Student => "student",
        })
    }
}

/// Self-description of a model: written into the safetensors header of every file we save.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub kind: ModelKind,
    pub dit: DitConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<StudentConfig>,
    /// Class names in label order, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// Pixel-space model with images in [−1, 1]: sampling clamps x0 predictions to that range.
    #[serde(default)]
    pub clip_denoised: bool,
}

/// Header key of a safetensors file holding its [`ModelMeta`] as JSON.
pub const META_KEY: &str = "ard_studio";

impl ModelMeta {
    /// The description `file` carries, if any.
    pub fn read(file: &TensorFile) -> Result<Option<Self>> {
        file.header_json(META_KEY)
    }

    /// Stores this description in the header `w` writes (its one metadata key).
    pub fn write_to(&self, w: &mut SafetensorsWriter) {
        w.set_metadata(
            META_KEY,
            serde_json::to_string(self).expect("metadata serialises"),
        );
    }

    /// A pixel-space teacher (its x0 predictions clamped to [−1, 1]) with these class names.
    pub fn pixel_teacher(dit: DitConfig, class_names: Option<Vec<String>>) -> Self {
        Self {
            kind: ModelKind::Teacher,
            dit,
            student: None,
            class_names,
            clip_denoised: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_markers_and_anchors() {
        assert_eq!(
            default_time_markers(4, 999.0),
            vec![999.0, 749.25, 499.5, 249.75]
        );
        assert_eq!(default_anchors(4, 25), vec![15, 10, 5, 0]);
        assert_eq!(default_anchors(1, 25), vec![0]);
    }

    #[test]
    fn official_sizes_name_their_heads() {
        for (preset, name) in [
            (DitConfig::dit_s_2(), "DiT-S"),
            (DitConfig::dit_b_2(), "DiT-B"),
            (DitConfig::dit_l_2(), "DiT-L"),
            (DitConfig::dit_xl_2(), "DiT-XL"),
        ] {
            let found = DitConfig::official_heads(preset.hidden_size, preset.depth);
            assert_eq!(found, Some((name, preset.num_heads)));
        }
        assert_eq!(DitConfig::official_heads(64, 4), None);
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        let mut c = DitConfig::dit_s_2()
            .with_patch(3)
            .with_hidden(64)
            .with_depth(2)
            .with_heads(4);
        assert!(c.validate().is_err());
        c.patch_size = 2;
        c.num_heads = 5;
        assert!(c.validate().is_err());
        c.num_heads = 4;
        assert!(c.validate().is_ok());
    }
}
