//! The training jobs, each on the one training loop (`train/`): the teacher (class or text),
//! distillation, stage 2; and the feature network that evaluation uses.

pub(crate) mod captions;
pub(crate) mod distill;
pub(crate) mod feature_net;
pub(crate) mod stage2;
pub(crate) mod teacher;

pub use captions::*;
pub use distill::*;
pub use feature_net::*;
pub use stage2::*;
pub use teacher::*;
