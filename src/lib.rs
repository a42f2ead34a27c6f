#![doc = include_str!("../docs/crate.md")]
#![warn(missing_docs)]

#[cfg(feature = "amqp")]
pub mod amqp;
mod app;
mod attempt_header;
mod broker;
mod client;
pub mod codec;
mod context;
mod dead_letter;
mod error;
mod exporter;
mod extract;
mod handler;
mod header_bytes;
pub mod headers;
mod health;
mod http;
mod id_map;
mod ids;
mod lanes;
mod log_text;
mod memory;
mod message;
pub mod metrics;
mod monitor;
#[cfg(feature = "nats")]
mod nats;
mod outcome;
mod pipeline;
mod redact;
mod route;
mod running;
pub mod shutdown;
mod stats;
pub mod store;
#[allow(unused_imports)] // which primitives each build uses differs
mod sync;
#[cfg(test)]
mod test_support;
mod timestamp;
mod trace_context;
pub mod transport;
mod window;

pub use app::{App, HTTP_ADDR_ENV};
pub use broker::{BROKER_URL_ENV, Broker};
pub use client::{Client, DEFAULT_REQUEST_TIMEOUT, RemoteError, RequestError};
pub use codec::{Codec, CodecError};
pub use context::Context;
pub use dead_letter::{DeadLetter, DeadLetterReason, DeadLetters};
pub use error::{BrokerError, BrokerErrorKind, Error, Failure, IntoFailure};
pub use extract::{FromMessage, Incoming, Meta, Raw, Rejection, State};
pub use handler::{Handler, HandlerFuture};
pub use health::{Health, Phase};
pub use message::Message;
pub use outcome::{IntoOutcome, Outcome, Reply};
pub use pipeline::retry::Backoff;
pub use route::{GapPolicy, RouteOptions};
pub use running::{Running, ShutdownReport};
pub use stats::RouteStats;

/// The README's Rust examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
