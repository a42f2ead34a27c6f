//! The scenarios: a store and what the messages ask of it.

/// Which store the route uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
    NatsKv,
}

impl StoreKind {
    pub const ALL: [StoreKind; 3] = [StoreKind::Memory, StoreKind::Redis, StoreKind::NatsKv];

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
            StoreKind::NatsKv => "nats-kv",
        }
    }
}

/// What the messages carry, and which steps the route has on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Neither step; no headers.
    Plain,
    /// Every message with its own idempotency key.
    Idempotency,
    /// [`SESSIONS`] sessions, round robin, in sequence order.
    Sessions,
}

/// Sessions of the sessions scenarios.
pub const SESSIONS: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub store: StoreKind,
    pub mode: Mode,
}

impl Scenario {
    /// Plain first (its store is unused), then each store's two.
    pub fn all() -> Vec<Scenario> {
        let mut all = vec![Scenario {
            store: StoreKind::Memory,
            mode: Mode::Plain,
        }];
        for store in StoreKind::ALL {
            for mode in [Mode::Idempotency, Mode::Sessions] {
                all.push(Scenario { store, mode });
            }
        }
        all
    }

    pub fn name(&self) -> String {
        match self.mode {
            Mode::Plain => "plain".to_owned(),
            Mode::Idempotency => format!("{}/idempotency", self.store.name()),
            Mode::Sessions => format!("{}/sessions", self.store.name()),
        }
    }

    pub fn options(&self) -> wharf::RouteOptions {
        let options = wharf::RouteOptions::new().prefetch(256).concurrency(256);
        match self.mode {
            Mode::Plain => options.idempotency(false).sessions(false),
            Mode::Idempotency => options.idempotency(true).sessions(false),
            Mode::Sessions => options.idempotency(false).sessions(true),
        }
    }

    /// The `index`-th message of a run (0-based).
    pub fn message(&self, body: &bytes::Bytes, index: u64) -> wharf::Message {
        let message = wharf::Message::new(body.clone()).with_content_type(wharf::codec::JSON);
        match self.mode {
            Mode::Plain => message,
            Mode::Idempotency => message.with_idempotency_key(format!("order-{index:010}")),
            Mode::Sessions => {
                message.with_session(format!("customer-{:04}", index % SESSIONS), index / SESSIONS + 1)
            }
        }
    }
}
