//! The app's engine thread ([`Studio`]) and the request/event protocol the window speaks to it.

pub(crate) mod display;
pub(crate) mod engine;
pub(crate) mod pipeline;
pub(crate) mod protocol;

pub use display::model_info;
pub use engine::*;
pub use pipeline::run_pipeline;
pub use protocol::*;
