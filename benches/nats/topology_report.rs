//! The NATS bench's topology table: consume throughput of raw async-nats
//! and wharf on a stream of one and of three replicas, both on the
//! three-server cluster the bench starts (and, for reference, on the
//! shared server); R3 against R1.

use crate::BATCH;
use crate::common::measured::Measured;
use crate::common::report::thousands;
use crate::common::rounds::Side;
use crate::common::topology::{Against, Row, print};
use crate::config::Config;
use crate::scenario::{Replicas, Scenario};

/// Prints the table if an `r1/…` or `r3/…` scenario ran.
pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
    if !results.iter().any(|(s, _)| s.on_cluster()) {
        return;
    }
    let find = |scenario: Scenario| {
        results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, runs)| runs.as_slice())
    };
    let mut rows = vec![Row {
        label: "R1 stream, shared server",
        raw: find(Scenario::Consume(Side::Raw)),
        wharf: find(Scenario::Consume(Side::Wharf)),
    }];
    rows.extend(Replicas::ALL.map(|replicas| Row {
        label: replicas.label(),
        raw: find(Scenario::Replicated(replicas, Side::Raw)),
        wharf: find(Scenario::Replicated(replicas, Side::Wharf)),
    }));
    let against = [
        Against {
            label: "R3 / R1, 3-server cluster",
            variant: 2,
            base: 1,
        },
        Against {
            label: "R1, cluster / shared server",
            variant: 1,
            base: 0,
        },
    ];
    print(
        &format!(
            "stream replicas: consume {} messages pre-filled, pull batch / prefetch {BATCH}, \
             ack each; raw async-nats against wharf",
            thousands(config.messages as f64)
        ),
        "stream",
        "nats-server",
        &rows,
        &against,
    );
}
