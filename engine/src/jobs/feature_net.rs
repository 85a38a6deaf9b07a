//! Training the feature network that evaluation compares samples in: a small classifier of the
//! real images, trained with Adam on cross-entropy.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;

use crate::data::datasets::Dataset;
use crate::error::Result;
use crate::eval::feature_net::{
    DenseHead, FeatureNet, FeatureNetConfig, accuracy, features_and_logits,
};
use crate::train::options::TrainOptions;
use crate::train::schedule::LrSchedule;
use crate::train::trainer::Trainer;

/// How the feature network is trained by default: 3000 Adam steps of batch 128 (6.4 epochs of
/// Fashion-MNIST) at lr 1e-3 on a cosine schedule, no EMA, no clipping.
pub fn feature_net_training() -> TrainOptions {
    TrainOptions {
        iterations: 3000,
        batch_size: 128,
        lr: 1e-3,
        ema_decay: 0.0,
        grad_clip: 0.0,
        seed: 0,
        lr_schedule: LrSchedule::Cosine {
            warmup: 100,
            final_fraction: 0.02,
        },
    }
}

/// Trains a feature network with `layers` on `train` (cross-entropy, AdamW) and measures it on
/// `test`.
pub fn train_feature_net(
    train: &Dataset,
    test: &Dataset,
    layers: &[(usize, usize)],
    dense: Option<DenseHead>,
    options: &TrainOptions,
    device: &Device,
    mut on_progress: impl FnMut(u64, f32),
) -> Result<FeatureNet> {
    let train_device = device.clone().autodiff();
    device.seed(options.seed);
    train_device.seed(options.seed);
    let config = FeatureNetConfig {
        in_channels: train.channels(),
        num_classes: train.class_names.len(),
        class_names: train.class_names.clone(),
        layers: layers.to_vec(),
        dense,
        test_accuracy: None,
    };
    let mut trainer = Trainer::new(FeatureNet::new(config, &train_device), options.clone());
    let classes = train.class_names.len();
    while !trainer.done() {
        let loss = trainer.step(|net, rng| {
            let idx: Vec<usize> = (0..options.batch_size)
                .map(|_| rng.random_range(0..train.len()))
                .collect();
            let (x, y) = train.batch(&idx);
            let mut onehot = vec![0f32; idx.len() * classes];
            for (i, &l) in y.iter().enumerate() {
                onehot[i * classes + l as usize] = 1.0;
            }
            let onehot = Tensor::<2>::from_data(
                TensorData::new(onehot, [idx.len(), classes]),
                &train_device,
            );
            let logp = log_softmax(net.logits(net.features(x.to_device(&train_device)?)), 1);
            Ok((logp * onehot).sum_dim(1).mean().neg())
        })?;
        on_progress(trainer.iteration, loss);
    }
    let mut net = trainer.model.valid();
    let (_, logits) = features_and_logits(&net, &test.images, &device.clone())?;
    net.config.test_accuracy = Some(accuracy(&logits, &test.labels));
    Ok(net)
}
