//! `ard dataset emoji`: every fully-qualified emoji drawn in each style, captioned from CLDR,
//! written as a captioned image set (`captions.tsv` beside `images/STYLE/*.png`) with a
//! manifest of sources, counts, what was skipped and why, and the licences. The same inputs
//! give the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Value, json};

use crate::data::captioned::{CAPTIONS_FILE, CAPTIONS_HEADER};
use crate::data::emoji::annotations::{Annotations, CLDR_DIR};
use crate::data::emoji::catalog::{Catalog, EMOJI_TEST, Emoji};
use crate::data::emoji::render::{NOTO_COLOR_EMOJI, NotoFont, Skip, SvgNaming, SvgSet};
use crate::error::{EngineError, Result};
use crate::io::writer::{file_fingerprint, write_atomically};

/// Side of the images by default.
pub const EMOJI_SIZE: u32 = 32;
/// The background every emoji is composited on by default (white).
pub const EMOJI_BACKGROUND: [u8; 3] = [255, 255, 255];

/// A style and where its drawings come from.
#[derive(Clone, Debug, PartialEq)]
pub enum StyleSource {
    /// Noto Color Emoji, from its font file.
    Noto(PathBuf),
    /// Twemoji, from the SVG folder of npm's `@twemoji/svg` (its `package/`).
    Twemoji(PathBuf),
    /// OpenMoji, from npm's `openmoji` (its root or its `color/svg/`).
    OpenMoji(PathBuf),
}

impl StyleSource {
    pub fn name(&self) -> &'static str {
        match self {
            StyleSource::Noto(_) => "noto",
            StyleSource::Twemoji(_) => "twemoji",
            StyleSource::OpenMoji(_) => "openmoji",
        }
    }

    fn path(&self) -> &Path {
        match self {
            StyleSource::Noto(p) | StyleSource::Twemoji(p) | StyleSource::OpenMoji(p) => p,
        }
    }

    /// The licence of the drawings, as the set's notice states it.
    fn licence(&self) -> &'static str {
        match self {
            StyleSource::Noto(_) => {
                "Noto Color Emoji, © Google LLC, SIL Open Font License 1.1 (Debian \
                 fonts-noto-color-emoji; /usr/share/doc/fonts-noto-color-emoji/copyright)"
            }
            StyleSource::Twemoji(_) => {
                "Twemoji graphics © Twitter, Inc. and other contributors (jdecked/twemoji), \
                 CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/); npm @twemoji/svg"
            }
            StyleSource::OpenMoji(_) => {
                "OpenMoji (openmoji.org), CC BY-SA 4.0 \
                 (https://creativecommons.org/licenses/by-sa/4.0/): images derived from it \
                 carry the same licence"
            }
        }
    }
}

/// What `ard dataset emoji` builds.
#[derive(Clone, Debug)]
pub struct EmojiSetOptions {
    pub out: PathBuf,
    pub size: u32,
    pub background: [u8; 3],
    pub styles: Vec<StyleSource>,
    pub emoji_test: PathBuf,
    pub cldr: PathBuf,
    /// Only the first this many emoji of the list (a quick set).
    pub limit: Option<usize>,
}

impl EmojiSetOptions {
    /// Debian's files, Noto only, the default size and background, into `out`.
    pub fn debian(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            size: EMOJI_SIZE,
            background: EMOJI_BACKGROUND,
            styles: vec![StyleSource::Noto(NOTO_COLOR_EMOJI.into())],
            emoji_test: EMOJI_TEST.into(),
            cldr: CLDR_DIR.into(),
            limit: None,
        }
    }
}

/// One row of `captions.tsv`.
struct Row {
    file: String,
    emoji: usize,
    style: &'static str,
}

