//! Where a case's workers connect and what topology their queue gets,
//! when not the shared single-node brokers: the failover cases point the
//! workers at a local three-node cluster with replicated queues. The
//! runner declares the queue with the same topology the workers' routes
//! ask for, so that neither sees a divergence.

use wharf::{QueueType, Topology};

/// The broker URL (a comma list of the cluster's nodes).
pub const BROKER_URL: &str = "WHARF_BROKER_URL";
/// The NATS KV store's URL, when not the shared server.
pub const STORE_URL: &str = "WHARF_CLUSTER_STORE_URL";
/// The NATS KV store's replicas.
pub const STORE_REPLICAS: &str = "WHARF_CLUSTER_STORE_REPLICAS";
/// `quorum` for quorum work queues (RabbitMQ).
pub const QUEUE_TYPE: &str = "WHARF_CLUSTER_QUEUE_TYPE";
/// Replicas of the work, delay and dead-letter streams (NATS).
pub const STREAM_REPLICAS: &str = "WHARF_CLUSTER_STREAM_REPLICAS";

/// The topology `lookup` (a worker's environment, or the runner's list
/// of variables for its workers) asks for.
pub fn topology(lookup: impl Fn(&str) -> Option<String>) -> Topology {
    let mut topology = Topology::new();
    if lookup(QUEUE_TYPE).as_deref() == Some("quorum") {
        topology = topology.queue_type(QueueType::Quorum);
    }
    if let Some(replicas) = lookup(STREAM_REPLICAS) {
        topology.stream_replicas = Some(replicas.parse().expect("stream replicas are a number"));
    }
    topology
}

/// The value of `name` in a case's variables for its workers.
pub fn lookup_in<'a>(env: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    |name| env.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}
