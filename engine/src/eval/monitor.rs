//! Evaluation during training: every few thousand iterations, FID and class agreement of the
//! EMA weights and of the raw (live) weights, on a fixed set of class-balanced noises, in the
//! feature network's space, so that convergence and the gap between two students show while a
//! run goes on. The points go to `eval.jsonl` in the run directory (rewritten atomically: a
//! resumed run drops the points past its checkpoint and computes them again).

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::datasets::Split;
use crate::data::open::load_dataset;
use crate::diffusion::ddim::DdimOptions;
use crate::error::{EngineError, Result};
use crate::eval::feature_net::{FeatureNet, accuracy, features_and_logits};
use crate::eval::metrics::{frechet_distance, generate_samples};
use crate::io::host::HostTensor;
use crate::io::writer::write_atomically;
use crate::model::config::ModelMeta;
use crate::model::loaded::LoadedModel;

/// Evaluation point (FID, class agreement of the EMA and raw weights) every this many
/// iterations, when a run evaluates as it goes.
pub const EVAL_EVERY: u64 = 1000;
/// Samples per model and evaluation point during training (FID's bias at this count is large
/// but the same at every point, so the curve's shape and the gap between runs are what count).
pub const TRAINING_EVAL_SAMPLES: usize = 1000;

/// The run directory's evaluation log, one JSON point per line.
pub const EVAL_LOG: &str = "eval.jsonl";
/// Seed of the evaluation noises (the same at every point of a run, and in every run).
const EVAL_NOISE_SEED: u64 = 77;

/// One model's scores at one point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    pub fid: f64,
    pub class_agreement: f64,
}

/// The scores of a run at one iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub iteration: u64,
    /// Mean training loss over the iterations since the previous point (none at the start).
    pub loss: Option<f64>,
    pub ema: EvalScores,
    pub raw: EvalScores,
    pub samples: usize,
}

/// What a run evaluates with, and how often.
#[derive(Debug)]
pub struct TrainingEval {
    /// Evaluate every this many iterations (and at the start and the end).
    pub every: u64,
    /// Samples per model and point.
    pub samples: usize,
    net: FeatureNet,
    real_features: HostTensor,
    image_shape: [usize; 3],
    device: Device,
}

impl TrainingEval {
    /// `net` and the real images (`[N, C, H, W]`) it compares samples with, on `device`.
    pub fn new(
        net: FeatureNet,
        real: &HostTensor,
        every: u64,
        samples: usize,
        device: &Device,
    ) -> Result<Self> {
        if every == 0 || samples < 2 {
            return Err(EngineError::InvalidSetting(
                "evaluation during training needs an interval > 0 and at least 2 samples".into(),
            ));
        }
        let (real_features, _) = features_and_logits(&net, real, device)?;
        Ok(Self {
            every,
            samples,
            net,
            real_features,
            image_shape: [real.shape[1], real.shape[2], real.shape[3]],
            device: device.clone(),
        })
    }

    /// Loads the feature network `feature_net` and the test split of `data` (`fashion-mnist`,
    /// an IDX folder or an ImageFolder tree) at the image size of the models of `meta`;
    /// fails (before reading the data) when the network cannot judge those models.
    pub fn load(
        feature_net: &Path,
        data: &str,
        meta: &ModelMeta,
        every: u64,
        samples: usize,
        device: &Device,
    ) -> Result<Self> {
        let net = FeatureNet::load(feature_net, device)?;
        check_net(&net, meta)?;
        let d = &meta.dit;
        let real = load_dataset(data, d.input_size, d.in_channels, Split::Test)?;
        let ev = Self::new(net, &real.images, every, samples, device)?;
        ev.check(meta)?;
        Ok(ev)
    }

    /// Fails when the models of `meta` cannot be judged by this network and data.
    pub fn check(&self, meta: &ModelMeta) -> Result<()> {
        let shape = meta.dit.image_shape();
        if shape != self.image_shape {
            return Err(EngineError::Mismatch(format!(
                "evaluation during training: the model makes {shape:?} images and the evaluation data has {:?}",
                self.image_shape
            )));
        }
        check_net(&self.net, meta)
    }

    /// FID and class agreement of `model` on this run's fixed noises.
    pub fn scores(&self, model: &LoadedModel) -> Result<EvalScores> {
        let model = model.copy_to(&self.device)?;
        let (images, labels, _) = generate_samples(
            &model,
            self.samples,
            100,
            &DdimOptions::default(),
            EVAL_NOISE_SEED,
            &self.device,
        )?;
        let (feats, logits) = features_and_logits(&self.net, &images, &self.device)?;
        Ok(EvalScores {
            fid: frechet_distance(&feats, &self.real_features),
            class_agreement: accuracy(&logits, &labels),
        })
    }

    /// Whether iteration `i` (done) is an evaluation point.
    pub fn due(&self, i: u64, last: bool) -> bool {
        last || i.is_multiple_of(self.every)
    }
}

/// Fails when `net` takes other channels or classes than the models of `meta`.
fn check_net(net: &FeatureNet, meta: &ModelMeta) -> Result<()> {
    let (c, d) = (&net.config, &meta.dit);
    if c.in_channels != d.in_channels || c.num_classes != d.num_classes {
        return Err(EngineError::Mismatch(format!(
            "evaluation during training: the feature network takes {} channels and {} classes, the model {} and {}",
            c.in_channels, c.num_classes, d.in_channels, d.num_classes
        )));
    }
    Ok(())
}

/// The points of `path` (none when it does not exist yet).
pub fn read_eval_log(path: &Path) -> Result<Vec<EvalPoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                EngineError::bad_file(
                    path,
                    format!("line {}: not an evaluation point: {e}", n + 1),
                )
            })
        })
        .collect()
}

/// Writes `points` to `path` atomically, one JSON line each.
pub fn write_eval_log(path: &Path, points: &[EvalPoint]) -> Result<()> {
    let mut text = String::new();
    for p in points {
        text += &serde_json::to_string(p).expect("plain data");
        text.push('\n');
    }
    write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVAL_LOG);
        assert!(read_eval_log(&path).unwrap().is_empty());
        let s = EvalScores {
            fid: 12.5,
            class_agreement: 0.75,
        };
        let points = vec![
            EvalPoint {
                iteration: 0,
                loss: None,
                ema: s,
                raw: s,
                samples: 100,
            },
            EvalPoint {
                iteration: 1000,
                loss: Some(0.02),
                ema: s,
                raw: EvalScores { fid: 11.0, ..s },
                samples: 100,
            },
        ];
        write_eval_log(&path, &points).unwrap();
        let back = read_eval_log(&path).unwrap();
        assert_eq!(back, points);
        std::fs::write(&path, "{\"iteration\": 3}\n").unwrap();
        let err = read_eval_log(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
