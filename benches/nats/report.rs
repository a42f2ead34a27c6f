//! The NATS bench's report: a table per kind of scenario, medians of the
//! runs, then the ratios the project aims for.

use crate::BATCH;
use crate::common::measured::{Measured, spread};
use crate::common::payload::PAYLOAD_BYTES;
use crate::common::report::{Goal, Ratio, print_ratios, ratio, redacted, thousands};
use crate::common::rounds::{PAIRS, Side};
use crate::config::Config;
use crate::scenario::Scenario;

pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    let find = |scenario: Scenario| {
        results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, runs)| runs.as_slice())
    };
    println!();
    println!(
        "wharf vs raw async-nats on NATS ({}): {PAYLOAD_BYTES}-byte JSON, {} + {} tokio workers \
         (client + server); median of {} run(s), order seed {}",
        redacted(&config.url),
        config.workers,
        config.server_workers,
        config.runs,
        config.seed
    );
    if config.quick {
        println!("(quick smoke run: too few messages for meaningful figures)");
    }

    let consume: Vec<_> = [Side::Raw, Side::Wharf]
        .into_iter()
        .filter_map(|side| find(Scenario::Consume(side)).map(|runs| (side, runs)))
        .collect();
    if !consume.is_empty() {
        println!();
        println!(
            "consume, JetStream stream pre-filled with {} messages, pull batch / prefetch {BATCH}",
            thousands(config.messages as f64)
        );
        println!(
            "  {:<34} {:>8} {:>17} {:>11} {:>9} {:>9} {:>10} {:>10} {:>9}",
            "consumer",
            "msg/s",
            "(min-max)",
            "client µs",
            "process",
            "(kernel)",
            "nats-srv",
            "cswch/msg",
            "start ms"
        );
        for (side, runs) in &consume {
            let (rate, low, high) = spread(runs, Measured::rate);
            let label = match side {
                Side::Raw => "raw async-nats pull + ack each",
                Side::Wharf => "wharf handler (decode + ack)",
            };
            println!(
                "  {:<34} {:>8} {:>17} {:>11.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>9.1}",
                label,
                thousands(rate),
                format!("({}-{})", thousands(low), thousands(high)),
                spread(runs, Measured::workers_per).0,
                spread(runs, Measured::cpu_per).0,
                spread(runs, Measured::sys_per).0,
                spread(runs, Measured::broker_per).0,
                spread(runs, Measured::switches_per).0,
                spread(runs, Measured::startup_ms).0,
            );
        }
        println!(
            "  (CPU µs per message: client = the measured runtime's threads; process = all threads, \
             of it the kernel's share;"
        );
        println!(
            "   nats-srv = the nats-server process; clock from the first message to the last ack flushed)"
        );
    }

    for (in_flight, title) in [
        (
            false,
            format!(
                "request/reply, core NATS: {} sequential requests (after {} warm-up)",
                thousands(config.requests as f64),
                config.sizes().warmup_requests()
            ),
        ),
        (
            true,
            format!(
                "request/reply, core NATS: {} requests, {} in flight",
                thousands(config.in_flight_requests as f64),
                config.in_flight
            ),
        ),
    ] {
        let rows: Vec<_> = PAIRS
            .into_iter()
            .filter_map(|(c, s)| {
                let scenario = if in_flight {
                    Scenario::RpcInFlight(c, s)
                } else {
                    Scenario::Rpc(c, s)
                };
                find(scenario).map(|runs| ((c, s), runs))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        println!();
        println!("{title}");
        println!(
            "  {:<16} {:>8} {:>17} {:>8} {:>13} {:>8} {:>10} {:>10} {:>9} {:>10} {:>10}",
            "client -> server",
            "req/s",
            "(min-max)",
            "p50 µs",
            "(min-max)",
            "p99 µs",
            "client µs",
            "server µs",
            "process",
            "nats-srv",
            "cswch/req"
        );
        for ((client, server), runs) in &rows {
            let (rate, rate_low, rate_high) = spread(runs, Measured::rate);
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            println!(
                "  {:<16} {:>8} {:>17} {:>8.0} {:>13} {:>8.0} {:>10.2} {:>10.2} {:>9.2} {:>10.2} {:>10.2}",
                format!("{} -> {}", client.name(), server.name()),
                thousands(rate),
                format!("({}-{})", thousands(rate_low), thousands(rate_high)),
                p50,
                format!("({low:.0}-{high:.0})"),
                spread(runs, |m| m.percentile(99.0)).0,
                spread(runs, Measured::workers_per).0,
                spread(runs, Measured::helpers_per).0,
                spread(runs, Measured::cpu_per).0,
                spread(runs, Measured::broker_per).0,
                spread(runs, Measured::switches_per).0,
            );
        }
    }
    if results
        .iter()
        .any(|(s, _)| matches!(s, Scenario::Rpc(..) | Scenario::RpcInFlight(..)))
    {
        println!(
            "  (CPU µs per request: client = the measured runtime's threads, server = the servers' \
             runtime's, process = both and the rest; nats-srv = the nats-server process)"
        );
    }

    // Ratios: each from the medians above.
    let median_of = |scenario: Scenario, metric: &dyn Fn(&Measured) -> f64| {
        find(scenario).map(|runs| spread(runs, metric).0)
    };
    let consume = |side, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::Consume(side), metric);
    let rr = |c, s, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::Rpc(c, s), metric);
    let rr64 = |c, s, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::RpcInFlight(c, s), metric);
    let p50 = |m: &Measured| m.percentile(50.0);
    let (w, r) = (Side::Wharf, Side::Raw);
    let lines: [Ratio<'_>; 9] = [
        (
            "wharf / raw consume (msg/s)",
            ratio(consume(w, &Measured::rate), consume(r, &Measured::rate)),
            Some(Goal::AtLeast(0.9)),
        ),
        (
            "wharf / raw consume (client CPU per message)",
            ratio(
                consume(w, &Measured::workers_per),
                consume(r, &Measured::workers_per),
            ),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr p50)",
            ratio(rr(w, w, &p50), rr(r, r, &p50)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (rr p50)",
            ratio(rr(w, r, &p50), rr(r, r, &p50)),
            None,
        ),
        (
            "wharf server / raw server, raw client (rr p50)",
            ratio(rr(r, w, &p50), rr(r, r, &p50)),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr64 req/s)",
            ratio(rr64(w, w, &Measured::rate), rr64(r, r, &Measured::rate)),
            Some(Goal::AtLeast(0.9)),
        ),
        (
            "wharf -> wharf / raw -> raw (rr64 p50)",
            ratio(rr64(w, w, &p50), rr64(r, r, &p50)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (rr64 req/s)",
            ratio(rr64(w, r, &Measured::rate), rr64(r, r, &Measured::rate)),
            None,
        ),
        (
            "wharf server / raw server, raw client (rr64 req/s)",
            ratio(rr64(r, w, &Measured::rate), rr64(r, r, &Measured::rate)),
            None,
        ),
    ];
    print_ratios(&lines, 52);
}
