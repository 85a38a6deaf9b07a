//! Drawing one emoji as a small RGB image in a style: Noto Color Emoji from its font (the
//! sequence shaped to one glyph by HarfBuzz's rules, harfrust; the glyph's CBDT bitmap read
//! with skrifa) or an SVG set (Twemoji, OpenMoji) rasterised with resvg. Every drawing is
//! composited on one opaque background colour.

use std::path::{Path, PathBuf};

use harfrust::{FontRef, ShapeOptions, ShaperData, UnicodeBuffer};
use image::imageops::FilterType;
use image::{Rgb, RgbImage, RgbaImage};
use resvg::{tiny_skia, usvg};
use skrifa::bitmap::{BitmapData, BitmapStrikes};
use skrifa::instance::Size;

use crate::data::emoji::annotations::strip_fe0f;

/// Where Debian's `fonts-noto-color-emoji` installs the font.
pub const NOTO_COLOR_EMOJI: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";

/// Why an emoji has no image in a style (counted in the set's manifest).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// The font shapes the sequence to several glyphs (it does not draw it as one).
    NotOneGlyph,
    /// The glyph has no colour bitmap.
    NoBitmap,
    /// The SVG set has no file for the sequence.
    NoFile,
    /// A bitmap or SVG that does not decode.
    Unreadable(String),
}

/// Noto Color Emoji, parsed once for many emoji.
pub struct NotoFont<'a> {
    font: FontRef<'a>,
    shaper_data: ShaperData,
    strikes: BitmapStrikes<'a>,
}

impl<'a> NotoFont<'a> {
    /// `bytes`: the font file's contents.
    pub fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let font = FontRef::new(bytes).map_err(|e| format!("not a font: {e}"))?;
        Ok(Self {
            shaper_data: ShaperData::new(&font),
            strikes: BitmapStrikes::new(&font),
            font,
        })
    }

    /// `emoji` drawn `size`×`size` on `background`.
    pub fn draw(&self, emoji: &str, size: u32, background: [u8; 3]) -> Result<RgbImage, Skip> {
        let shaper = self.shaper_data.shaper(&self.font).build();
        let mut buffer = UnicodeBuffer::new();
        // The font maps no U+FE0F; every fully-qualified sequence shapes to one glyph without.
        buffer.push_str(&strip_fe0f(emoji));
        buffer.guess_segment_properties();
        let shaped = shaper.shape(buffer, ShapeOptions::new());
        let [glyph] = shaped.glyph_infos() else {
            return Err(Skip::NotOneGlyph);
        };
        let id = skrifa::GlyphId::new(glyph.glyph_id);
        let bitmap = self
            .strikes
            .glyph_for_size(Size::unscaled(), id)
            .ok_or(Skip::NoBitmap)?;
        let BitmapData::Png(png) = bitmap.data else {
            return Err(Skip::NoBitmap);
        };
        let rgba = image::load_from_memory(png)
            .map_err(|e| Skip::Unreadable(e.to_string()))?
            .to_rgba8();
        Ok(squared(&rgba, size, background))
    }
}

/// `rgba` centred on a square of `background`, then resized to `size` (a triangle filter
/// widened to the scale: each output pixel averages the input pixels it covers).
fn squared(rgba: &RgbaImage, size: u32, background: [u8; 3]) -> RgbImage {
    let side = rgba.width().max(rgba.height());
    let mut canvas = RgbImage::from_pixel(side, side, Rgb(background));
    let (dx, dy) = ((side - rgba.width()) / 2, (side - rgba.height()) / 2);
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        let out = canvas.get_pixel_mut(x + dx, y + dy);
        for c in 0..3 {
            out[c] = (p[c] as f32 * a + background[c] as f32 * (1.0 - a)).round() as u8;
        }
    }
    image::imageops::resize(&canvas, size, size, FilterType::Triangle)
}