/// Builds the set in a temporary folder beside `out` and renames it into place: a killed
/// build leaves no half set. Refuses an `out` that exists. Returns the manifest.
pub fn build_emoji_set(options: &EmojiSetOptions) -> Result<Value> {
    let out = &options.out;
    if out.exists() {
        return Err(EngineError::InvalidSetting(format!(
            "{} exists: choose a new folder (a set is built whole)",
            out.display()
        )));
    }
    if options.styles.is_empty() || !(8..=512).contains(&options.size) {
        return Err(EngineError::InvalidSetting(format!(
            "need at least one style and a size of 8 to 512 (got {})",
            options.size
        )));
    }
    let mut catalog = Catalog::read(&options.emoji_test)?;
    catalog.emoji.truncate(options.limit.unwrap_or(usize::MAX));
    let annotations = Annotations::read(&options.cldr)?;
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| EngineError::io(&partial, e))?;
    }
    let mut rows = Vec::new();
    let mut styles = Map::new();
    for style in &options.styles {
        let (drawn, skipped) = draw_style(style, &catalog.emoji, options, &partial)?;
        styles.insert(
            style.name().into(),
            style_summary(style, &drawn, &skipped, &catalog)?,
        );
        rows.extend(drawn);
    }
    let subgroups = catalog.subgroups();
    write_captions(&partial, &rows, &catalog.emoji, &annotations, &subgroups)?;
    let manifest = manifest(
        options,
        &catalog,
        &annotations,
        &subgroups,
        rows.len(),
        styles,
    )?;
    let text = serde_json::to_string_pretty(&manifest).expect("plain data") + "\n";
    write_atomically(&partial.join("manifest.json"), text.as_bytes())?;
    write_atomically(&partial.join("LICENSES.md"), licences(options).as_bytes())?;
    std::fs::rename(&partial, out).map_err(|e| EngineError::io(out, e))?;
    Ok(manifest)
}

type Map = serde_json::Map<String, Value>;

/// An emoji (its index in the list) a style has no image of, and why.
type Skipped = (usize, Skip);

/// Draws every emoji in `style` into `root/images/STYLE/`: the rows drawn and the skipped
/// (emoji index, reason).
fn draw_style(
    style: &StyleSource,
    emoji: &[Emoji],
    options: &EmojiSetOptions,
    root: &Path,
) -> Result<(Vec<Row>, Vec<Skipped>)> {
    let dir = root.join("images").join(style.name());
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let (size, bg) = (options.size, options.background);
    let font_bytes = match style {
        StyleSource::Noto(path) => Some(std::fs::read(path).map_err(|e| missing(path, e))?),
        _ => None,
    };
    let noto = match &font_bytes {
        Some(bytes) => {
            Some(NotoFont::new(bytes).map_err(|m| EngineError::bad_file(style.path(), m))?)
        }
        None => None,
    };
    let svg = svg_set(style)?;
    let results: Vec<std::result::Result<Row, Skipped>> = emoji
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            let drawn = match (&noto, &svg) {
                (Some(font), _) => font.draw(&e.text, size, bg),
                (None, Some(set)) => set.draw(&e.text, size, bg),
                (None, None) => unreachable!("every style has a source"),
            };
            let image = drawn.map_err(|skip| (i, skip))?;
            let name = format!("{}.png", e.codepoints.replace(' ', "-").to_lowercase());
            let path = dir.join(&name);
            image
                .save(&path)
                .map_err(|err| (i, Skip::Unreadable(format!("{}: {err}", path.display()))))?;
            Ok(Row {
                file: format!("images/{}/{name}", style.name()),
                emoji: i,
                style: style.name(),
            })
        })
        .collect();
    let (mut drawn, mut skipped) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(row) => drawn.push(row),
            Err(skip) => skipped.push(skip),
        }
    }
    Ok((drawn, skipped))
}

/// The SVG folder of an SVG style (none for a font).
fn svg_set(style: &StyleSource) -> Result<Option<SvgSet>> {
    let (dir, naming) = match style {
        StyleSource::Noto(_) => return Ok(None),
        StyleSource::Twemoji(dir) => (dir.clone(), SvgNaming::Twemoji),
        StyleSource::OpenMoji(dir) if dir.join("color/svg").is_dir() => {
            (dir.join("color/svg"), SvgNaming::OpenMoji)
        }
        StyleSource::OpenMoji(dir) => (dir.clone(), SvgNaming::OpenMoji),
    };
    let has_svg = std::fs::read_dir(&dir)
        .map_err(|e| missing(&dir, e))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "svg"));
    if !has_svg {
        return Err(EngineError::DataNotFound(format!(
            "{}: no SVG files for the {} style (see docs/text-to-image.md for fetching it)",
            dir.display(),
            style.name()
        )));
    }
    Ok(Some(SvgSet { dir, naming }))
}

fn missing(path: &Path, e: std::io::Error) -> EngineError {
    match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::DataNotFound(format!(
            "{}: not found (see docs/text-to-image.md for the sources of the emoji set)",
            path.display()
        )),
        _ => EngineError::io(path, e),
    }
}

