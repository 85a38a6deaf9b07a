//! The feature network behind ARD Studio's FID-style metrics: a small CNN classifier trained by
//! the project on the same data (no Inception weights are available offline). Its features (the
//! last map's 128-d average, or a dense layer's 256 activations) stand in for Inception's; its
//! logits judge class agreement.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::weights::TensorFile;
use crate::io::writer::Storage;
use crate::model::params::{Init, LinearInit, ParamSource, ParamWriter};

/// Header key of a feature-network file.
pub const FEATURES_KEY: &str = "ard_studio_feature_net";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// (output channels, stride) of each 3×3 convolution; the last width is the feature size.
    /// Files from before this field hold [`LEGACY_LAYERS`].
    #[serde(default = "legacy_layers")]
    pub layers: Vec<(usize, usize)>,
    /// A dense layer whose activations are the features, when given; otherwise the last
    /// feature map's global average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<DenseHead>,
    /// Accuracy on the test split, when measured.
    #[serde(default)]
    pub test_accuracy: Option<f64>,
}

/// The first feature networks' layers: three convolutions, 32/64/128 wide (80.1% on
/// Fashion-MNIST after 1500 steps at a constant rate). Kept as the differently built second
/// opinion on a ranking.
pub const LEGACY_LAYERS: [(usize, usize); 3] = [(32, 1), (64, 2), (128, 2)];

fn legacy_layers() -> Vec<(usize, usize)> {
    LEGACY_LAYERS.to_vec()
}

/// The convolutions of the default feature network: two per resolution (28, 14, 7 on
/// Fashion-MNIST), 32/64/128 wide; followed by [`DENSE_HEAD`] (`--arch dense`, the default) or
/// by the last map's average (`--arch five-conv`).
pub const DEFAULT_LAYERS: [(usize, usize); 5] = [(32, 1), (32, 2), (64, 1), (64, 2), (128, 1)];

/// A dense layer on the last feature map average-pooled to `grid`×`grid` (so that the features
/// keep where things are, as Inception's do); its `width` GELU activations are the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseHead {
    pub grid: usize,
    pub width: usize,
}

/// The dense head of `--arch dense`: the last map pooled to 4×4, 256 features.
pub const DENSE_HEAD: DenseHead = DenseHead {
    grid: 4,
    width: 256,
};

impl FeatureNetConfig {
    /// Width of the last convolution.
    fn conv_width(&self) -> usize {
        self.layers.last().map_or(self.in_channels, |&(w, _)| w)
    }

    /// Inputs of the dense layer, when there is one.
    fn dense_inputs(&self) -> Option<usize> {
        self.dense.map(|d| self.conv_width() * d.grid * d.grid)
    }

    /// Size of a feature vector.
    pub fn feature_width(&self) -> usize {
        self.dense.map_or(self.conv_width(), |d| d.width)
    }
}

#[derive(Module, Debug)]
pub struct FeatureNet {
    pub convs: Vec<Conv2d>,
    pub dense: Option<Linear>,
    pub head: Linear,
    #[module(skip)]
    pub config: FeatureNetConfig,
}

