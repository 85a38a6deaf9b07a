//! Host side of our WGSL kernels (`shaders/`): fused attention with ARD's trajectory masks and a
//! key/value cache. Split as burn's custom-kernel example splits its files: the kernel's layout
//! ([`tiling`]), its float64 definition ([`reference`]), a raw wgpu runner ([`runner`]) and the
//! burn backend extension the model calls ([`backend`]).

pub(crate) mod backend;
pub(crate) mod runner;
pub(crate) mod tiling;

pub use backend::*;
pub use runner::*;
pub use tiling::*;
