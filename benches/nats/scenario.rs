//! The scenarios of the NATS bench and their names.

use crate::common::config::selected;
use crate::common::rounds::{PAIRS, Side};
use crate::retention::Retention;

/// Replicas of the stream of a `r1/…` or `r3/…` scenario, on the
/// three-server cluster the bench starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicas {
    R1,
    R3,
}

impl Replicas {
    pub const ALL: [Replicas; 2] = [Replicas::R1, Replicas::R3];

    pub fn count(self) -> usize {
        match self {
            Replicas::R1 => 1,
            Replicas::R3 => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Replicas::R1 => "r1",
            Replicas::R3 => "r3",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Replicas::R1 => "R1 stream, 3-server cluster",
            Replicas::R3 => "R3 stream, 3-server cluster",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A pre-filled stream on the shared server, as fast as it goes.
    Consume(Side),
    /// The same on a stream of so many replicas on the cluster.
    Replicated(Replicas, Side),
    /// Sequential requests: client, server.
    Rpc(Side, Side),
    /// Requests with many in flight: client, server.
    RpcInFlight(Side, Side),
    /// Raw async-nats only: `consume/raw` on a stream of this retention.
    Retention(Retention),
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        let mut all = vec![Scenario::Consume(Side::Raw), Scenario::Consume(Side::Wharf)];
        for replicas in Replicas::ALL {
            all.extend([Side::Raw, Side::Wharf].map(|side| Scenario::Replicated(replicas, side)));
        }
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::Rpc(c, s)));
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::RpcInFlight(c, s)));
        all.extend(Retention::ALL.into_iter().map(Scenario::Retention));
        all
    }

    pub fn name(self) -> String {
        match self {
            Scenario::Consume(side) => format!("consume/{}", side.name()),
            Scenario::Replicated(replicas, side) => format!("{}/{}", replicas.name(), side.name()),
            Scenario::Rpc(client, server) => format!("rr/{}-{}", client.name(), server.name()),
            Scenario::RpcInFlight(client, server) => {
                format!("rr64/{}-{}", client.name(), server.name())
            }
            Scenario::Retention(retention) => format!("retention/{}", retention.name()),
        }
    }

    /// Whether `WHARF_BENCH_ONLY`'s items select it: by name (see
    /// [`selected`]), or the item `topology` for the topology table's
    /// scenarios (`consume/…`, `r1/…`, `r3/…`).
    pub fn selected(self, only: &[String]) -> bool {
        selected(&self.name(), only)
            || (only.iter().any(|i| i == "topology")
                && matches!(self, Scenario::Consume(_) | Scenario::Replicated(..)))
    }

    /// Whether it runs on the cluster.
    pub fn on_cluster(self) -> bool {
        matches!(self, Scenario::Replicated(..))
    }
}
