//! Training and evaluation data: datasets, class names and prompt matching.

pub(crate) mod classes;
pub(crate) mod datasets;
pub(crate) mod latents;

pub use classes::*;
pub use datasets::*;
pub use latents::*;
