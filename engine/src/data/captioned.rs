//! Captioned image sets, for text-conditioned models: a folder with `captions.tsv` (a header
//! naming `file`, optionally `class`, and one or more `caption_*` columns: the forms a caption
//! can take, one drawn per training example), or an ImageFolder tree with a caption file
//! beside each image (`cat.png` + `cat.txt`, one form per line).

use std::path::{Path, PathBuf};

use crate::data::datasets::{Dataset, image_pixels, list_image_folder, open_image};
use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;

/// The caption table of a captioned folder.
pub const CAPTIONS_FILE: &str = "captions.tsv";
/// The columns `ard dataset emoji` writes first (further columns are kept for people).
pub const CAPTIONS_HEADER: [&str; 4] = ["file", "class", "caption_name", "caption_keywords"];

/// Images with their labels (the `class` column, or the ImageFolder's folders) and, per image,
/// its caption forms (never empty).
#[derive(Clone, Debug)]
pub struct CaptionedSet {
    pub data: Dataset,
    pub captions: Vec<Vec<String>>,
}

/// Whether `dir` holds a caption table.
pub fn is_captioned_folder(dir: &Path) -> bool {
    dir.join(CAPTIONS_FILE).is_file()
}

/// Reads a captioned set at `size`×`size` with `channels` channels: the caption table when
/// `dir` has one, otherwise an ImageFolder tree whose every image has a `.txt` beside it.
pub fn load_captioned(dir: &Path, size: usize, channels: usize) -> Result<CaptionedSet> {
    let (files, labels, class_names, captions) = if is_captioned_folder(dir) {
        read_table(dir)?
    } else {
        read_caption_files(dir)?
    };
    let mut pixels = Vec::with_capacity(files.len() * channels * size * size);
    for f in &files {
        pixels.extend(image_pixels(&open_image(f)?, size, channels));
    }
    Ok(CaptionedSet {
        data: Dataset {
            images: HostTensor::new(vec![files.len(), channels, size, size], pixels),
            labels,
            class_names,
        },
        captions,
    })
}

type Listing = (Vec<PathBuf>, Vec<i64>, Vec<String>, Vec<Vec<String>>);

/// `captions.tsv`: files, labels (classes in order of first appearance; one class `image`
/// without a `class` column), class names, caption forms.
fn read_table(dir: &Path) -> Result<Listing> {
    let path = dir.join(CAPTIONS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
    let bad = |m: String| EngineError::bad_file(&path, m);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let file_col = column("file").ok_or_else(|| bad("the header has no `file` column".into()))?;
    let class_col = column("class");
    let caption_cols: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("caption"))
        .collect();
    if caption_cols.is_empty() {
        return Err(bad("the header has no `caption…` column".into()));
    }
    let (mut files, mut labels, mut classes, mut captions) = (vec![], vec![], vec![], vec![]);
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let row = n + 2;
        let cell = |i: usize| cells.get(i).copied().unwrap_or("").trim();
        let file = dir.join(cell(file_col));
        if cell(file_col).is_empty() || !file.is_file() {
            return Err(bad(format!(
                "line {row}: image {:?} not found",
                cell(file_col)
            )));
        }
        let forms: Vec<String> = caption_cols
            .iter()
            .map(|&i| cell(i).to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if forms.is_empty() {
            return Err(bad(format!(
                "line {row}: {} has no caption",
                cell(file_col)
            )));
        }
        let class = class_col.map_or("image", cell).to_string();
        let label = match classes.iter().position(|c| *c == class) {
            Some(l) => l,
            None => {
                classes.push(class);
                classes.len() - 1
            }
        };
        files.push(file);
        labels.push(label as i64);
        captions.push(forms);
    }
    if files.is_empty() {
        return Err(bad("no images listed".into()));
    }
    Ok((files, labels, classes, captions))
}

/// An ImageFolder tree with `IMAGE.txt` beside each image.
fn read_caption_files(dir: &Path) -> Result<Listing> {
    let (classes, items) = list_image_folder(dir, None)?;
    let (mut files, mut labels, mut captions) = (vec![], vec![], vec![]);
    for (file, label) in items {
        let txt = file.with_extension("txt");
        let text = std::fs::read_to_string(&txt).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::DataNotFound(format!(
                "{}: no caption file for this image (a captioned ImageFolder needs a .txt beside \
                 each image, or a {CAPTIONS_FILE} in {})",
                txt.display(),
                dir.display()
            )),
            _ => EngineError::io(&txt, e),
        })?;
        let forms: Vec<String> = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if forms.is_empty() {
            return Err(EngineError::bad_file(&txt, "empty caption file"));
        }
        files.push(file);
        labels.push(label);
        captions.push(forms);
    }
    Ok((files, labels, classes, captions))
}
