//! Captions from CLDR's English annotations (Debian's `unicode-cldr-core`): a short name
//! ("cat face") and keywords ("cat | face | pet") per emoji. `annotations/en.xml` covers the
//! base emoji, `annotationsDerived/en.xml` the sequences built from them (skin tones, ZWJ
//! roles, flags, keycaps). CLDR keys carry no U+FE0F.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{EngineError, Result};

/// Where Debian's `unicode-cldr-core` installs CLDR.
pub const CLDR_DIR: &str = "/usr/share/unicode/cldr";

/// An emoji's CLDR name and keywords.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Annotation {
    pub name: Option<String>,
    pub keywords: Vec<String>,
}

/// CLDR's English annotations, base and derived, keyed by the emoji without U+FE0F.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    entries: HashMap<String, Annotation>,
}

impl Annotations {
    /// Reads `common/annotations/en.xml` and `common/annotationsDerived/en.xml` under `cldr`.
    pub fn read(cldr: &Path) -> Result<Self> {
        let mut all = Self::default();
        for part in ["annotations", "annotationsDerived"] {
            let path = cldr.join("common").join(part).join("en.xml");
            let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => EngineError::DataNotFound(format!(
                    "{}: CLDR's annotations are missing (Debian: apt install unicode-cldr-core)",
                    path.display()
                )),
                _ => EngineError::io(&path, e),
            })?;
            all.add_xml(&text)
                .map_err(|m| EngineError::bad_file(&path, m))?;
        }
        Ok(all)
    }

    /// Adds the `<annotation>` elements of one LDML file.
    pub fn add_xml(&mut self, xml: &str) -> std::result::Result<(), String> {
        // LDML files declare their DTD; nothing in it is needed.
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc =
            roxmltree::Document::parse_with_options(xml, options).map_err(|e| e.to_string())?;
        for node in doc.descendants().filter(|n| n.has_tag_name("annotation")) {
            let (Some(cp), Some(text)) = (node.attribute("cp"), node.text()) else {
                continue;
            };
            let entry = self.entries.entry(strip_fe0f(cp)).or_default();
            if node.attribute("type") == Some("tts") {
                entry.name = Some(text.trim().to_string());
            } else {
                entry.keywords = text.split('|').map(|k| k.trim().to_string()).collect();
            }
        }
        Ok(())
    }

    /// The annotation of `emoji` (matched without U+FE0F), if CLDR has one.
    pub fn get(&self, emoji: &str) -> Option<&Annotation> {
        self.entries.get(&strip_fe0f(emoji))
    }
}

/// `s` without variation selector 16 (U+FE0F).
pub fn strip_fe0f(s: &str) -> String {
    s.chars().filter(|&c| c != '\u{FE0F}').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keywords_match_without_fe0f() {
        let mut a = Annotations::default();
        a.add_xml(
            "<ldml><annotations>\
             <annotation cp=\"🐱\">cat | face | pet</annotation>\
             <annotation cp=\"🐱\" type=\"tts\">cat face</annotation>\
             <annotation cp=\"❤\" type=\"tts\">red heart</annotation>\
             <annotation cp=\"&amp;\">ampersand | and</annotation>\
             </annotations></ldml>",
        )
        .unwrap();
        let cat = a.get("🐱").unwrap();
        assert_eq!(cat.name.as_deref(), Some("cat face"));
        assert_eq!(cat.keywords, ["cat", "face", "pet"]);
        assert_eq!(
            a.get("\u{2764}\u{FE0F}").unwrap().name.as_deref(),
            Some("red heart")
        );
        assert_eq!(a.get("&").unwrap().keywords, ["ampersand", "and"]);
        assert!(a.add_xml("<ldml><annotations>").is_err());
    }
}
