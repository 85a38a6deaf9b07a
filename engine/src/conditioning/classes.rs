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

/// The displayed name of the class `labels` start with (what a saved image records), when the
/// model names its classes.
pub fn first_class_name(labels: &[i64], names: &[String]) -> Option<String> {
    let label = usize::try_from(*labels.first()?).ok()?;
    names.get(label).map(|n| display_name(n).to_string())
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
                EngineError::UnknownClass(if names.is_some() {
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
        return Err(EngineError::UnknownClass(format!(
            "unknown class {label}: the model has {num_classes} classes (0..={})",
            num_classes - 1
        )));
    }
    Ok(label)
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
}
