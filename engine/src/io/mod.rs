//! Files and host memory: weight files, host tensors, image previews, PNG settings.

pub(crate) mod host;
pub mod png_settings;
pub mod preview;
pub(crate) mod weights;
pub(crate) mod writer;

pub use host::*;
pub use preview::*;
pub use weights::*;
pub use writer::*;
