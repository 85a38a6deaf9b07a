//! Evaluation: the feature network, the metrics computed in its feature space, and the
//! evaluation points a training run records as it goes.

pub(crate) mod feature_net;
pub(crate) mod flops;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod step_error;

pub use feature_net::*;
pub use flops::*;
pub use metrics::*;
pub use monitor::*;
pub use step_error::*;
