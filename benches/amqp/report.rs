//! The RabbitMQ bench's report: a table per kind of scenario, medians of
//! the runs, then the ratios the project aims for.

use crate::PREFETCH;
use crate::common::measured::{Measured, spread};
use crate::common::payload::PAYLOAD_BYTES;
use crate::common::report::{Goal, Ratio, print_ratios, ratio, redacted, thousands};
use crate::common::rounds::{PAIRS, Side};
use crate::config::Config;
use crate::scenario::{Consumer, Layout, Scenario};
use wharf::QueueType;

pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    let find = |scenario: Scenario| {
        results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, runs)| runs.as_slice())
    };
    println!();
    println!(
        "wharf vs raw lapin on RabbitMQ ({}): {PAYLOAD_BYTES}-byte JSON, prefetch {PREFETCH}, \
         {} tokio workers; median of {} run(s)",
        redacted(&config.url),
        config.workers,
        config.runs
    );
    if config.quick {
        println!("(quick smoke run: too few messages for meaningful figures)");
    }

    let consume: Vec<_> = Consumer::ALL
        .into_iter()
        .filter_map(|c| find(Scenario::Consume(c, Layout::Classic)).map(|runs| (c, runs)))
        .collect();
    if !consume.is_empty() {
        println!();
        println!(
            "consume, queue pre-filled with {} persistent messages",
            thousands(config.messages as f64)
        );
        println!(
            "  {:<38} {:>8} {:>17} {:>11} {:>9} {:>9} {:>9} {:>10}",
            "consumer", "msg/s", "(min-max)", "CPU µs/msg", "(kernel)", "(tokio)", "(lapin)", "cswch/msg"
        );
        for (consumer, runs) in &consume {
            let (rate, low, high) = spread(runs, Measured::rate);
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (sys, _, _) = spread(runs, Measured::sys_per);
            let (workers, _, _) = spread(runs, Measured::workers_per);
            let (lapin, _, _) = spread(runs, Measured::helpers_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8} {:>17} {:>11.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2}",
                consumer.label(),
                thousands(rate),
                format!("({}-{})", thousands(low), thousands(high)),
                cpu,
                sys,
                workers,
                lapin,
                switches
            );
        }
        println!(
            "  (CPU of the whole process: of it the kernel's share, the tokio workers' and lapin's I/O thread's)"
        );
    }

    let paced: Vec<_> = Consumer::ALL
        .into_iter()
        .filter_map(|c| find(Scenario::Paced(c)).map(|runs| (c, runs)))
        .collect();
    if !paced.is_empty() {
        println!();
        println!(
            "paced: {} messages published at {} msg/s while consuming; publish -> handler latency",
            thousands(config.paced_messages as f64),
            thousands(config.rate as f64)
        );
        println!(
            "  {:<38} {:>8} {:>13} {:>8} {:>11} {:>10}",
            "consumer", "p50 µs", "(min-max)", "p99 µs", "CPU µs/msg", "cswch/msg"
        );
        for (consumer, runs) in &paced {
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            let (p99, _, _) = spread(runs, |m| m.percentile(99.0));
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8.0} {:>13} {:>8.0} {:>11.2} {:>10.2}",
                consumer.label(),
                p50,
                format!("({low:.0}-{high:.0})"),
                p99,
                cpu,
                switches
            );
        }
        println!("  (CPU and context switches include the publisher: one process)");
    }

    let rpc: Vec<_> = PAIRS
        .into_iter()
        .filter_map(|(c, s)| find(Scenario::Rpc(c, s, QueueType::Classic)).map(|runs| ((c, s), runs)))
        .collect();
    if !rpc.is_empty() {
        println!();
        println!(
            "request/reply: {} sequential requests (after {} warm-up), direct reply-to",
            thousands(config.requests as f64),
            config.sizes().warmup_requests()
        );
        println!(
            "  {:<38} {:>8} {:>8} {:>13} {:>8} {:>11} {:>10}",
            "client -> server", "req/s", "p50 µs", "(min-max)", "p99 µs", "CPU µs/req", "cswch/req"
        );
        for ((client, server), runs) in &rpc {
            let (rate, _, _) = spread(runs, Measured::rate);
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            let (p99, _, _) = spread(runs, |m| m.percentile(99.0));
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8} {:>8.0} {:>13} {:>8.0} {:>11.2} {:>10.2}",
                format!("{} -> {}", client.name(), server.name()),
                thousands(rate),
                p50,
                format!("({low:.0}-{high:.0})"),
                p99,
                cpu,
                switches
            );
        }
        println!("  (CPU and context switches cover client and server: one process)");
    }

    // Ratios: each from the medians above.
    let median_of = |scenario: Scenario, metric: &dyn Fn(&Measured) -> f64| {
        find(scenario).map(|runs| spread(runs, metric).0)
    };
    let rate = |c| median_of(Scenario::Consume(c, Layout::Classic), &Measured::rate);
    let cpu = |c| median_of(Scenario::Consume(c, Layout::Classic), &Measured::cpu_per);
    let p50 = |c, s| {
        median_of(Scenario::Rpc(c, s, QueueType::Classic), &|m: &Measured| {
            m.percentile(50.0)
        })
    };
    let paced_p50 = |c| median_of(Scenario::Paced(c), &|m: &Measured| m.percentile(50.0));
    let lines: [Ratio<'_>; 8] = [
        (
            "wharf consume / raw multiple-ack (msg/s)",
            ratio(rate(Consumer::Wharf), rate(Consumer::RawAck64)),
            Some(Goal::AtLeast(0.95)),
        ),
        (
            "wharf consume / raw awaited-ack (msg/s)",
            ratio(rate(Consumer::Wharf), rate(Consumer::RawAckEach)),
            None,
        ),
        (
            "wharf / raw multiple-ack (CPU per message)",
            ratio(cpu(Consumer::Wharf), cpu(Consumer::RawAck64)),
            None,
        ),
        (
            "wharf / raw multiple-ack (paced p50)",
            ratio(paced_p50(Consumer::Wharf), paced_p50(Consumer::RawAck64)),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr p50)",
            ratio(p50(Side::Wharf, Side::Wharf), p50(Side::Raw, Side::Raw)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (p50)",
            ratio(p50(Side::Wharf, Side::Raw), p50(Side::Raw, Side::Raw)),
            None,
        ),
        (
            "wharf server / raw server, raw client (p50)",
            ratio(p50(Side::Raw, Side::Wharf), p50(Side::Raw, Side::Raw)),
            None,
        ),
        (
            "wharf client / raw client, wharf server (p50)",
            ratio(p50(Side::Wharf, Side::Wharf), p50(Side::Raw, Side::Wharf)),
            None,
        ),
    ];
    print_ratios(&lines, 48);
}
