//! Opening a dataset by the name the CLI and the app give it.

use std::path::Path;

use crate::data::captioned::{is_captioned_folder, load_captioned};
use crate::data::datasets::{
    Dataset, Split, fashion_mnist_from, fashion_mnist_split, image_folder,
};
use crate::data::latents::{is_latent_folder, load_latents};
use crate::error::{EngineError, Result};

/// Opens a dataset named the way the CLI and the app name it: `fashion-mnist` (Debian's
/// package), a folder of Fashion-MNIST-style IDX files, a latent folder (`ard encode
/// --folder`; its latents must be `channels`×`size`×`size`), a captioned set (`captions.tsv`;
/// its `class` column labels the images), or an ImageFolder tree (one folder per class) resized
/// to `size` with `channels` channels.
pub fn load_dataset(spec: &str, size: usize, channels: usize, split: Split) -> Result<Dataset> {
    if spec == "fashion-mnist" {
        return fashion_mnist_split(split);
    }
    let path = Path::new(spec);
    if !path.is_dir() {
        return Err(EngineError::DataNotFound(format!(
            "dataset `{spec}`: not `fashion-mnist` and not a directory"
        )));
    }
    if is_latent_folder(path) {
        let data = load_latents(path)?;
        if (data.channels(), data.image_size()) != (channels, size) {
            return Err(EngineError::Mismatch(format!(
                "{spec}: latents of {}×{}×{}, and the model works on {channels}×{size}×{size}",
                data.channels(),
                data.image_size(),
                data.image_size()
            )));
        }
        return Ok(data);
    }
    let has_idx = std::fs::read_dir(path)
        .map_err(|e| EngineError::io(path, e))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("idx3-ubyte"));
    if has_idx {
        fashion_mnist_from(path, split)
    } else if is_captioned_folder(path) {
        Ok(load_captioned(path, size, channels)?.data)
    } else {
        image_folder(path, size, channels)
    }
}
