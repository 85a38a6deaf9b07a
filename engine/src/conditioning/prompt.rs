//! Free-text prompts for class-conditional models: ranking the classes a prompt may mean by
//! their names and synonyms.

use crate::conditioning::classes::display_name;
use crate::error::{EngineError, Result};

/// A class a prompt may mean, best first in [`match_prompt`]'s list.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptMatch {
    pub label: usize,
    /// The synonym that matched.
    pub matched: String,
    /// Higher is better; a whole synonym found in the prompt scores at least 100.
    pub score: f32,
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "picture", "image", "some", "my",
];

/// Lowercase words with a light English plural folded ("dresses" → "dress", "boots" → "boot").
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            if let Some(stem) = w.strip_suffix("ies").filter(|s| s.len() > 2) {
                format!("{stem}y")
            } else if ["ses", "xes", "ches", "shes"]
                .iter()
                .any(|e| w.ends_with(e))
            {
                w[..w.len() - 2].to_string()
            } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_string()
            } else {
                w
            }
        })
        .collect()
}

/// Ranks the classes a free-text prompt may mean by their names and synonyms: a synonym found
/// whole in the prompt wins (longer synonyms first), then partial word overlap. Classes with no
/// word in common with the prompt are left out.
pub fn match_prompt(prompt: &str, names: &[String]) -> Vec<PromptMatch> {
    let prompt_words = words(prompt);
    let content: Vec<&String> = prompt_words
        .iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect();
    let mut matches: Vec<PromptMatch> = names
        .iter()
        .enumerate()
        .filter_map(|(label, name)| {
            name.split(',')
                .map(str::trim)
                .filter(|syn| !syn.is_empty())
                .filter_map(|syn| {
                    let syn_words = words(syn);
                    if syn_words.is_empty() {
                        return None;
                    }
                    let whole = prompt_words
                        .windows(syn_words.len())
                        .any(|w| w == syn_words.as_slice());
                    let score = if whole {
                        100.0 + 10.0 * syn_words.len() as f32
                    } else {
                        let shared = syn_words
                            .iter()
                            .filter(|w| !STOP_WORDS.contains(&w.as_str()) && content.contains(w))
                            .count();
                        50.0 * shared as f32 / syn_words.len() as f32
                    };
                    (score > 0.0).then(|| PromptMatch {
                        label,
                        matched: syn.to_string(),
                        score,
                    })
                })
                .max_by(|a, b| a.score.total_cmp(&b.score))
        })
        .collect();
    matches.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.label.cmp(&b.label)));
    matches
}

/// The classes `prompt` may mean for a class-conditional model with class `names`, best first
/// (never empty), or an error naming the model's classes when none matches.
pub fn resolve_prompt(prompt: &str, names: Option<&[String]>) -> Result<Vec<PromptMatch>> {
    let Some(names) = names else {
        return Err(EngineError::UnknownClass(
            "this class-conditional model has no class names to match a prompt against: give class labels".into(),
        ));
    };
    let matches = match_prompt(prompt, names);
    if matches.is_empty() {
        let classes: Vec<&str> = names.iter().map(|n| display_name(n)).collect();
        return Err(EngineError::UnknownClass(format!(
            "no class of this class-conditional model matches `{prompt}`; its classes: {}",
            classes.join(", ")
        )));
    }
    Ok(matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditioning::classes::{fashion_mnist, imagenet};

    #[test]
    fn prompts_resolve_by_names_and_synonyms() {
        let imagenet = imagenet();
        let best = |p: &str, names: &[String]| match_prompt(p, names).first().map(|m| m.label);
        assert_eq!(best("a photo of a golden retriever", &imagenet), Some(207));
        assert_eq!(
            best("Carcharodon carcharias in the sea", &imagenet),
            Some(2)
        );
        assert_eq!(best("goldfish", &imagenet), Some(1));
        let fashion = fashion_mnist();
        assert_eq!(best("red sneakers", &fashion), Some(7));
        assert_eq!(best("two dresses", &fashion), Some(3));
        assert_eq!(best("ankle boots", &fashion), Some(9));
        // "boot" alone is only part of "Ankle boot": still found, with a lower score.
        let boot = match_prompt("boot", &fashion);
        assert_eq!(boot[0].label, 9);
        assert!(boot[0].score < 100.0);
        assert!(match_prompt("a unicorn", &fashion).is_empty());
        // Alternatives come after the best match.
        assert!(match_prompt("shark", &imagenet).len() > 1);
        let err = resolve_prompt("a unicorn", Some(&fashion)).unwrap_err();
        assert!(matches!(err, EngineError::UnknownClass(_)), "{err:?}");
        assert!(err.to_string().contains("Ankle boot"), "{err}");
        assert!(matches!(
            resolve_prompt("boots", None),
            Err(EngineError::UnknownClass(_))
        ));
    }
}
