//! The report: one line per scenario, medians of its runs; then the
//! stores' statistics per message.

use crate::bench::StoreFigures;
use crate::common::measured::{Measured, median, spread};
use crate::common::report::thousands;
use crate::kv_stats::KvStats;
use crate::redis_stats::RedisStats;
use crate::scenario::{Mode, Scenario, StoreKind, Transport};

/// The median of the values there are, or `-` if none.
fn figure(values: Vec<Option<f64>>, decimals: usize) -> String {
    let values: Vec<f64> = values.into_iter().flatten().collect();
    if values.is_empty() {
        return "-".to_owned();
    }
    format!("{:.decimals$}", median(values))
}

/// The worker's CPU µs per message: the runtime's threads and lapin's.
fn worker_per(run: &Measured) -> f64 {
    run.workers_per() + run.helpers_per()
}

/// The store figures of the measured runs of `name`.
fn figures_of<'a>(figures: &'a [(String, StoreFigures)], name: &str) -> Vec<&'a StoreFigures> {
    figures
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, f)| f)
        .collect()
}

pub fn print(results: &[(Scenario, Vec<Measured>)], figures: &[(String, StoreFigures)]) {
    let plain = |transport: Transport| {
        results
            .iter()
            .find(|(s, runs)| s.transport == transport && s.mode == Mode::Plain && !runs.is_empty())
            .map(|(_, runs)| spread(runs, Measured::rate).0)
    };
    println!();
    println!(
        "{:<28} {:>10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "msg/s", "ratio", "worker", "process", "deferred", "redis", "nats-srv"
    );
    println!(
        "{:<28} {:>10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "(median)", "/plain", "µs/msg", "µs/msg", "", "µs/msg", "µs/msg"
    );
    for (scenario, runs) in results {
        if runs.is_empty() {
            continue;
        }
        let name = scenario.name();
        let ours = figures_of(figures, &name);
        let rate = spread(runs, Measured::rate).0;
        let ratio = plain(scenario.transport).map_or("-".to_owned(), |plain| format!("{:.2}", rate / plain));
        let count = runs[0].count as f64;
        let redis = figure(
            ours.iter()
                .map(|o| o.redis.map(|r| r.cpu.as_secs_f64() * 1e6 / count))
                .collect(),
            1,
        );
        let nats = if scenario.store == StoreKind::NatsKv || scenario.transport == Transport::Nats {
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
            "{:<28} {:>10} {:>6} {:>8.2} {:>8.2} {:>8} {:>8} {:>8}",
            name,
            thousands(rate),
            ratio,
            spread(runs, worker_per).0,
            spread(runs, Measured::cpu_per).0,
            figure(ours.iter().map(|o| Some(o.deferred as f64)).collect(), 0),
            redis,
            nats,
        );
    }
    println!();
    println!(
        "worker: this process's runtime threads (wharf, the store clients, async-nats) and lapin's I/O \
         threads; process: all of it. redis: the Redis server's CPU; nats-srv: the local nats-server's \
         CPU (on nats/* rows the broker's work too: compare with nats/plain)."
    );
    print_store_stats(results, figures);
}

/// The second table: what the stores' servers and connections counted.
fn print_store_stats(results: &[(Scenario, Vec<Measured>)], figures: &[(String, StoreFigures)]) {
    println!();
    println!(
        "{:<28} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "store statistics", "redis", "redis", "redis", "kv conn", "kv conn", "kv", "js api"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "(per message, median)", "trips", "cmds", "scripts", "sent", "received", "writes", "requests"
    );
    for (scenario, runs) in results {
        if runs.is_empty() || !matches!(scenario.store, StoreKind::Redis | StoreKind::NatsKv) {
            continue;
        }
        let name = scenario.name();
        let ours = figures_of(figures, &name);
        let count = runs[0].count as f64;
        let redis = |f: fn(&RedisStats) -> u64| {
            figure(
                ours.iter()
                    .map(|o| o.redis.as_ref().map(|r| f(r) as f64 / count))
                    .collect(),
                2,
            )
        };
        let kv = |f: fn(&KvStats) -> Option<u64>| {
            figure(
                ours.iter()
                    .map(|o| o.kv.as_ref().and_then(f).map(|v| v as f64 / count))
                    .collect(),
                2,
            )
        };
        println!(
            "{:<28} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
            name,
            redis(|r| r.top_level),
            redis(|r| r.calls),
            redis(|r| r.scripts),
            kv(|k| Some(k.sent)),
            kv(|k| Some(k.received)),
            kv(|k| Some(k.writes)),
            kv(|k| k.api),
        );
    }
    println!();
    println!(
        "redis (INFO commandstats: server-wide, other clients' commands count too): trips = calls of commands no store script runs \
         (EVALSHA, EVAL, SCRIPT, SUBSCRIBE…; INFO left out), the store's round trips; cmds = all \
         commands, those scripts ran included; scripts = EVALSHA + EVAL. kv conn: messages the \
         NATS KV store's own connection sent (requests and publishes: its round trips) and received \
         (replies, session changes heard); kv writes: writes the buckets' streams stored \
         (last_sequence); js api: the account's JetStream API requests (api.total; account-wide: \
         on nats/* rows wharf's consumer's too)."
    );
}
