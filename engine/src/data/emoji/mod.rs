//! The emoji set: Unicode's list of emoji, drawn in several styles (Noto Color Emoji's
//! bitmaps, Twemoji's and OpenMoji's SVGs), captioned with CLDR's English names and keywords,
//! grouped by Unicode's subgroups as class labels.

pub mod annotations;
pub mod catalog;
pub mod render;
pub mod set;

pub use annotations::{Annotation, Annotations, CLDR_DIR};
pub use catalog::{Catalog, EMOJI_TEST, Emoji};
pub use render::{NOTO_COLOR_EMOJI, NotoFont, Skip, SvgNaming, SvgSet, rasterise};
pub use set::*;
