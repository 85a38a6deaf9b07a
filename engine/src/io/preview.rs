//! Turning model outputs into viewable RGB images and PNG grids.
//!
//! Pixel-space models (1 or 3 channels in [−1, 1]) are shown as they are. 4-channel SD-VAE
//! latents are previewed with a fixed linear latent→RGB map (an approximation of the decoder,
//! good enough to watch a trajectory; decode with the VAE for final images).

use std::path::Path;

use image::{ImageFormat, RgbImage};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::writer::write_atomically;

/// Approximate RGB contribution of each SD-VAE latent channel (rows: latent channels).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// One image `[C, H, W]` as RGB.
pub fn to_rgb(image: &HostTensor) -> RgbImage {
    let [c, h, w] = <[usize; 3]>::try_from(image.shape.as_slice()).expect("[C, H, W] image");
    let plane = h * w;
    let at = |ch: usize, i: usize| image.data[ch * plane + i];
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let rgb = match c {
            3 => [at(0, i), at(1, i), at(2, i)],
            4 => {
                let mut px = [0.0f32; 3];
                for (ch, row) in LATENT_RGB.iter().enumerate() {
                    for k in 0..3 {
                        px[k] += at(ch, i) * row[k];
                    }
                }
                px
            }
            _ => [at(0, i); 3],
        };
        image::Rgb(rgb.map(to_byte))
    })
}

/// Nearest-neighbour upscale by an integer factor.
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return img.clone();
    }
    RgbImage::from_fn(img.width() * factor, img.height() * factor, |x, y| {
        *img.get_pixel(x / factor, y / factor)
    })
}

/// Integer factor that brings a side of `side` pixels to at least 96.
pub fn display_factor(side: u32) -> u32 {
    96u32.div_ceil(side.max(1)).max(1)
}

/// Tiles equally sized images row by row with a 2-pixel gap.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    let (w, h) = images.first().map_or((1, 1), |i| (i.width(), i.height()));
    let rows = images.len().div_ceil(cols).max(1);
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (w + gap) - gap,
        rows as u32 * (h + gap) - gap,
        image::Rgb([24, 24, 24]),
    );
    for (n, img) in images.iter().enumerate() {
        let (x0, y0) = ((n % cols) as u32 * (w + gap), (n / cols) as u32 * (h + gap));
        for (x, y, p) in img.enumerate_pixels() {
            out.put_pixel(x0 + x, y0 + y, *p);
        }
    }
    out
}

/// A batch `[B, C, H, W]` as display-sized RGB images.
pub fn batch_images(batch: &HostTensor) -> Vec<RgbImage> {
    let factor = display_factor(batch.shape[3] as u32);
    (0..batch.shape[0])
        .map(|i| upscale(&to_rgb(&batch.index0(i)), factor))
        .collect()
}

/// The final images of a batch, side by side (at most 8 per row).
pub fn batch_grid(batch: &HostTensor) -> RgbImage {
    let images = batch_images(batch);
    let cols = images.len().min(8);
    grid(&images, cols)
}

/// One row per batch element, one column per step.
pub fn step_strip(steps: &[HostTensor]) -> RgbImage {
    let per_step: Vec<Vec<RgbImage>> = steps.iter().map(batch_images).collect();
    let batch = per_step.first().map_or(0, Vec::len);
    let images: Vec<RgbImage> = (0..batch)
        .flat_map(|b| per_step.iter().map(move |s| s[b].clone()))
        .collect();
    grid(&images, steps.len())
}

/// Encodes a PNG and writes it atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| EngineError::Format(format!("PNG encoding failed: {e}")))?;
    write_atomically(path, bytes.get_ref())
}
