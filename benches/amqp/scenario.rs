//! The scenarios of the RabbitMQ bench and their names.

use crate::common::config::selected;
use crate::common::rounds::{PAIRS, Side};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A pre-filled queue, as fast as it goes.
    Consume(Consumer),
    /// Published at a fixed rate while consuming.
    Paced(Consumer),
    /// Sequential requests: client, server.
    Rpc(Side, Side),
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        let mut all: Vec<Scenario> = Consumer::ALL.into_iter().map(Scenario::Consume).collect();
        all.extend(Consumer::ALL.into_iter().map(Scenario::Paced));
        all.extend(
            PAIRS
                .into_iter()
                .map(|(client, server)| Scenario::Rpc(client, server)),
        );
        all
    }

    pub fn name(self) -> String {
        match self {
            Scenario::Consume(c) => format!("consume/{}", c.name()),
            Scenario::Paced(c) => format!("paced/{}", c.name()),
            Scenario::Rpc(client, server) => format!("rr/{}-{}", client.name(), server.name()),
        }
    }

    pub fn selected(self, only: &[String]) -> bool {
        selected(&self.name(), only)
    }
}