fn conv(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl FeatureNet {
    pub fn new(config: FeatureNetConfig, device: &Device) -> Self {
        let mut c_in = config.in_channels;
        let convs = config
            .layers
            .iter()
            .map(|&(w, stride)| {
                let c = conv(c_in, w, stride, device);
                c_in = w;
                c
            })
            .collect();
        let dense = (config.dense.zip(config.dense_inputs()))
            .map(|(d, inputs)| burn::nn::LinearConfig::new(inputs, d.width).init(device));
        let head =
            burn::nn::LinearConfig::new(config.feature_width(), config.num_classes).init(device);
        Self {
            convs,
            dense,
            head,
            config,
        }
    }

    /// `[B, C, H, W]` → pooled features `[B, F]` (F: the last layer's width)
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for c in &self.convs {
            h = gelu(c.forward(h));
        }
        let [b, c, hh, ww] = h.dims();
        match (&self.dense, self.config.dense) {
            (Some(dense), Some(d)) => {
                let pooled = adaptive_avg_pool2d(h, [d.grid, d.grid]);
                gelu(dense.forward(pooled.reshape([b, c * d.grid * d.grid])))
            }
            _ => h.reshape([b, c, hh * ww]).mean_dim(2).reshape([b, c]),
        }
    }

    /// `[B, F]` → class logits `[B, classes]`
    pub fn logits(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = ParamWriter::new(Storage::F32);
        for (i, c) in self.convs.iter().enumerate() {
            w.tensor(&format!("convs.{i}.weight"), &c.weight);
            if let Some(b) = &c.bias {
                w.tensor(&format!("convs.{i}.bias"), b);
            }
        }
        if let Some(dense) = &self.dense {
            w.linear("dense", dense);
        }
        w.linear("head", &self.head);
        w.writer
            .set_metadata(FEATURES_KEY, serde_json::to_string(&self.config).unwrap());
        w.writer.write(path)
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let config: FeatureNetConfig = file
            .header_json(FEATURES_KEY)?
            .ok_or_else(|| EngineError::bad_file(path, "not an ARD Studio feature network"))?;
        if config.layers.is_empty() || config.layers.iter().any(|&(w, s)| w == 0 || s == 0) {
            return Err(EngineError::bad_file(
                path,
                format!("feature network with impossible layers {:?}", config.layers),
            ));
        }
        let mut net = Self::new(config.clone(), device);
        let mut r = ParamSource::file(&file, device);
        let mut c_in = config.in_channels;
        for (i, (c, &(w, _))) in net.convs.iter_mut().zip(config.layers.iter()).enumerate() {
            c.weight = r.param(
                &format!("convs.{i}.weight"),
                [w, c_in, 3, 3],
                Init::Normal(0.02),
            )?;
            c.bias = Some(r.param(&format!("convs.{i}.bias"), [w], Init::Zeros)?);
            c_in = w;
        }
        if let (Some(d), Some(inputs)) = (config.dense, config.dense_inputs()) {
            net.dense = Some(r.linear("dense", inputs, d.width, LinearInit::Xavier)?);
        }
        let features = config.feature_width();
        net.head = r.linear("head", features, config.num_classes, LinearInit::Xavier)?;
        r.finish()?;
        Ok(net)
    }
}

/// Runs `f` over `images` in batches and gathers the `[N, D]` results on the host.
pub fn batched(
    images: &HostTensor,
    batch: usize,
    device: &Device,
    f: impl Fn(Tensor<4>) -> Tensor<2>,
) -> Result<HostTensor> {
    let n = images.shape[0];
    let mut out = Vec::new();
    let mut width = 0;
    for start in (0..n).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let r = HostTensor::from_tensor(f(images.rows(&idx).to_device(device)?));
        width = r.shape[1];
        out.extend(r.data);
    }
    Ok(HostTensor::new(vec![n, width], out))
}

/// Features and logits of `images`.
pub fn features_and_logits(
    net: &FeatureNet,
    images: &HostTensor,
    device: &Device,
) -> Result<(HostTensor, HostTensor)> {
    let feats = batched(images, 250, device, |x| net.features(x))?;
    let logits = HostTensor::from_tensor(net.logits(feats.to_device::<2>(device)?));
    Ok((feats, logits))
}

/// Fraction of rows whose arg-max is the label.
pub fn accuracy(logits: &HostTensor, labels: &[i64]) -> f64 {
    let c = logits.shape[1];
    let hits = labels
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let row = &logits.data[i * c..(i + 1) * c];
            let best = (0..c)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            best as i64 == **l
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dense: Option<DenseHead>) -> FeatureNetConfig {
        FeatureNetConfig {
            in_channels: 1,
            num_classes: 3,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            layers: vec![(4, 1), (8, 2)],
            dense,
            test_accuracy: Some(0.5),
        }
    }

    #[test]
    fn both_heads_save_and_load_to_the_same_features() {
        let device = Device::flex();
        let x = crate::io::host::seeded_noise(vec![5, 1, 8, 8], 3);
        let dir = std::env::temp_dir().join(format!("ard-fnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (dense, width) in [(None, 8), (Some(DenseHead { grid: 2, width: 6 }), 6)] {
            let net = FeatureNet::new(config(dense), &device);
            assert_eq!(net.config.feature_width(), width);
            let path = dir.join(format!("net-{width}.safetensors"));
            net.save(&path).unwrap();
            let back = FeatureNet::load(&path, &device).unwrap();
            assert_eq!(back.config, net.config);
            let (f, l) = features_and_logits(&net, &x, &device).unwrap();
            let (g, m) = features_and_logits(&back, &x, &device).unwrap();
            assert_eq!(
                (f.shape.clone(), l.shape.clone()),
                (vec![5, width], vec![5, 3])
            );
            assert_eq!((f.data, l.data), (g.data, m.data));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_from_before_the_dense_head_have_none() {
        let mut json = serde_json::to_value(config(None)).unwrap();
        assert!(json.get("dense").is_none(), "not written when absent");
        json.as_object_mut().unwrap().remove("layers");
        let old: FeatureNetConfig = serde_json::from_value(json).unwrap();
        assert_eq!((old.dense, old.layers), (None, LEGACY_LAYERS.to_vec()));
    }
}
