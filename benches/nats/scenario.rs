//! The scenarios of the NATS bench and their names.

use crate::common::config::selected;
use crate::common::rounds::{PAIRS, Side};
use crate::retention::Retention;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A pre-filled stream, as fast as it goes.
    Consume(Side),
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
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::Rpc(c, s)));
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::RpcInFlight(c, s)));
        all.extend(Retention::ALL.into_iter().map(Scenario::Retention));
        all
    }

    pub fn name(self) -> String {
        match self {
            Scenario::Consume(side) => format!("consume/{}", side.name()),
            Scenario::Rpc(client, server) => format!("rr/{}-{}", client.name(), server.name()),
            Scenario::RpcInFlight(client, server) => {
                format!("rr64/{}-{}", client.name(), server.name())
            }
            Scenario::Retention(retention) => format!("retention/{}", retention.name()),
        }
    }

    pub fn selected(self, only: &[String]) -> bool {
        selected(&self.name(), only)
    }
}
