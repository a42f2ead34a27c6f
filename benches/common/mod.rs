//! What the broker benches (`benches/amqp/`, `benches/nats/`) share: the
//! payload, the CPU accounting, the rounds of runs, the figures of a run
//! and the report's pieces. Each bench includes this folder with
//! `#[path = "../common/mod.rs"] mod common;` and uses part of it; it is no
//! bench of its own (`Cargo.toml` declares the benches by path).
#![allow(dead_code)]

pub mod broker_cpu;
pub mod clock;
pub mod completion;
pub mod config;
pub mod cpu;
pub mod measured;
pub mod payload;
pub mod report;
pub mod rounds;
pub mod route;
pub mod setup;
pub mod topology;
