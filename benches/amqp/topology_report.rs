//! The RabbitMQ bench's topology table: consume throughput of raw lapin
//! (`multiple` ack per 64) and wharf on a classic and a quorum work queue,
//! on the shared node and, with `WHARF_BENCH_RABBIT_CLUSTER=1`, on a
//! three-node cluster; quorum against classic on each. Then sequential
//! request/reply on a classic and a quorum request queue.

use crate::PREFETCH;
use crate::common::measured::{Measured, spread};
use crate::common::report::thousands;
use crate::common::rounds::Side;
use crate::common::topology::{Against, Row, print};
use crate::config::Config;
use crate::scenario::{Consumer, Layout, QUORUM_PAIRS, Scenario};
use wharf::QueueType;

/// Prints the tables if any of their scenarios ran besides the classic
/// ones on the shared node (the main tables have those).
pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    consume(config, results);
    request_reply(config, results);
}

fn consume(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    if !results
        .iter()
        .any(|(s, _)| matches!(s, Scenario::Consume(_, layout) if *layout != Layout::Classic))
    {
        return;
    }
    let find = |scenario: Scenario| {
        results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, runs)| runs.as_slice())
    };
    let rows: Vec<Row<'_>> = Layout::ALL
        .into_iter()
        .map(|layout| Row {
            label: layout.label(),
            raw: find(Scenario::Consume(Consumer::RawAck64, layout)),
            wharf: find(Scenario::Consume(Consumer::Wharf, layout)),
        })
        .collect();
    let index = |layout: Layout| Layout::ALL.iter().position(|l| *l == layout).unwrap();
    let against = [
        Against {
            label: "quorum / classic, shared node",
            variant: index(Layout::Quorum),
            base: index(Layout::Classic),
        },
        Against {
            label: "quorum / classic, 3-node cluster",
            variant: index(Layout::ClusterQuorum),
            base: index(Layout::ClusterClassic),
        },
        Against {
            label: "classic, cluster / shared node",
            variant: index(Layout::ClusterClassic),
            base: index(Layout::Classic),
        },
    ];
    print(
        &format!(
            "queue types: consume {} persistent messages pre-filled, prefetch {PREFETCH}; raw lapin \
             `multiple` ack per 64 against wharf",
            thousands(config.messages as f64)
        ),
        "queue",
        "RabbitMQ",
        &rows,
        &against,
    );
}

/// Request/reply p50 and throughput on a classic and a quorum request
/// queue, for raw → raw and wharf → wharf, if a quorum one ran.
fn request_reply(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    let find = |client: Side, server: Side, queue_type: QueueType| {
        results
            .iter()
            .find(|(s, _)| *s == Scenario::Rpc(client, server, queue_type))
            .map(|(_, runs)| runs.as_slice())
    };
    if !QUORUM_PAIRS
        .iter()
        .any(|(c, s)| find(*c, *s, QueueType::Quorum).is_some())
    {
        return;
    }
    let p50 = |m: &Measured| m.percentile(50.0);
    let median = |runs: Option<&[Measured]>, metric: &dyn Fn(&Measured) -> f64| {
        runs.map_or(f64::NAN, |runs| spread(runs, metric).0)
    };
    println!();
    println!(
        "request/reply by request queue type: {} sequential requests (after {} warm-up), shared node",
        thousands(config.requests as f64),
        config.sizes().warmup_requests()
    );
    println!(
        "  {:<16} {:>14} {:>14} {:>14} {:>15} {:>15} {:>17}",
        "client -> server",
        "classic p50 µs",
        "quorum p50 µs",
        "quorum/classic",
        "classic req/s",
        "quorum req/s",
        "RabbitMQ µs c/q"
    );
    let mut quorum_p50s = Vec::new();
    for (client, server) in QUORUM_PAIRS {
        let classic = find(client, server, QueueType::Classic);
        let quorum = find(client, server, QueueType::Quorum);
        let (c50, q50) = (median(classic, &p50), median(quorum, &p50));
        quorum_p50s.push(q50);
        println!(
            "  {:<16} {:>14.0} {:>14.0} {:>14.2} {:>15} {:>15} {:>17}",
            format!("{} -> {}", client.name(), server.name()),
            c50,
            q50,
            q50 / c50,
            thousands(median(classic, &Measured::rate)),
            thousands(median(quorum, &Measured::rate)),
            format!(
                "{:.1} / {:.1}",
                median(classic, &Measured::broker_per),
                median(quorum, &Measured::broker_per)
            ),
        );
    }
    if let [raw, wharf] = quorum_p50s[..] {
        println!(
            "  wharf -> wharf / raw -> raw on the quorum queue (p50): {:.2}",
            wharf / raw
        );
    }
    println!(
        "  (medians; RabbitMQ = the shared node's CPU per request, c/q = classic/quorum; the wharf client \
         publishes requests transient, the raw one persistent: a quorum queue logs both)"
    );
}
