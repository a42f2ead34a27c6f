//! A test kit: run an [`App`](crate::App) on the in-memory broker inside a
//! `#[tokio::test]`, publish a message and await *its* outcome — acked,
//! replied to, retried, dead-lettered with a reason, rejected, skipped as
//! a duplicate — and look at what the handlers published and replied. No
//! polling of counters, no sleeps.
//!
//! - [`TestBroker`]: an in-memory broker; build the app on
//!   [`TestBroker::broker`] and [`start`](TestBroker::start) it.
//! - [`TestApp`]: [`publish`](TestApp::publish), [`send`](TestApp::send)
//!   (any [`Message`](crate::Message): headers, idempotency key, session,
//!   priority), [`request`](TestApp::request); then
//!   [`published`](TestApp::published), [`replies`](TestApp::replies),
//!   [`dead_letters`](TestApp::dead_letters), [`stats`](TestApp::stats).
//! - [`Tracked::outcome`]: waits for the message to end, through its
//!   retries, and returns [`Settled`]: its [`End`], attempts, retries and
//!   reply.
//!
//! Backoff delays, handler timeouts, leases and session gap timeouts run
//! on tokio's clock, so under a paused clock
//! (`#[tokio::test(start_paused = true)]`, which needs tokio's `test-util`
//! feature in your `[dev-dependencies]`) a message retried three times
//! with a minute's backoff ends at once:
//!
//! ```
//! use std::time::Duration;
//! use wharf::testing::TestBroker;
//! use wharf::{App, Backoff, Context, Error, RouteOptions};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Order { id: u64 }
//!
//! async fn place_order(ctx: Context, order: Order) -> Result<(), Error> {
//!     if ctx.attempt() < 3 {
//!         return Err(Error::new("the warehouse is busy"));
//!     }
//!     ctx.publish("shipments", &order).await
//! }
//!
//! # // `#[tokio::test(start_paused = true)]` in a test.
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> Result<(), wharf::BrokerError> {
//!     let kit = TestBroker::new();
//!     let minute = RouteOptions::new().backoff(Backoff::fixed(Duration::from_secs(60)));
//!     let app = kit
//!         .start(App::new(kit.broker()).route_with("orders", place_order, minute))
//!         .await?;
//!
//!     let settled = app.publish("orders", &Order { id: 7 }).outcome().await;
//!     assert!(settled.is_acked());
//!     assert_eq!((settled.attempts(), settled.retries()), (3, 2));
//!     let shipped = app.published_as::<Order>("shipments");
//!     assert_eq!(shipped.len(), 1);
//!     assert_eq!(shipped[0].id, 7);
//!     Ok(())
//! }
//! ```
//!
//! See `docs/testing.md` in the repository for more.

mod recorder;
mod settled;
mod test_app;
mod test_broker;
mod tracked;
mod tracker;

pub use settled::{End, Settled, Unsettled};
pub use test_app::TestApp;
pub use test_broker::TestBroker;
pub use tracked::{DEFAULT_TOKIO_TIME_LIMIT, DEFAULT_WALL_CLOCK_LIMIT, Tracked};
