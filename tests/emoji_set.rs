//! `ard dataset emoji` on Debian's files (unicode-data, unicode-cldr-core,
//! fonts-noto-color-emoji; CI installs them) and a few Twemoji SVGs: the set is captioned and
//! labelled as the list and CLDR say, rebuilt byte for byte, and loads as a captioned set and
//! as a class-conditional dataset. Bad folders and caption files are refused clearly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ard_app::cli::run_args;
use ard_engine::data::emoji::{NOTO_COLOR_EMOJI, NotoFont};
use ard_engine::data::{Split, load_captioned, load_dataset};

fn debian_files(what: &str) -> bool {
    let needed = [
        NOTO_COLOR_EMOJI,
        ard_engine::data::emoji::EMOJI_TEST,
        "/usr/share/unicode/cldr/common/annotations/en.xml",
    ];
    match needed.iter().find(|p| !Path::new(p).exists()) {
        None => true,
        Some(p) => {
            ard_studio::skip(
                what,
                &format!(
                    "{p} is missing (apt install unicode-data unicode-cldr-core fonts-noto-color-emoji)"
                ),
            );
            false
        }
    }
}

fn twemoji() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/emoji/twemoji")
        .display()
        .to_string()
}

fn build(out: &Path, limit: usize) -> anyhow::Result<()> {
    run_args([
        "ard",
        "dataset",
        "emoji",
        "--out",
        &out.display().to_string(),
        "--twemoji",
        &twemoji(),
        "--limit",
        &limit.to_string(),
    ])
}

/// Every file under `dir` by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

#[test]
fn the_emoji_set_is_captioned_rebuilt_identically_and_loads() {
    if !debian_files("the emoji set") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    build(&a, 6).unwrap();
    build(&b, 6).unwrap();
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    assert!(ta == tb, "a rebuild differs");
    // 6 Noto drawings; Twemoji has files for the first 5 only, and says why the sixth is missing.
    let m: serde_json::Value = serde_json::from_slice(&ta[Path::new("manifest.json")]).unwrap();
    assert_eq!(m["emoji"], 6);
    assert_eq!(m["images"], 11);
    assert_eq!(m["styles"]["noto"]["drawn"], 6);
    assert_eq!(
        m["styles"]["twemoji"]["skipped_why"]["NoFile"][0],
        "1F605 grinning face with sweat"
    );
    let licences = String::from_utf8(ta[Path::new("LICENSES.md")].clone()).unwrap();
    assert!(licences.contains("CC-BY 4.0") && licences.contains("Open Font License"));
    let captions = String::from_utf8(ta[Path::new("captions.tsv")].clone()).unwrap();
    assert!(
        captions.contains(
            "images/noto/1f600.png\tface-smiling\tgrinning face\tface, grin, grinning face"
        ),
        "{captions}"
    );
    // As a captioned set and as a class-conditional one.
    let set = load_captioned(&a, 16, 3).unwrap();
    assert_eq!(set.data.images.shape, [11, 3, 16, 16]);
    assert_eq!(set.data.class_names, ["face-smiling"]);
    assert_eq!(
        set.captions[0],
        ["grinning face", "face, grin, grinning face"]
    );
    let plain = load_dataset(&a.display().to_string(), 16, 3, Split::Train).unwrap();
    assert_eq!(plain.len(), 11);
    // A finished set is never overwritten.
    let err = build(&a, 6).unwrap_err().to_string();
    assert!(err.contains("exists"), "{err}");
}

/// Sequences the font draws as one glyph: a ZWJ family, a flag, a skin tone, a keycap.
#[test]
fn noto_draws_sequences_as_one_glyph() {
    if !debian_files("Noto sequences") {
        return;
    }
    let bytes = std::fs::read(NOTO_COLOR_EMOJI).unwrap();
    let font = NotoFont::new(&bytes).unwrap();
    for emoji in ["👨‍👩‍👧", "🇫🇷", "👍🏽", "#️⃣", "🏳️‍🌈"] {
        let image = font.draw(emoji, 32, [255, 255, 255]).unwrap();
        let distinct: std::collections::HashSet<_> = image.pixels().collect();
        assert!(distinct.len() > 20, "{emoji}: {} colours", distinct.len());
    }
    assert!(font.draw("ab", 32, [255, 255, 255]).is_err(), "two glyphs");
}

#[test]
fn missing_sources_and_caption_files_are_named() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("set");
    let err = run_args([
        "ard",
        "dataset",
        "emoji",
        "--out",
        &out.display().to_string(),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("--twemoji"), "{err}");
    let err = run_args([
        "ard",
        "dataset",
        "emoji",
        "--out",
        &out.display().to_string(),
        "--emoji-test",
        "/nonexistent/emoji-test.txt",
        "--styles",
        "noto",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("unicode-data"), "{err}");
    assert!(!out.exists());
    // A captioned ImageFolder with an image whose caption file is missing.
    let folder = root.path().join("folder/cats");
    std::fs::create_dir_all(&folder).unwrap();
    for name in ["a", "b"] {
        image::RgbImage::new(8, 8)
            .save(folder.join(format!("{name}.png")))
            .unwrap();
    }
    std::fs::write(folder.join("a.txt"), "a black cat\n").unwrap();
    let err = load_captioned(&root.path().join("folder"), 8, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b.txt") && err.contains("no caption file"),
        "{err}"
    );
    std::fs::write(folder.join("b.txt"), "another cat\nkitty\n").unwrap();
    let set = load_captioned(&root.path().join("folder"), 8, 3).unwrap();
    assert_eq!(set.captions[1], ["another cat", "kitty"]);
    // A caption table naming an image that is not there.
    let table = root.path().join("table");
    std::fs::create_dir_all(&table).unwrap();
    std::fs::write(
        table.join("captions.tsv"),
        "file\tcaption\nmissing.png\ta cat\n",
    )
    .unwrap();
    let err = load_captioned(&table, 8, 3).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("missing.png"),
        "{err}"
    );
}
