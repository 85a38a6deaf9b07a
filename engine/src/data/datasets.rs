//! Training images: Fashion-MNIST from its IDX files (Debian's `dataset-fashion-mnist`), and any
//! ImageFolder tree (one folder per class of PNG/JPEG files). Pixels become f32 in [−1, 1].

use std::io::Read;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::conditioning::fashion_mnist;
use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::writer::Fingerprint;

/// Where Debian's `dataset-fashion-mnist` installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Side ImageFolder images are resized to by default (Fashion-MNIST is always 28).
pub const IMAGE_FOLDER_SIZE: usize = 32;
/// Channels ImageFolder images are read with by default (3 = RGB, 1 = grey).
pub const IMAGE_FOLDER_CHANNELS: usize = 3;
/// The default training data: Debian's `dataset-fashion-mnist`.
pub const DEFAULT_DATASET: &str = "fashion-mnist";

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Labelled square images `[N, C, S, S]` in [−1, 1].
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: HostTensor,
    pub labels: Vec<i64>,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn channels(&self) -> usize {
        self.images.shape[1]
    }

    pub fn image_size(&self) -> usize {
        self.images.shape[2]
    }

    /// Images and labels at `indices`, as a batch.
    pub fn batch(&self, indices: &[usize]) -> (HostTensor, Vec<i64>) {
        (
            self.images.rows(indices),
            indices.iter().map(|&i| self.labels[i]).collect(),
        )
    }

    /// A short fingerprint of the pixels and labels, for manifests.
    pub fn fingerprint(&self) -> String {
        let mut f = Fingerprint::default();
        for v in &self.images.data {
            f.feed(&v.to_le_bytes());
        }
        for l in &self.labels {
            f.feed(&l.to_le_bytes());
        }
        f.hex()
    }
}

fn bad(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::bad_file(path, message)
}

/// Reads a file, un-gzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX array: its dimensions and unsigned bytes (the only element type MNIST-style files use).
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!("IDX element type 0x{:02x} is not unsigned bytes", bytes[2]),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(bad(
            path,
            format!(
                "IDX data holds {} bytes but its dimensions {dims:?} need {n} (truncated?)",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Images and labels from a pair of IDX files.
pub fn read_idx_pair(images: &Path, labels: &Path, class_names: Vec<String>) -> Result<Dataset> {
    let (dims, pixels) = read_idx(images)?;
    if dims.len() != 3 || dims[1] != dims[2] {
        return Err(bad(
            images,
            format!("expected N square images (N×S×S), found dimensions {dims:?}"),
        ));
    }
    let (ldims, label_bytes) = read_idx(labels)?;
    if ldims.len() != 1 || ldims[0] != dims[0] {
        return Err(bad(
            labels,
            format!("{:?} labels for {} images", ldims, dims[0]),
        ));
    }
    if let Some(&l) = label_bytes
        .iter()
        .find(|&&l| l as usize >= class_names.len())
    {
        return Err(bad(
            labels,
            format!("label {l} out of range for {} classes", class_names.len()),
        ));
    }
    let data = pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
    Ok(Dataset {
        images: HostTensor::new(vec![dims[0], 1, dims[1], dims[2]], data),
        labels: label_bytes.iter().map(|&l| l as i64).collect(),
        class_names,
    })
}

/// Fashion-MNIST from `dir` (default [`FASHION_MNIST_DIR`]).
pub fn fashion_mnist_from(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |kind: &str| -> Result<PathBuf> {
        let stem = format!("{prefix}-{kind}");
        [format!("{stem}.gz"), stem.clone()]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .ok_or_else(|| {
                EngineError::DataNotFound(format!(
                    "Fashion-MNIST not found: no {stem}(.gz) in {} (install Debian's \
                     dataset-fashion-mnist package, or point --data at the IDX files)",
                    dir.display()
                ))
            })
    };
    read_idx_pair(
        &find("images-idx3-ubyte")?,
        &find("labels-idx1-ubyte")?,
        fashion_mnist(),
    )
}

/// Fashion-MNIST from Debian's location.
pub fn fashion_mnist_split(split: Split) -> Result<Dataset> {
    fashion_mnist_from(Path::new(FASHION_MNIST_DIR), split)
}

/// Image files with their labels.
pub type LabelledFiles = Vec<(PathBuf, i64)>;

/// Decodes an image file, its format guessed from its first bytes rather than its extension
/// (ImageNet's training set holds a PNG named `.JPEG`).
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| bad(path, format!("unreadable image: {e}")))?
        .decode()
        .map_err(|e| bad(path, format!("unreadable image: {e}")))
}

/// The images of an ImageFolder tree with their labels, in label then file-name order.
pub fn list_image_folder(
    root: &Path,
    per_class: Option<usize>,
) -> Result<(Vec<String>, LabelledFiles)> {
    let read_dir = |p: &Path| std::fs::read_dir(p).map_err(|e| EngineError::io(p, e));
    let mut classes: Vec<PathBuf> = read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(EngineError::bad_file(
            root,
            "no class folders (expected ROOT/CLASS/IMAGE.jpg, as ImageNet's train/)",
        ));
    }
    let mut names = Vec::new();
    let mut items = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        names.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        let mut files: Vec<PathBuf> = read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| {
                    matches!(
                        x.to_ascii_lowercase().to_str(),
                        Some("png" | "jpg" | "jpeg")
                    )
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(EngineError::bad_file(
                dir,
                "class folder holds no PNG or JPEG images",
            ));
        }
        files.truncate(per_class.unwrap_or(usize::MAX));
        items.extend(files.into_iter().map(|f| (f, label as i64)));
    }
    Ok((names, items))
}

/// `img` centre-cropped to a square, resized to `size`, as `channels` planes (1: grey, 3: RGB)
/// of values in [−1, 1].
pub fn image_pixels(img: &image::DynamicImage, size: usize, channels: usize) -> Vec<f32> {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h);
    let img = img
        .crop_imm((w - side) / 2, (h - side) / 2, side, side)
        .resize_exact(size as u32, size as u32, FilterType::Triangle);
    let mut data = Vec::with_capacity(channels * size * size);
    if channels == 1 {
        data.extend(img.to_luma8().pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0));
    } else {
        let rgb = img.to_rgb8();
        for c in 0..3 {
            data.extend(rgb.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
    }
    data
}

/// An ImageFolder tree: each sub-folder (sorted by name) is a class; its PNG/JPEG files are
/// centre-cropped to a square and resized to `size`, as grey (`channels` = 1) or RGB (3).
pub fn image_folder(root: &Path, size: usize, channels: usize) -> Result<Dataset> {
    if channels != 1 && channels != 3 {
        return Err(EngineError::InvalidSetting(format!(
            "images can have 1 or 3 channels, not {channels}"
        )));
    }
    let (class_names, items) = list_image_folder(root, None)?;
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for (f, label) in items {
        data.extend(image_pixels(&open_image(&f)?, size, channels));
        labels.push(label);
    }
    let n = labels.len();
    Ok(Dataset {
        images: HostTensor::new(vec![n, channels, size, size], data),
        labels,
        class_names,
    })
}
