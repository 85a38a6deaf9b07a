//! Class names: label lists for the known datasets, and resolving a typed name to a label.
//!
//! A class name may list synonyms separated by commas; the first is the one displayed
//! ("tench, Tinca tinca").

use crate::error::{EngineError, Result};

const IMAGENET_TSV: &str = include_str!("../../../assets/imagenet_classes.tsv");

/// The 1000 ImageNet classes in the standard order, each with its synonyms.
pub fn imagenet() -> Vec<String> {
    IMAGENET_TSV
        .lines()
        .skip(1)
        .filter_map(|line| line.split('\t').nth(2).map(str::to_string))
        .collect()
}

/// Fashion-MNIST's 10 classes in label order.
pub fn fashion_mnist() -> Vec<String> {
    [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The displayed part of a class name.
pub fn display_name(name: &str) -> &str {
    name.split(',').next().unwrap_or(name).trim()
}

/// Resolves one label given as an index or a class name (any synonym, any case).
pub fn resolve_label(item: &str, num_classes: usize, names: Option<&[String]>) -> Result<i64> {
    let item = item.trim();
    let label = match item.parse::<i64>() {
        Ok(v) => v,
        Err(_) => names
            .and_then(|names| {
                names.iter().position(|n| {
                    n.split(',')
                        .any(|syn| syn.trim().eq_ignore_ascii_case(item))
                })
            })
            .map(|i| i as i64)
            .ok_or_else(|| {
                EngineError::Input(if names.is_some() {
                    format!("unknown class `{item}`: no class has that name")
                } else {
                    format!(
                        "unknown class `{item}`: this model has no class names, use 0..={}",
                        num_classes - 1
                    )
                })
            })?,
    };
    if label < 0 || label >= num_classes as i64 {
        return Err(EngineError::Input(format!(
            "unknown class {label}: the model has {num_classes} classes (0..={})",
            num_classes - 1
        )));
    }
    Ok(label)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_list_is_complete_and_ordered() {
        let names = imagenet();
        assert_eq!(names.len(), 1000);
        assert_eq!(display_name(&names[0]), "tench");
        assert_eq!(resolve_label("goldfish", 1000, Some(&names)).unwrap(), 1);
        assert_eq!(
            resolve_label("Carcharodon carcharias", 1000, Some(&names)).unwrap(),
            2
        );
        assert_eq!(resolve_label("207", 1000, Some(&names)).unwrap(), 207);
        assert!(resolve_label("unicorn", 1000, Some(&names)).is_err());
        assert!(resolve_label("1000", 1000, Some(&names)).is_err());
        assert!(resolve_label("-1", 1000, None).is_err());
    }

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
    }
}
