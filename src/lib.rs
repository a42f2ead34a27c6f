#![doc = include_str!("../docs/crate.md")]
#![warn(missing_docs)]

mod app;
mod client;
mod error;
mod handler;
mod ops;
mod pipeline;
pub mod store;
pub mod testing;
// Only the broker tests use it (behind their features).
#[cfg(all(test, any(feature = "amqp", feature = "nats", feature = "redis")))]
mod test_support;
pub mod transport;
mod util;
mod wire;

pub use app::shutdown;
pub use ops::metrics;
#[cfg(feature = "amqp")]
pub use transport::amqp;
pub use wire::{codec, headers};

pub use app::App;
pub use app::broker::{BROKER_URL_ENV, Broker};
pub use app::config::{
    Config, HTTP_ADDR_ENV, HttpListener, QUEUE_TYPE_ENV, SHUTDOWN_GRACE_ENV, STORE_REPLICAS_ENV,
    STREAM_REPLICAS_ENV, STREAM_STORAGE_ENV,
};
pub use app::running::{Running, ShutdownReport};
pub use client::{Client, DEFAULT_REQUEST_TIMEOUT, RemoteError, RequestError};
pub use error::chain::Chain as ErrorChain;
pub use error::{BrokerError, BrokerErrorKind, Error, Failure, HandlerError, IntoFailure};
pub use handler::context::Context;
pub use handler::extract::{FromMessage, Incoming, Meta, Raw, Rejection, State};
pub use handler::outcome::{IntoOutcome, Outcome, Reply};
pub use handler::{Handler, HandlerFuture, middleware};
pub use ops::dead_letters::{DeadLetter, DeadLetters};
pub use ops::health::{Health, Phase};
pub use ops::stats::RouteStats;
pub use pipeline::backoff::Backoff;
pub use pipeline::route_options::{GapPolicy, RouteOptions};
pub use transport::binding::{Binding, ExchangeKind, HeadersMatch};
/// The environment variables of [`BrokerOptions::from_env`].
pub use transport::broker_options as broker_env;
pub use transport::broker_options::BrokerOptions;
pub use transport::subscription::Subscription;
pub use transport::topology::{MAX_STREAM_REPLICAS, QueueType, StreamStorage, Topology};
pub use wire::codec::{Codec, CodecError};
pub use wire::dead_letter_reason::DeadLetterReason;
pub use wire::message::Message;

/// The examples of docs/middleware.md run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/middleware.md")]
pub struct MiddlewareDoctests;

/// The README's Rust examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
