//! Architecture configurations, stored as JSON in a weight file's safetensors header.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

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
}

fn default_frequency_embedding_size() -> usize {
    256
}

impl DitConfig {
    /// A config with DiT's defaults (mlp_ratio 4, 256 timestep frequencies).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input_size: usize,
        patch_size: usize,
        in_channels: usize,
        hidden_size: usize,
        depth: usize,
        num_heads: usize,
        num_classes: usize,
        learn_sigma: bool,
    ) -> Self {
        Self {
            input_size,
            patch_size,
            in_channels,
            hidden_size,
            depth,
            num_heads,
            mlp_hidden: hidden_size * 4,
            num_classes,
            learn_sigma,
            frequency_embedding_size: 256,
        }
    }

    /// DiT-XL/2 on 256x256 ImageNet (4x32x32 SD-VAE latents).
    pub fn dit_xl_2() -> Self {
        Self::new(32, 2, 4, 1152, 28, 16, 1000, true)
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

    /// Values of one patch going in (`C*p*p`).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.patch_size * self.patch_size
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
        if self.depth == 0 || self.num_classes == 0 || self.mlp_hidden == 0 {
            return fail("depth, classes and MLP width must be positive".into());
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
}

fn default_teacher_steps() -> usize {
    25
}

impl StudentConfig {
    /// The reference defaults: markers `t·(K−k)/K` with t = 999, anchors on a 25-step teacher
    /// spaced `25·(K−1−k)/(K+1)` (15, 10, 5, 0 for K = 4).
    pub fn new(steps: usize, history_layers: usize) -> Self {
        Self {
            steps,
            history_layers,
            time_markers: default_time_markers(steps, 999.0),
            anchors: default_anchors(steps, 25),
            teacher_steps: 25,
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
    fn validate_rejects_bad_shapes() {
        let mut c = DitConfig::new(32, 3, 4, 64, 2, 4, 10, true);
        assert!(c.validate().is_err());
        c.patch_size = 2;
        c.num_heads = 5;
        assert!(c.validate().is_err());
        c.num_heads = 4;
        assert!(c.validate().is_ok());
    }
}