/// How an SVG set names its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvgNaming {
    /// Twemoji: lower-case hex joined by `-`; U+FE0F dropped unless the sequence has a ZWJ
    /// (then, failing that, dropped everywhere).
    Twemoji,
    /// OpenMoji: upper-case hex of at least four digits joined by `-`, exact, then without
    /// U+FE0F.
    OpenMoji,
}

impl SvgNaming {
    /// The file names to try for `emoji`, best first.
    pub fn candidates(self, emoji: &str) -> Vec<String> {
        let hex = |s: &str, upper: bool| {
            let parts: Vec<String> = s
                .chars()
                .map(|c| match upper {
                    true => format!("{:04X}", c as u32),
                    false => format!("{:x}", c as u32),
                })
                .collect();
            format!("{}.svg", parts.join("-"))
        };
        let stripped = strip_fe0f(emoji);
        let mut names = match self {
            SvgNaming::Twemoji if emoji.contains('\u{200D}') => {
                vec![hex(emoji, false), hex(&stripped, false)]
            }
            SvgNaming::Twemoji => vec![hex(&stripped, false)],
            SvgNaming::OpenMoji => vec![hex(emoji, true), hex(&stripped, true)],
        };
        names.dedup();
        names
    }
}

/// A folder of SVGs, one per emoji.
pub struct SvgSet {
    pub dir: PathBuf,
    pub naming: SvgNaming,
}

impl SvgSet {
    /// The file that draws `emoji`, if the set has one.
    pub fn file(&self, emoji: &str) -> Option<PathBuf> {
        self.naming
            .candidates(emoji)
            .into_iter()
            .map(|name| self.dir.join(name))
            .find(|p| p.is_file())
    }

    /// `emoji` drawn `size`×`size` on `background`.
    pub fn draw(&self, emoji: &str, size: u32, background: [u8; 3]) -> Result<RgbImage, Skip> {
        let path = self.file(emoji).ok_or(Skip::NoFile)?;
        rasterise(&path, size, background).map_err(Skip::Unreadable)
    }
}

/// The SVG at `path` scaled to fit `size`×`size` (centred) on `background`.
pub fn rasterise(path: &Path, size: u32, background: [u8; 3]) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tree = usvg::Tree::from_data(&bytes, &usvg::Options::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (w, h) = (tree.size().width(), tree.size().height());
    let scale = size as f32 / w.max(h);
    let (dx, dy) = (
        (size as f32 - w * scale) / 2.0,
        (size as f32 - h * scale) / 2.0,
    );
    let mut pixmap = tiny_skia::Pixmap::new(size, size).ok_or("empty image size")?;
    let [r, g, b] = background;
    pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, 255));
    let transform = tiny_skia::Transform::from_scale(scale, scale).post_translate(dx, dy);
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    // An opaque background leaves every pixel opaque: premultiplied RGB is plain RGB.
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(RgbImage::from_raw(size, size, rgb).expect("size × size pixels"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_file_names_follow_each_sets_rule() {
        let heart = "\u{2764}\u{FE0F}";
        assert_eq!(SvgNaming::Twemoji.candidates(heart), ["2764.svg"]);
        assert_eq!(
            SvgNaming::OpenMoji.candidates(heart),
            ["2764-FE0F.svg", "2764.svg"]
        );
        assert_eq!(
            SvgNaming::OpenMoji.candidates("#\u{FE0F}\u{20E3}")[0],
            "0023-FE0F-20E3.svg"
        );
        assert_eq!(
            SvgNaming::Twemoji.candidates("#\u{FE0F}\u{20E3}"),
            ["23-20e3.svg"]
        );
        // Eye in speech bubble: Twemoji keeps FE0F with a ZWJ, but this file has none.
        let eye = "\u{1F441}\u{FE0F}\u{200D}\u{1F5E8}\u{FE0F}";
        assert_eq!(
            SvgNaming::Twemoji.candidates(eye),
            ["1f441-fe0f-200d-1f5e8-fe0f.svg", "1f441-200d-1f5e8.svg"]
        );
    }
}
