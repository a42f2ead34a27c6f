//! The broker × store pairs every case runs on.

use crate::{AMQP_QUORUM_URL, AMQP_URL, NATS_URL};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Amqp,
    /// RabbitMQ with quorum work queues (`?queue_type=quorum`).
    AmqpQuorum,
    Nats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    NatsKv,
}

#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub broker: BrokerKind,
    pub store: StoreKind,
}

impl Pair {
    pub fn name(self) -> String {
        let broker = match self.broker {
            BrokerKind::Amqp => "amqp",
            BrokerKind::AmqpQuorum => "amqp-quorum",
            BrokerKind::Nats => "nats",
        };
        let store = match self.store {
            StoreKind::Redis => "redis",
            StoreKind::NatsKv => "natskv",
        };
        format!("{broker}+{store}")
    }

    pub fn broker_url(self) -> &'static str {
        match self.broker {
            BrokerKind::Amqp => AMQP_URL,
            BrokerKind::AmqpQuorum => AMQP_QUORUM_URL,
            BrokerKind::Nats => NATS_URL,
        }
    }
}

pub const PAIRS: [Pair; 4] = [
    Pair {
        broker: BrokerKind::Amqp,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::Amqp,
        store: StoreKind::NatsKv,
    },
    Pair {
        broker: BrokerKind::Nats,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::Nats,
        store: StoreKind::NatsKv,
    },
];

/// Quorum queues run the case where a killed worker's deliveries come back
/// counted (`x-delivery-count`) and wait for its claims' leases to run out.
pub const QUORUM_PAIRS: [Pair; 2] = [
    Pair {
        broker: BrokerKind::AmqpQuorum,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::AmqpQuorum,
        store: StoreKind::NatsKv,
    },
];

/// The failover cases: each broker on a local three-node cluster (the
/// case's own, not the shared broker), NATS with its R3 KV store, RabbitMQ
/// (quorum queues) with Redis.
pub const FAILOVER_PAIRS: [Pair; 2] = [
    Pair {
        broker: BrokerKind::Nats,
        store: StoreKind::NatsKv,
    },
    Pair {
        broker: BrokerKind::AmqpQuorum,
        store: StoreKind::Redis,
    },
];
