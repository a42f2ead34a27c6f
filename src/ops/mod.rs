//! Operating a worker: health and readiness, the HTTP probe and metrics
//! listener, Prometheus metrics, per-route counters, the connection
//! monitor, and dead-letter inspection and replay.

pub(crate) mod dead_letters;
pub(crate) mod health;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod monitor;
pub(crate) mod stats;
