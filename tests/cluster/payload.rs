//! The payloads the runner publishes and the workers' handlers take.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Payload of the idempotency runs.
#[derive(Serialize, Deserialize)]
pub struct Effect {
    pub key: String,
}

/// Payload of the session runs.
#[derive(Serialize, Deserialize)]
pub struct Step {
    pub session: String,
    pub seq: u64,
}

/// Payload of the recovery runs: one job, recorded where and when it ran.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
}

pub fn micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}
