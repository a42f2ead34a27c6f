//! The RabbitMQ bench's topology table: consume throughput of raw lapin
//! (`multiple` ack per 64) and wharf on a classic and a quorum work queue,
//! on the shared node and, with `WHARF_BENCH_RABBIT_CLUSTER=1`, on a
//! three-node cluster; quorum against classic on each.

use crate::PREFETCH;
use crate::common::measured::Measured;
use crate::common::report::thousands;
use crate::common::topology::{Against, Row, print};
use crate::config::Config;
use crate::scenario::{Consumer, Layout, Scenario};

/// Prints the table if any of its scenarios ran besides the classic ones
/// on the shared node (the main table has those).
pub fn report(config: &Config, results: &[(Scenario, Vec<Measured>)]) {
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
