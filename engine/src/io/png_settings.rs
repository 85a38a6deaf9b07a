//! Generated images saved as PNG with the settings that made them in a text chunk, so that
//! opening the PNG again restores them.

use std::io::Cursor;
use std::path::Path;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::io::writer::write_atomically;

/// Key of the PNG `iTXt` chunk that holds the settings as JSON.
pub const PNG_KEY: &str = "ard-studio";

/// Everything needed to make the same image again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    /// File name of the model, for the reader.
    pub model_file: String,
    /// Fingerprint of the model file's bytes (`weights::file_fingerprint`).
    pub model_fingerprint: String,
    /// One label per image of the batch.
    pub labels: Vec<i64>,
    /// Display name of the first label's class, when the model names its classes.
    pub class_name: Option<String>,
    /// The prompt the class was resolved from, if any.
    pub prompt: Option<String>,
    pub seed: u64,
    /// Steps of the run (K for a student, DDIM steps for a teacher).
    pub steps: usize,
    /// Guidance scale (teacher runs only).
    pub cfg_scale: f32,
}

/// Encodes `image` as PNG with `settings` in an `iTXt` chunk.
pub fn encode_png(image: &RgbImage, settings: &GenerationSettings) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let json = serde_json::to_string(settings).expect("settings serialise");
    encoder
        .add_itxt_chunk(PNG_KEY.to_string(), json)
        .map_err(|e| EngineError::Format(format!("PNG text chunk: {e}")))?;
    let mut writer = encoder
        .write_header()
        .map_err(|e| EngineError::Format(format!("PNG header: {e}")))?;
    writer
        .write_image_data(image.as_raw())
        .map_err(|e| EngineError::Format(format!("PNG data: {e}")))?;
    writer
        .finish()
        .map_err(|e| EngineError::Format(format!("PNG: {e}")))?;
    Ok(bytes)
}

/// Writes `image` with `settings` to `path` (atomically: a full disk leaves no broken file).
pub fn save_png_with_settings(
    image: &RgbImage,
    settings: &GenerationSettings,
    path: &Path,
) -> Result<()> {
    write_atomically(path, &encode_png(image, settings)?)
}

/// The settings stored in a PNG by [`encode_png`]; `Ok(None)` for a PNG without them.
pub fn read_settings(bytes: &[u8]) -> Result<Option<GenerationSettings>> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let reader = decoder
        .read_info()
        .map_err(|e| EngineError::Format(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let text = info
        .utf8_text
        .iter()
        .find(|c| c.keyword == PNG_KEY)
        .map(|c| c.get_text())
        .transpose()
        .map_err(|e| EngineError::Format(format!("PNG text chunk: {e}")))?
        .or_else(|| {
            info.uncompressed_latin1_text
                .iter()
                .find(|c| c.keyword == PNG_KEY)
                .map(|c| c.text.clone())
        });
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| EngineError::Format(format!("PNG settings are not readable: {e}")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GenerationSettings {
        GenerationSettings {
            model_file: "ard.safetensors".into(),
            model_fingerprint: "0123456789abcdef".into(),
            labels: vec![7, 7, 3],
            class_name: Some("Sneaker".into()),
            prompt: Some("red sneakers".into()),
            seed: 42,
            steps: 4,
            cfg_scale: 1.5,
        }
    }

    #[test]
    fn settings_round_trip_through_png() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
        let bytes = encode_png(&img, &settings()).unwrap();
        assert_eq!(read_settings(&bytes).unwrap(), Some(settings()));
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back, img);
    }

    #[test]
    fn plain_png_has_no_settings_and_garbage_is_an_error() {
        let mut plain = Vec::new();
        RgbImage::new(2, 2)
            .write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(read_settings(&plain).unwrap(), None);
        assert!(read_settings(b"not a png").is_err());
    }
}
