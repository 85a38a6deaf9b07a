//! Training: the options and their defaults (defined once, in `options.rs`), the optimisation
//! loop (AdamW, gradient clipping, EMA, checkpoints), the long jobs (teacher training,
//! distillation) and the teacher → trajectories → distillation pipeline the app runs.

pub(crate) mod checkpoint;
pub(crate) mod ema;
pub(crate) mod jobs;
pub(crate) mod optim;
pub(crate) mod options;
pub(crate) mod pipeline;
pub(crate) mod trainer;

pub use checkpoint::*;
pub use ema::*;
pub use jobs::*;
pub use optim::*;
pub use options::*;
pub use pipeline::*;
pub use trainer::*;
