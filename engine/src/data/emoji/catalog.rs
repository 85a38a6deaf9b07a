//! Unicode's list of emoji (`emoji-test.txt`, Debian's `unicode-data`): every fully-qualified
//! emoji with its name and its group and subgroup, in the file's order.

use std::path::Path;

use crate::error::{EngineError, Result};

/// Where Debian's `unicode-data` installs the list.
pub const EMOJI_TEST: &str = "/usr/share/unicode/emoji/emoji-test.txt";

/// One fully-qualified emoji.
#[derive(Clone, Debug, PartialEq)]
pub struct Emoji {
    /// The emoji itself (its code points, variation selectors included).
    pub text: String,
    /// Upper-case hex code points joined by spaces, as the file writes them.
    pub codepoints: String,
    /// Unicode's short name (`grinning face`).
    pub name: String,
    pub group: String,
    pub subgroup: String,
    /// The Emoji version that added it (`15.0`).
    pub version: String,
}

/// The fully-qualified emoji of `emoji-test.txt` and the file's own version line.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub emoji: Vec<Emoji>,
    pub version: String,
}

impl Catalog {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::DataNotFound(format!(
                "{}: Unicode's emoji list is missing (Debian: apt install unicode-data)",
                path.display()
            )),
            _ => EngineError::io(path, e),
        })?;
        Self::parse(&text).map_err(|m| EngineError::bad_file(path, m))
    }

    /// Parses the file's text; a malformed entry line is an error naming it.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (mut group, mut subgroup, mut version) = (String::new(), String::new(), String::new());
        let mut emoji = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("# group:") {
                group = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("# subgroup:") {
                subgroup = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("# Version:") {
                version = rest.trim().to_string();
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let entry = parse_entry(line).ok_or_else(|| format!("line {}: {line:?}", n + 1))?;
                if entry.0 == "fully-qualified" {
                    let (_, text, codepoints, version, name) = entry;
                    emoji.push(Emoji {
                        text,
                        codepoints,
                        name,
                        group: group.clone(),
                        subgroup: subgroup.clone(),
                        version,
                    });
                }
            }
        }
        if emoji.is_empty() {
            return Err("no fully-qualified emoji".into());
        }
        Ok(Self { emoji, version })
    }

    /// The subgroups in the file's order (the class labels of the set).
    pub fn subgroups(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.emoji {
            if seen.last() != Some(&e.subgroup) && !seen.contains(&e.subgroup) {
                seen.push(e.subgroup.clone());
            }
        }
        seen
    }
}

/// `1F600 ; fully-qualified # 😀 E1.0 grinning face` → (status, emoji, code points, version,
/// name); the emoji must be the code points.
fn parse_entry(line: &str) -> Option<(String, String, String, String, String)> {
    let (fields, comment) = line.split_once('#')?;
    let (codes, status) = fields.split_once(';')?;
    let codepoints = codes.split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = codepoints
        .split(' ')
        .map(|c| u32::from_str_radix(c, 16).ok().and_then(char::from_u32))
        .collect::<Option<_>>()?;
    let comment = comment
        .trim_start()
        .strip_prefix(text.as_str())?
        .trim_start();
    let (version, name) = comment.strip_prefix('E')?.split_once(' ')?;
    Some((
        status.trim().to_string(),
        text,
        codepoints,
        version.to_string(),
        name.trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Version: 15.0\n# group: Smileys & Emotion\n# subgroup: face-smiling\n\
        1F600 ; fully-qualified # 😀 E1.0 grinning face\n\
        263A FE0F ; fully-qualified # ☺️ E0.6 smiling face\n\
        263A ; unqualified # ☺ E0.6 smiling face\n\
        # subgroup: face-affection\n\
        1F970 ; fully-qualified # 🥰 E11.0 smiling face with hearts\n";

    #[test]
    fn reads_fully_qualified_entries_with_their_subgroups() {
        let c = Catalog::parse(SAMPLE).unwrap();
        assert_eq!(c.version, "15.0");
        assert_eq!(c.emoji.len(), 3);
        assert_eq!(c.emoji[1].text, "\u{263A}\u{FE0F}");
        assert_eq!(c.emoji[1].name, "smiling face");
        assert_eq!(c.emoji[2].subgroup, "face-affection");
        assert_eq!(c.subgroups(), ["face-smiling", "face-affection"]);
        let bad = Catalog::parse("1F600 ; fully-qualified # 😃 E1.0 wrong emoji\n").unwrap_err();
        assert!(bad.contains("line 1"), "{bad}");
    }
}
