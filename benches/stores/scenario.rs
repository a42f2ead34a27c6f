//! The scenarios: a transport, a store and what the messages ask of it;
//! and which of them `WHARF_BENCH_ONLY` and `WHARF_BENCH_TRANSPORTS` pick.

/// Which broker the route consumes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// wharf's in-process broker (`Broker::memory()`).
    Memory,
    /// RabbitMQ.
    Amqp,
    /// NATS JetStream.
    Nats,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Memory, Transport::Amqp, Transport::Nats];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Memory => "memory",
            Transport::Amqp => "amqp",
            Transport::Nats => "nats",
        }
    }

    /// The transports of `WHARF_BENCH_TRANSPORTS` (comma-separated; unset
    /// or empty: all three); panics on an unknown name.
    pub fn from_env() -> Vec<Transport> {
        let raw = std::env::var("WHARF_BENCH_TRANSPORTS").unwrap_or_default();
        let names: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        for name in &names {
            assert!(
                Transport::ALL.iter().any(|t| t.name() == *name),
                "WHARF_BENCH_TRANSPORTS: unknown transport {name:?} (memory, amqp, nats)"
            );
        }
        Transport::ALL
            .into_iter()
            .filter(|t| names.is_empty() || names.contains(&t.name()))
            .collect()
    }
}

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
    pub transport: Transport,
    pub store: StoreKind,
    pub mode: Mode,
}

impl Scenario {
    /// For each transport: plain first (its store is unused), then each
    /// store's two.
    pub fn all(transports: &[Transport]) -> Vec<Scenario> {
        let mut all = Vec::new();
        for &transport in transports {
            all.push(Scenario {
                transport,
                store: StoreKind::Memory,
                mode: Mode::Plain,
            });
            for store in StoreKind::ALL {
                for mode in [Mode::Idempotency, Mode::Sessions] {
                    all.push(Scenario {
                        transport,
                        store,
                        mode,
                    });
                }
            }
        }
        all
    }

    /// `<transport>/plain` or `<transport>/<store>/<mode>`.
    pub fn name(&self) -> String {
        let transport = self.transport.name();
        match self.mode {
            Mode::Plain => format!("{transport}/plain"),
            Mode::Idempotency => format!("{transport}/{}/idempotency", self.store.name()),
            Mode::Sessions => format!("{transport}/{}/sessions", self.store.name()),
        }
    }

    /// Whether `WHARF_BENCH_ONLY`'s items pick this scenario: an item is
    /// its name or a run of whole `/`-separated parts of it (`redis`,
    /// `plain`, `amqp/redis`, `nats-kv/sessions`; all when `only` is empty).
    pub fn selected(&self, only: &[String]) -> bool {
        let name = format!("/{}/", self.name());
        only.is_empty() || only.iter().any(|item| name.contains(&format!("/{item}/")))
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
