//! The retention study's table: medians of the runs of each policy, what
//! it left in its stream, and its figures against WorkQueue's.

use crate::BATCH;
use crate::common::measured::{Measured, median, spread};
use crate::common::report::{Ratio, print_ratios, ratio, thousands};
use crate::config::Config;
use crate::retention::{Leftover, Retention, leftovers};
use crate::scenario::Scenario;

/// Prints the table if any `retention/…` scenario ran.
pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    let rows: Vec<_> = Retention::ALL
        .into_iter()
        .filter_map(|r| {
            let runs = results.iter().find(|(s, _)| *s == Scenario::Retention(r))?;
            Some((r, runs.1.as_slice(), leftovers(r)))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let max_ack_pending = rows
        .iter()
        .flat_map(|(_, _, left)| left.iter().map(|l| l.max_ack_pending))
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "retention study, raw async-nats: file stream pre-filled with {} messages, durable pull \
         consumer (explicit ack, max ack pending {max_ack_pending}), batch {BATCH}, ack each",
        thousands(config.messages as f64)
    );
    println!(
        "  {:<10} {:>8} {:>17} {:>10} {:>9} {:>9} {:>12} {:>10} {:>10} {:>12}",
        "retention",
        "msg/s",
        "(min-max)",
        "client µs",
        "process",
        "nats-srv",
        "(min-max)",
        "+settle µs",
        "settle ms",
        "left msgs/MB"
    );
    for (retention, runs, left) in &rows {
        let (rate, low, high) = spread(runs, Measured::rate);
        let (broker, broker_low, broker_high) = spread(runs, Measured::broker_per);
        let count = runs.first().map_or(1, |m| m.count) as f64;
        let of_left = |metric: fn(&Leftover) -> f64| {
            if left.is_empty() {
                f64::NAN
            } else {
                median(left.iter().map(metric).collect())
            }
        };
        let settle_broker = of_left(|l| l.settle_broker.map_or(f64::NAN, |t| t.as_secs_f64() * 1e6));
        println!(
            "  {:<10} {:>8} {:>17} {:>10.2} {:>9.2} {:>9.2} {:>12} {:>10.3} {:>10.1} {:>12}",
            retention.name(),
            thousands(rate),
            format!("({}-{})", thousands(low), thousands(high)),
            spread(runs, Measured::workers_per).0,
            spread(runs, Measured::cpu_per).0,
            broker,
            format!("({broker_low:.2}-{broker_high:.2})"),
            settle_broker / count,
            of_left(|l| l.settle.as_secs_f64() * 1e3),
            format!(
                "{}/{:.1}",
                thousands(of_left(|l| l.messages as f64)),
                of_left(|l| l.bytes as f64) / 1e6
            ),
        );
    }
    println!(
        "  (CPU µs per message: client = the measured runtime's threads, process = all threads, \
         nats-srv = the nats-server process,"
    );
    println!(
        "   on the clock (first message to last ack flushed); +settle = nats-server CPU after the \
         clock until nothing is unacked"
    );
    println!(
        "   and the stream holds what it keeps, per message; left = what the stream still holds \
         then. Limits keeps every"
    );
    println!(
        "   acked message: as a queue it would need max_age / max_bytes (or max_msgs) to bound \
         the stream, and its depth"
    );
    println!("   would have to come from the consumer's num_pending.)");

    let median_of = |r: Retention, metric: fn(&Measured) -> f64| {
        rows.iter()
            .find(|(row, _, _)| *row == r)
            .map(|(_, runs, _)| spread(runs, metric).0)
    };
    let (wq, interest, limits) = (Retention::WorkQueue, Retention::Interest, Retention::Limits);
    let lines: [Ratio<'_>; 4] = [
        (
            "interest / workqueue (msg/s)",
            ratio(median_of(interest, Measured::rate), median_of(wq, Measured::rate)),
            None,
        ),
        (
            "limits / workqueue (msg/s)",
            ratio(median_of(limits, Measured::rate), median_of(wq, Measured::rate)),
            None,
        ),
        (
            "interest / workqueue (nats-server CPU per message)",
            ratio(
                median_of(interest, Measured::broker_per),
                median_of(wq, Measured::broker_per),
            ),
            None,
        ),
        (
            "limits / workqueue (nats-server CPU per message)",
            ratio(
                median_of(limits, Measured::broker_per),
                median_of(wq, Measured::broker_per),
            ),
            None,
        ),
    ];
    print_ratios(&lines, 52);
}
