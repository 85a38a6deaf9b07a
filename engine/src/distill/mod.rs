//! Distillation data and objective: the teacher's trajectory sets and the student's
//! teacher-forced regression loss (Kim et al., CVPR 2025).

pub(crate) mod loss;
pub(crate) mod self_forcing;
pub(crate) mod trajectories;

pub use loss::*;
pub use self_forcing::*;
pub use trajectories::*;
