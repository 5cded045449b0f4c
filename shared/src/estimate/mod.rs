//! The estimate: one model file ([`model_file`]) loaded as an
//! [`Estimator`](estimator::Estimator) that blends the members into a price
//! and range, its reasons ([`explain`]), and how estimates are scored
//! ([`metrics`]).

pub mod adapt;
pub mod estimator;
pub mod explain;
pub mod metrics;
pub mod model_file;
