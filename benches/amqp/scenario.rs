//! The scenarios of the RabbitMQ bench and their names.

use crate::common::config::selected;
use crate::common::rounds::{PAIRS, Side};
use wharf::QueueType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    RawAckEach,
    RawAck64,
    Wharf,
}

impl Consumer {
    pub const ALL: [Consumer; 3] = [Consumer::RawAckEach, Consumer::RawAck64, Consumer::Wharf];

    pub fn name(self) -> &'static str {
        match self {
            Consumer::RawAckEach => "raw-ack-each",
            Consumer::RawAck64 => "raw-ack-64",
            Consumer::Wharf => "wharf",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Consumer::RawAckEach => "raw lapin, awaited ack per message",
            Consumer::RawAck64 => "raw lapin, multiple ack per 64",
            Consumer::Wharf => "wharf handler (decode + ack)",
        }
    }
}

/// Where a consume scenario's queue lives, and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A classic queue on the shared node (the `consume/…` scenarios).
    Classic,
    /// A quorum queue on the shared node: a Raft log of one member, still
    /// written and fsynced before a publish is confirmed.
    Quorum,
    /// A classic queue on node 1 of a three-node cluster the bench starts
    /// (`WHARF_BENCH_RABBIT_CLUSTER=1`).
    ClusterClassic,
    /// A quorum queue on that cluster: three members, its leader on node 1.
    ClusterQuorum,
}

impl Layout {
    /// In the topology table's order.
    pub const ALL: [Layout; 4] = [
        Layout::Classic,
        Layout::Quorum,
        Layout::ClusterClassic,
        Layout::ClusterQuorum,
    ];

    /// The first part of its scenarios' names.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Classic => "consume",
            Layout::Quorum => "quorum",
            Layout::ClusterClassic => "cluster-classic",
            Layout::ClusterQuorum => "cluster-quorum",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Layout::Classic => "classic, shared node",
            Layout::Quorum => "quorum, shared node (1 member)",
            Layout::ClusterClassic => "classic, 3-node cluster",
            Layout::ClusterQuorum => "quorum, 3-node cluster (3 members)",
        }
    }

    pub fn queue_type(self) -> QueueType {
        match self {
            Layout::Classic | Layout::ClusterClassic => QueueType::Classic,
            Layout::Quorum | Layout::ClusterQuorum => QueueType::Quorum,
        }
    }

    /// Whether its queues are on the cluster the bench starts.
    pub fn on_cluster(self) -> bool {
        matches!(self, Layout::ClusterClassic | Layout::ClusterQuorum)
    }
}

/// The consumers compared across layouts: the raw loop with `multiple`
/// acks (what wharf's coalesced acks compare with) and wharf.
pub const TOPOLOGY_CONSUMERS: [Consumer; 2] = [Consumer::RawAck64, Consumer::Wharf];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A pre-filled queue, as fast as it goes.
    Consume(Consumer, Layout),
    /// Published at a fixed rate while consuming.
    Paced(Consumer),
    /// Sequential requests on the shared node: client, server, and the
    /// type of the request queue.
    Rpc(Side, Side, QueueType),
}

/// The request/reply pairings also run on a quorum request queue.
pub const QUORUM_PAIRS: [(Side, Side); 2] = [(Side::Raw, Side::Raw), (Side::Wharf, Side::Wharf)];

impl Scenario {
    /// Every scenario; those on the three-node cluster only with `cluster`.
    pub fn all(cluster: bool) -> Vec<Scenario> {
        let mut all: Vec<Scenario> = Consumer::ALL
            .into_iter()
            .map(|c| Scenario::Consume(c, Layout::Classic))
            .collect();
        for layout in Layout::ALL {
            if layout == Layout::Classic || (layout.on_cluster() && !cluster) {
                continue;
            }
            all.extend(TOPOLOGY_CONSUMERS.map(|c| Scenario::Consume(c, layout)));
        }
        all.extend(Consumer::ALL.into_iter().map(Scenario::Paced));
        all.extend(
            PAIRS
                .into_iter()
                .map(|(client, server)| Scenario::Rpc(client, server, QueueType::Classic)),
        );
        all.extend(
            QUORUM_PAIRS
                .into_iter()
                .map(|(client, server)| Scenario::Rpc(client, server, QueueType::Quorum)),
        );
        all
    }

    pub fn name(self) -> String {
        match self {
            Scenario::Consume(c, layout) => format!("{}/{}", layout.name(), c.name()),
            Scenario::Paced(c) => format!("paced/{}", c.name()),
            Scenario::Rpc(client, server, queue_type) => {
                let kind = match queue_type {
                    QueueType::Classic => "rr",
                    QueueType::Quorum => "rr-quorum",
                };
                format!("{kind}/{}-{}", client.name(), server.name())
            }
        }
    }

    /// Whether `WHARF_BENCH_ONLY`'s items select it: by name (see
    /// [`selected`]), or the item `topology` for the topology table's
    /// scenarios (raw `multiple` ack and wharf in every layout; raw → raw
    /// and wharf → wharf request/reply on either queue type).
    pub fn selected(self, only: &[String]) -> bool {
        selected(&self.name(), only) || (only.iter().any(|i| i == "topology") && self.in_topology_table())
    }

    /// Whether the topology tables show it.
    pub fn in_topology_table(self) -> bool {
        match self {
            Scenario::Consume(c, _) => TOPOLOGY_CONSUMERS.contains(&c),
            Scenario::Rpc(c, s, _) => QUORUM_PAIRS.contains(&(c, s)),
            Scenario::Paced(_) => false,
        }
    }

    /// Whether it runs on the three-node cluster.
    pub fn on_cluster(self) -> bool {
        matches!(self, Scenario::Consume(_, layout) if layout.on_cluster())
    }
}
