//! What a generation is conditioned on: class names and labels, and free-text prompts matched
//! to a class-conditional model's classes.

pub(crate) mod classes;
pub(crate) mod prompt;

pub use classes::*;
pub use prompt::*;