/// A style's counts, skip reasons (with the skipped emoji) and source fingerprint.
fn style_summary(
    style: &StyleSource,
    drawn: &[Row],
    skipped: &[Skipped],
    catalog: &Catalog,
) -> Result<Value> {
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, skip) in skipped {
        let e = &catalog.emoji[*i];
        reasons
            .entry(format!("{skip:?}"))
            .or_default()
            .push(format!("{} {}", e.codepoints, e.name));
    }
    let source = match style {
        StyleSource::Noto(path) => json!({ "font": path, "fingerprint": file_fingerprint(path)? }),
        StyleSource::Twemoji(dir) | StyleSource::OpenMoji(dir) => {
            json!({ "folder": dir, "package": package_version(dir) })
        }
    };
    Ok(json!({
        "drawn": drawn.len(),
        "skipped": skipped.len(),
        "skipped_why": reasons,
        "source": source,
        "licence": style.licence(),
    }))
}

/// `name@version` from the npm `package.json` in `dir` or its parents, if any.
fn package_version(dir: &Path) -> Option<String> {
    dir.ancestors().take(3).find_map(|d| {
        let text = std::fs::read_to_string(d.join("package.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(format!(
            "{}@{}",
            v["name"].as_str()?,
            v["version"].as_str()?
        ))
    })
}

/// `captions.tsv`: one row per image, the emoji's subgroup as its class, its CLDR name and
/// keywords as its two caption forms (the list's own name where CLDR has none).
fn write_captions(
    root: &Path,
    rows: &[Row],
    emoji: &[Emoji],
    annotations: &Annotations,
    subgroups: &[String],
) -> Result<()> {
    let mut text = CAPTIONS_HEADER.join("\t") + "\tgroup\temoji\tcodepoints\tstyle\n";
    for row in rows {
        let e = &emoji[row.emoji];
        let a = annotations.get(&e.text).cloned().unwrap_or_default();
        let name = a.name.unwrap_or_else(|| e.name.clone());
        let keywords = a.keywords.join(", ");
        debug_assert!(subgroups.contains(&e.subgroup));
        let cells = [
            row.file.as_str(),
            &e.subgroup,
            &name,
            &keywords,
            &e.group,
            &e.text,
            &e.codepoints,
            row.style,
        ];
        text += &(cells.map(|c| c.replace(['\t', '\n'], " ")).join("\t") + "\n");
    }
    write_atomically(&root.join(CAPTIONS_FILE), text.as_bytes())
}

/// The set's manifest: sources with fingerprints, counts, styles, licences.
fn manifest(
    options: &EmojiSetOptions,
    catalog: &Catalog,
    annotations: &Annotations,
    subgroups: &[String],
    images: usize,
    styles: Map,
) -> Result<Value> {
    let cldr_en = options.cldr.join("common/annotations/en.xml");
    let cldr_derived = options.cldr.join("common/annotationsDerived/en.xml");
    let groups: std::collections::BTreeSet<&str> =
        catalog.emoji.iter().map(|e| e.group.as_str()).collect();
    let named = catalog
        .emoji
        .iter()
        .filter(|e| annotations.get(&e.text).is_some_and(|a| a.name.is_some()))
        .count();
    Ok(json!({
        "format": "captioned image set: captions.tsv (file, class, caption_*) and images/",
        "command": "ard dataset emoji",
        "size": options.size,
        "background": options.background,
        "emoji": catalog.emoji.len(),
        "images": images,
        "groups": groups.len(),
        "subgroups": subgroups.len(),
        "classes": subgroups,
        "captions": {
            "forms": ["caption_name", "caption_keywords"],
            "named_by_cldr": named,
            "named_by_the_list_only": catalog.emoji.len() - named,
        },
        "styles": styles,
        "sources": {
            "emoji_test": { "path": options.emoji_test, "version": catalog.version,
                "fingerprint": file_fingerprint(&options.emoji_test)? },
            "cldr_annotations": { "path": cldr_en, "fingerprint": file_fingerprint(&cldr_en)? },
            "cldr_derived": { "path": cldr_derived, "fingerprint": file_fingerprint(&cldr_derived)? },
        },
        "licences": "LICENSES.md",
    }))
}

/// The notices the set carries (`LICENSES.md`).
fn licences(options: &EmojiSetOptions) -> String {
    let mut text = String::from(
        "# Licences of this emoji set\n\n\
         Built by `ard dataset emoji` (ARD Studio). The images are drawings of emoji rasterised \
         to small RGB squares; the captions are CLDR's English annotations.\n\n\
         - Emoji list: Unicode `emoji-test.txt`, © Unicode, Inc., Unicode License (Data Files \
         and Software); /usr/share/doc/unicode-data/copyright.\n\
         - Captions: Unicode CLDR annotations, © Unicode, Inc., Unicode-DFS-2016; \
         /usr/share/doc/unicode-cldr-core/copyright.\n",
    );
    for style in &options.styles {
        text += &format!(
            "- Images in `images/{}/`: {}.\n",
            style.name(),
            style.licence()
        );
    }
    text
}
