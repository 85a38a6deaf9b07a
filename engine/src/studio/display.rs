//! What the app shows of the engine's work: a loaded model's description for the model panel,
//! and the student-vs-teacher difference images of the comparison strip.

use image::RgbImage;

use crate::io::host::HostTensor;
use crate::io::preview::batch_images;
use crate::model::loaded::LoadedModel;
use crate::studio::protocol::ModelInfo;

/// What the model panel shows about `model`.
pub fn model_info(model: &LoadedModel, source: String, fingerprint: String) -> ModelInfo {
    let meta = &model.meta;
    let d = &meta.dit;
    // A 1000-class file without names is taken for ImageNet (DiT's own checkpoints).
    let class_names = meta
        .class_names
        .clone()
        .filter(|n| n.len() == d.num_classes)
        .or_else(|| (d.num_classes == 1000).then(crate::conditioning::imagenet))
        .unwrap_or_else(|| (0..d.num_classes).map(|i| format!("class {i}")).collect());
    let student = meta.student.as_ref();
    ModelInfo {
        source,
        fingerprint,
        kind: meta.kind,
        architecture: format!(
            "DiT {}×{}×{}, patch {}, hidden {}, depth {}, {} heads{}",
            d.in_channels,
            d.input_size,
            d.input_size,
            d.patch_size,
            d.hidden_size,
            d.depth,
            d.num_heads,
            match student {
                Some(s) => format!(
                    "; {} steps, N = {} history layers{}",
                    s.steps,
                    s.history_layers,
                    if s.adversarial {
                        ", GAN fine-tuned"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            }
        ),
        params: model.num_params(),
        class_names,
        image_size: d.input_size,
        channels: d.in_channels,
        steps: student.map_or(25, |s| s.steps),
        history_layers: student.map(|s| s.history_layers),
        anchors: student.map(|s| s.anchors.clone()).unwrap_or_default(),
        teacher_steps: student.map(|s| s.teacher_steps),
        precision: model.precision(),
    }
}

/// Per image: RMSE between two `[B, C, H, W]` batches and |a − b| as an image (black = equal,
/// white = a difference of 1 or more, half the value range).
pub(crate) fn difference_images(a: &HostTensor, b: &HostTensor) -> Vec<(f32, RgbImage)> {
    let diff = HostTensor::new(
        a.shape.clone(),
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs().min(1.0) * 2.0 - 1.0)
            .collect(),
    );
    let per_image = a.len() / a.shape[0].max(1);
    let rmse = a
        .data
        .chunks(per_image)
        .zip(b.data.chunks(per_image))
        .map(|(x, y)| {
            let sq: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
            (sq / per_image as f32).sqrt()
        });
    let grey = HostTensor::new(
        vec![diff.shape[0], 1, diff.shape[2], diff.shape[3]],
        diff.data
            .chunks(per_image)
            .flat_map(|img| {
                let plane = diff.shape[2] * diff.shape[3];
                let channels = diff.shape[1];
                (0..plane).map(move |i| {
                    (0..channels)
                        .map(|c| img[c * plane + i])
                        .fold(-1.0, f32::max)
                })
            })
            .collect(),
    );
    rmse.zip(batch_images(&grey)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::DitConfig;
    use crate::model::init::init_teacher;
    use crate::model::params::InitOptions;
    use burn::tensor::Device;

    #[test]
    fn a_thousand_unnamed_classes_are_imagenet() {
        let unnamed = |classes| {
            let dit = DitConfig::fashion_mnist()
                .with_image(8, 1)
                .with_hidden(16)
                .with_depth(1)
                .with_heads(2)
                .with_classes(classes);
            let options = InitOptions {
                seed: 0,
                zero_init: true,
            };
            init_teacher(&dit, None, options, &Device::flex()).unwrap()
        };
        let info = model_info(&unnamed(1000), "dit.pt".into(), "0".into());
        assert!(info.class_names[207].starts_with("golden retriever"));
        let info = model_info(&unnamed(3), "x".into(), "0".into());
        assert_eq!(info.class_names, ["class 0", "class 1", "class 2"]);
    }
}
