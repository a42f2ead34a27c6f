//! The NATS bench's settings, from its arguments and environment.

use crate::common::config::{env_number, only, quick};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

pub struct Config {
    pub quick: bool,
    pub url: String,
    pub messages: u64,
    pub requests: u64,
    pub in_flight_requests: u64,
    pub in_flight: u64,
    pub runs: usize,
    pub workers: usize,
    pub server_workers: usize,
    /// Seeds the order of the scenarios in each round.
    pub seed: u64,
    pub only: Vec<String>,
}

impl Config {
    pub fn from_env() -> Self {
        let quick = quick();
        let (messages, requests, in_flight_requests, runs) = if quick {
            (1_000, 200, 1_000, 1)
        } else {
            (200_000, 5_000, 50_000, 5)
        };
        Config {
            quick,
            url: std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
            messages: env_number("WHARF_BENCH_MESSAGES", messages),
            requests: env_number("WHARF_BENCH_REQUESTS", requests),
            in_flight_requests: env_number("WHARF_BENCH_INFLIGHT_REQUESTS", in_flight_requests),
            in_flight: env_number("WHARF_BENCH_IN_FLIGHT", 64),
            runs: env_number("WHARF_BENCH_RUNS", runs) as usize,
            workers: env_number("WHARF_BENCH_WORKERS", 2) as usize,
            server_workers: env_number("WHARF_BENCH_SERVER_WORKERS", 2) as usize,
            seed: env_number("WHARF_BENCH_SEED", 1),
            only: only(),
        }
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            messages: self.messages,
            requests: self.requests,
            in_flight_requests: self.in_flight_requests,
        }
    }

    /// Sizes of the unmeasured warm-up round.
    pub fn warm_up_sizes(&self) -> Sizes {
        Sizes {
            messages: (self.messages / 10).max(100),
            requests: (self.requests / 10).max(20),
            in_flight_requests: (self.in_flight_requests / 10).max(200),
        }
    }
}

/// How much one run of each scenario handles.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub messages: u64,
    pub requests: u64,
    pub in_flight_requests: u64,
}

impl Sizes {
    /// Unmeasured sequential requests before the measured ones.
    pub fn warmup_requests(&self) -> u64 {
        (self.requests / 10).clamp(10, 200)
    }
}
