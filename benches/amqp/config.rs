//! The RabbitMQ bench's settings, from its arguments and environment.

use crate::common::config::{env_flag, env_number, only, quick};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub struct Config {
    pub quick: bool,
    pub url: String,
    pub messages: u64,
    pub paced_messages: u64,
    pub rate: u64,
    pub requests: u64,
    pub runs: usize,
    pub workers: usize,
    pub only: Vec<String>,
    /// `WHARF_BENCH_RABBIT_CLUSTER`: also the `cluster-…` scenarios, on a
    /// three-node cluster the bench starts (about 25 s) and stops.
    pub rabbit_cluster: bool,
}

impl Config {
    pub fn from_env() -> Self {
        let quick = quick();
        let (messages, paced, requests, runs) = if quick {
            (500, 200, 100, 1)
        } else {
            (20_000, 4_000, 2_000, 5)
        };
        Config {
            quick,
            url: std::env::var("WHARF_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
            messages: env_number("WHARF_BENCH_MESSAGES", messages),
            paced_messages: env_number("WHARF_BENCH_PACED_MESSAGES", paced),
            rate: env_number("WHARF_BENCH_RATE", 2_000),
            requests: env_number("WHARF_BENCH_REQUESTS", requests),
            runs: env_number("WHARF_BENCH_RUNS", runs) as usize,
            workers: env_number("WHARF_BENCH_WORKERS", 2) as usize,
            only: only(),
            rabbit_cluster: env_flag("WHARF_BENCH_RABBIT_CLUSTER"),
        }
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            messages: self.messages,
            paced_messages: self.paced_messages,
            requests: self.requests,
        }
    }

    /// Sizes of the unmeasured warm-up round.
    pub fn warm_up_sizes(&self) -> Sizes {
        Sizes {
            messages: (self.messages / 10).max(100),
            paced_messages: (self.paced_messages / 10).max(50),
            requests: (self.requests / 10).max(20),
        }
    }
}

/// How much one run of each scenario handles.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub messages: u64,
    pub paced_messages: u64,
    pub requests: u64,
}

impl Sizes {
    /// Unmeasured requests before the measured ones.
    pub fn warmup_requests(&self) -> u64 {
        (self.requests / 10).clamp(10, 200)
    }
}
