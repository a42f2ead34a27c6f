//! The report: one line per scenario, medians of its runs.

use crate::bench::StoreFigures;
use crate::common::measured::{Measured, median, spread};
use crate::common::report::thousands;
use crate::scenario::{Mode, Scenario, StoreKind};

/// The median over the runs of `metric`, or `-` if no run has it.
fn figure(values: Vec<Option<f64>>, decimals: usize) -> String {
    let values: Vec<f64> = values.into_iter().flatten().collect();
    if values.is_empty() {
        return "-".to_owned();
    }
    format!("{:.decimals$}", median(values))
}

pub fn print(results: &[(Scenario, Vec<Measured>)], figures: &[(String, StoreFigures)]) {
    let plain = results
        .iter()
        .find(|(s, runs)| s.mode == Mode::Plain && !runs.is_empty())
        .map(|(_, runs)| spread(runs, Measured::rate).0);
    println!();
    println!(
        "{:<22} {:>10} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "msg/s", "ratio", "worker", "process", "deferred", "redis", "redis", "redis", "nats-srv"
    );
    println!(
        "{:<22} {:>10} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "", "(median)", "/plain", "µs/msg", "µs/msg", "", "cmds/msg", "evals/msg", "µs/msg", "µs/msg"
    );
    for (scenario, runs) in results {
        if runs.is_empty() {
            continue;
        }
        let name = scenario.name();
        let ours: Vec<&StoreFigures> = figures
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, f)| f)
            .collect();
        let rate = spread(runs, Measured::rate).0;
        let ratio = plain.map_or("-".to_owned(), |plain| format!("{:.2}", rate / plain));
        let count = runs[0].count as f64;
        let redis = |f: &dyn Fn(&crate::redis_stats::RedisStats) -> f64| {
            figure(ours.iter().map(|o| o.redis.as_ref().map(f)).collect(), 1)
        };
        let nats = if scenario.store == StoreKind::NatsKv {
            figure(
                runs.iter()
                    .map(|r| r.spent.broker.map(|_| r.broker_per()))
                    .collect(),
                1,
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:<22} {:>10} {:>6} {:>9.2} {:>9.2} {:>8} {:>9} {:>9} {:>9} {:>9}",
            name,
            thousands(rate),
            ratio,
            spread(runs, Measured::workers_per).0,
            spread(runs, Measured::cpu_per).0,
            figure(ours.iter().map(|o| Some(o.deferred as f64)).collect(), 0),
            redis(&|s| s.calls as f64 / count),
            redis(&|s| s.scripts as f64 / count),
            redis(&|s| s.cpu.as_secs_f64() * 1e6 / count),
            nats,
        );
    }
    println!();
    println!(
        "worker: this process's runtime threads (wharf and the store clients); process: all of it. \
         redis: the server's commands (those run by scripts included), script calls and CPU, per message; \
         nats-srv: CPU of the local nats-server per message (KV round trips not measured)."
    );
}
