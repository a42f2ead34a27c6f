//! One async-nats connection and what the transport watches of it: whether
//! it is up, and how many times it came back after a loss.
//!
//! The transport opens two: one for everything it sends (publishes, acks,
//! replies, requests) and one that only receives what its consumers pull
//! (pull subscriptions, core services). async-nats drops its connection
//! when it cannot parse a message the server sends (a header block that is
//! not UTF-8, a header line without a colon: nats-server stores such a
//! message as it was published). On a connection of its own, such a message
//! takes down only the subscriptions it arrived on, which ask again at
//! once; the acks and publishes of every other message in flight go on
//! undisturbed on the other connection (see `quarantine`).

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::broker_options::BrokerOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How long a connection attempt may take before `connect` fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection and its state, as the transport's parts read it.
pub(crate) struct Connection {
    pub(crate) client: async_nats::Client,
    /// Whether it is up, as it changes.
    pub(crate) connected: watch::Receiver<bool>,
    /// How many times it came back after a loss (pull subscriptions ask
    /// again then: their requests died with the connection).
    pub(crate) reconnects: watch::Receiver<u64>,
}

/// Opens a connection as `options` say, named by their connection name
/// (default `wharf`) followed by `suffix` on the server.
pub(crate) async fn open(options: &BrokerOptions, suffix: &str) -> Result<Connection, BrokerError> {
    let name = format!(
        "{}{suffix}",
        options.connection_name.as_deref().unwrap_or("wharf")
    );
    let (tx, connected) = watch::channel(false);
    let tx = Arc::new(tx);
    let events = tx.clone();
    let (reconnected, reconnects) = watch::channel(0u64);
    let reconnected = Arc::new(reconnected);
    // Set by a loss, so that only a connection after one counts as a
    // reconnect (the first connection's event may come late).
    let lost = Arc::new(AtomicBool::new(false));
    let label: Arc<str> = name.as_str().into();
    let (connect, servers) = super::connect_options::NatsUrl::connect_options(options)?;
    let connect = connect
        .name(&name)
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            let reconnected = reconnected.clone();
            let lost = lost.clone();
            let label = label.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(connection = %label, "NATS connected");
                        events.send_replace(true);
                        if lost.swap(false, Ordering::AcqRel) {
                            reconnected.send_modify(|n| *n += 1);
                        }
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        tracing::warn!(connection = %label, "NATS connection lost; reconnecting");
                        lost.store(true, Ordering::Release);
                        events.send_replace(false);
                    }
                    other => tracing::debug!(connection = %label, event = %other, "NATS event"),
                }
            }
        });
    let client = connect.connect(servers).await.map_err(|e| {
        let hint =
            crate::transport::tls::hint(&format!("{e} {e:?}"), options.tls.any().then_some(&options.tls));
        BrokerError::new(
            BrokerErrorKind::Connection,
            match hint {
                Some(hint) => format!("cannot connect to NATS at {}: {hint}", options.shown()),
                None => format!("cannot connect to NATS at {}", options.shown()),
            },
        )
        .with_source(e)
    })?;
    tx.send_replace(client.connection_state() == async_nats::connection::State::Connected);
    Ok(Connection {
        client,
        connected,
        reconnects,
    })
}

/// Whether both `a` and `b` are up, as either changes; ends with the
/// runtime or when both senders are gone.
pub(crate) fn both(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow_and_update() && *b.borrow_and_update());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = a.changed() => if changed.is_err() { return },
                changed = b.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            tx.send_if_modified(|up| {
                let now = *a.borrow_and_update() && *b.borrow_and_update();
                std::mem::replace(up, now) != now
            });
        }
    });
    rx
}
