//! Evaluation: the feature network and the metrics computed in its feature space.

pub(crate) mod feature_net;
pub(crate) mod metrics;

pub use feature_net::*;
pub use metrics::*;
