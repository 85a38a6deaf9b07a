//! `ard dataset emoji`: the captioned emoji set (Unicode's list drawn in each style, captioned
//! from CLDR).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ard_engine::data::emoji::{
    CLDR_DIR, EMOJI_BACKGROUND, EMOJI_SIZE, EMOJI_TEST, EmojiSetOptions, NOTO_COLOR_EMOJI,
    StyleSource, build_emoji_set,
};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Every fully-qualified emoji of Unicode's list in each style, 32×32 RGB on one
    /// background, captioned with CLDR's English name and keywords, its subgroup as class.
    Emoji(EmojiArgs),
}

#[derive(Args)]
pub struct EmojiArgs {
    /// The set's folder (must not exist; built beside it and renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Side of the images.
    #[arg(long, default_value_t = EMOJI_SIZE)]
    size: u32,
    /// Background colour, as hex RRGGBB (default white).
    #[arg(long)]
    background: Option<String>,
    /// Styles, in order: noto (the font), twemoji (needs --twemoji), openmoji (needs
    /// --openmoji).
    #[arg(long, value_delimiter = ',', default_value = "noto,twemoji")]
    styles: Vec<String>,
    /// The SVG folder of npm's @twemoji/svg (the unpacked package/).
    #[arg(long)]
    twemoji: Option<PathBuf>,
    /// npm's openmoji package (its root or its color/svg/).
    #[arg(long)]
    openmoji: Option<PathBuf>,
    #[arg(long, default_value = NOTO_COLOR_EMOJI)]
    noto: PathBuf,
    #[arg(long = "emoji-test", default_value = EMOJI_TEST)]
    emoji_test: PathBuf,
    /// CLDR's root (with common/annotations/en.xml).
    #[arg(long, default_value = CLDR_DIR)]
    cldr: PathBuf,
    /// Only the first N emoji of the list (a quick set).
    #[arg(long)]
    limit: Option<usize>,
}

impl EmojiArgs {
    fn options(&self) -> Result<EmojiSetOptions> {
        let styles = self
            .styles
            .iter()
            .map(|s| match (s.as_str(), &self.twemoji, &self.openmoji) {
                ("noto", _, _) => Ok(StyleSource::Noto(self.noto.clone())),
                ("twemoji", Some(dir), _) => Ok(StyleSource::Twemoji(dir.clone())),
                ("openmoji", _, Some(dir)) => Ok(StyleSource::OpenMoji(dir.clone())),
                ("twemoji" | "openmoji", _, _) => bail!(
                    "the {s} style needs --{s} DIR (its npm package; \
                     `bash assets/emoji-sources.sh` fetches it)"
                ),
                _ => bail!("unknown style {s:?}: noto, twemoji or openmoji"),
            })
            .collect::<Result<_>>()?;
        Ok(EmojiSetOptions {
            out: self.out.clone(),
            size: self.size,
            background: match &self.background {
                Some(hex) => parse_colour(hex)?,
                None => EMOJI_BACKGROUND,
            },
            styles,
            emoji_test: self.emoji_test.clone(),
            cldr: self.cldr.clone(),
            limit: self.limit,
        })
    }
}

/// `RRGGBB` (an optional `#`) as RGB.
fn parse_colour(hex: &str) -> Result<[u8; 3]> {
    let hex = hex.trim_start_matches('#');
    let channel = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16);
    match (hex.len(), channel(0), channel(2), channel(4)) {
        (6, Ok(r), Ok(g), Ok(b)) => Ok([r, g, b]),
        _ => bail!("background {hex:?}: want hex RRGGBB, as ffffff"),
    }
}

pub(super) fn dataset_cmd(command: DatasetCommand) -> Result<()> {
    let DatasetCommand::Emoji(args) = command;
    let start = std::time::Instant::now();
    let manifest = build_emoji_set(&args.options()?)?;
    eprintln!(
        "{}: {} images of {} emoji, {} classes, in {:.1} s",
        args.out.display(),
        manifest["images"],
        manifest["emoji"],
        manifest["subgroups"],
        start.elapsed().as_secs_f64()
    );
    for (style, s) in manifest["styles"].as_object().into_iter().flatten() {
        eprintln!("  {style}: {} drawn, {} skipped", s["drawn"], s["skipped"]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_or_are_refused() {
        assert_eq!(parse_colour("#ff8000").unwrap(), [255, 128, 0]);
        assert_eq!(parse_colour("ffffff").unwrap(), [255, 255, 255]);
        assert!(parse_colour("fff").is_err());
        assert!(parse_colour("gg0000").is_err());
    }
}
