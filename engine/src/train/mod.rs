//! Training: the one training loop every job runs (`training_loop.rs`), one step of it
//! (`trainer.rs`: AdamW, clipping, EMA, data-parallel shards), checkpoints and run folders that
//! resume exactly, the manifest of a run folder, the learning-rate schedule, the events a run reports, and the options every
//! job shares. The jobs themselves are in `jobs/`.

pub(crate) mod checkpoint;
pub(crate) mod ema;
pub(crate) mod events;
pub(crate) mod manifest;
pub(crate) mod optim;
pub(crate) mod options;
pub(crate) mod preview;
pub(crate) mod run_dir;
pub(crate) mod schedule;
pub(crate) mod trainer;
pub(crate) mod training_loop;

pub use checkpoint::*;
pub use ema::*;
pub use events::*;
pub use manifest::*;
pub use optim::*;
pub use options::*;
pub use preview::*;
pub use run_dir::*;
pub use schedule::*;
pub use trainer::*;
pub use training_loop::*;
