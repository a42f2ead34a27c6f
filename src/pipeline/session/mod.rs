//! The session step: messages of one session run one at a time, in
//! `sequence` order; different sessions run concurrently.
//!
//! Whose turn it is lives in the store, so other workers and restarts agree.
//! Locally, each session has a *baton*: only the job holding it asks the
//! store for a turn or runs. A message arriving while its session's baton is
//! taken waits here, in sequence order, without a concurrency slot; this keeps
//! the worker's own concurrency from reordering a session's messages. When the
//! baton is passed on, the next number goes if it is waiting. The baton is a
//! guard carried by the job: if the job is dropped on an unexpected path (a
//! panic), the baton is put down and the session carries on.
//!
//! Up to `capacity` (the route's prefetch − 1) messages wait. Beyond that the
//! message furthest from its turn, across all sessions, goes back to the
//! broker for later — back-pressure, not loss — and one prefetch credit always
//! stays free for the message a session waits for.
//!
//! A watcher per session with waiting messages re-checks the store (another
//! worker may have moved the session on) and applies the gap policy when the
//! missing number does not come in time.
//!
//! In three parts: the batons and the waiting jobs ([`gate`], synchronous,
//! under one lock), the step a job takes ([`step`]: its turn, waiting,
//! passing the baton on) and the watcher ([`gap_watcher`]).

mod gap_watcher;
mod gate;
mod step;

pub(super) use gate::{Baton, SessionGate};
pub(super) use step::TurnEnd;
