//! The Redis server: its statistics (`INFO commandstats`, `INFO cpu`), the
//! key prefixes of the runs, and deleting their keys.
//!
//! Commands are counted from `INFO commandstats`. Its `calls`, like
//! `total_commands_processed` of `INFO stats`, count the commands scripts
//! run as well as those clients send: checked on Redis 7.0.15, 100 `EVAL`s
//! of a script making 3 `redis.call`s raised `total_commands_processed` by
//! 401 (100 + 300, and one `INFO`). So neither gives the round trips. These
//! are counted as the calls of the commands no script of `RedisStore` runs
//! (`EVALSHA`, `EVAL`, `SCRIPT`, `SUBSCRIBE`, …), `INFO` left out: the
//! store's direct `HMGET` (a session's position, asked by the gap watcher)
//! and `GET` (a handler's session state) are run by scripts too and cannot
//! be told apart, so they are not in it. Checked with `MONITOR` over a
//! smoke run of `amqp/redis/*` (400 messages): the store sent 800
//! `EVALSHA` and one `SUBSCRIBE`, nothing else, and the bench counted
//! 2.00 round trips per message.
//!
//! The counters are the server's: commands of other clients during a run
//! count too (a shared Redis inflates the figures).

use redis::aio::MultiplexedConnection;
use std::sync::Mutex;
use std::time::Duration;

/// The commands the store's scripts run (`redis.call` in
/// `src/store/redis/scripts/*.lua`), lower-case as `INFO commandstats` names
/// them.
const SCRIPT_COMMANDS: [&str; 11] = [
    "del", "exists", "get", "hget", "hmget", "hset", "hsetnx", "pexpire", "pttl", "publish", "set",
];

/// A connection of the bench's own to the Redis server.
pub struct Redis {
    url: String,
    connection: MultiplexedConnection,
    /// The prefixes handed out and not yet cleared.
    prefixes: Mutex<Vec<String>>,
}

/// The server's counters at one moment, or their change over a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisStats {
    /// Commands run (the sum of `calls` over `INFO commandstats`), those
    /// run by scripts included.
    pub calls: u64,
    /// Script calls (`evalsha`, `eval` and their read-only forms): the
    /// store's round trips that run a script.
    pub scripts: u64,
    /// Calls of the commands no script of the store runs, `INFO` left out:
    /// the round trips (see the module's comment).
    pub top_level: u64,
    /// `used_cpu_sys` + `used_cpu_user`.
    pub cpu: Duration,
}

impl RedisStats {
    /// The change from `before` to this one, less the `INFO` calls that
    /// read them.
    pub fn since(&self, before: &RedisStats) -> RedisStats {
        RedisStats {
            // The two INFO calls of `stats` before this one.
            calls: self.calls.saturating_sub(before.calls).saturating_sub(2),
            scripts: self.scripts.saturating_sub(before.scripts),
            top_level: self.top_level.saturating_sub(before.top_level),
            cpu: self.cpu.saturating_sub(before.cpu),
        }
    }
}

impl Redis {
    /// Connects, or `None` when the server cannot be reached within 3 s.
    pub async fn connect(url: &str) -> Option<Redis> {
        let client = redis::Client::open(url).ok()?;
        let connection =
            tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection())
                .await
                .ok()?
                .ok()?;
        Some(Redis {
            url: url.to_owned(),
            connection,
            prefixes: Mutex::new(Vec::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix of run `run` of this bench, to be cleared.
    pub fn new_prefix(&self, run_id: &str, run: u64) -> String {
        let prefix = format!("wharf-bench:{run_id}:{run}:");
        self.prefixes.lock().unwrap().push(prefix.clone());
        prefix
    }

    async fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.connection.clone())
            .await
            .expect("Redis INFO")
    }

    /// The server's counters now.
    pub async fn stats(&self) -> RedisStats {
        let commands = self.info("commandstats").await;
        let cpu = self.info("cpu").await;
        let mut stats = RedisStats::default();
        for line in commands.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls: u64 = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            stats.calls += calls;
            if name.starts_with("eval") {
                stats.scripts += calls;
            }
            if !SCRIPT_COMMANDS.contains(&name) && name != "info" {
                stats.top_level += calls;
            }
        }
        let mut seconds = 0.0;
        for line in cpu.lines() {
            if let Some((name, value)) = line.trim().split_once(':')
                && (name == "used_cpu_sys" || name == "used_cpu_user")
            {
                seconds += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        stats.cpu = Duration::from_secs_f64(seconds);
        stats
    }

    /// Deletes every key under the prefixes handed out so far.
    pub async fn clear(&self) {
        let prefixes = std::mem::take(&mut *self.prefixes.lock().unwrap());
        let mut connection = self.connection.clone();
        for prefix in prefixes {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await
                    .expect("Redis SCAN");
                if !keys.is_empty() {
                    let _: u64 = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async(&mut connection)
                        .await
                        .expect("Redis UNLINK");
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
}
