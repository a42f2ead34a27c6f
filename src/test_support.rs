//! What the broker tests share: the crate's own unit tests use this module,
//! and `tests/support` and the behaviour suite include the same file by
//! path, so there is one copy of it.
//!
//! - The skip policy: a missing broker is a loud skip, and a failure under
//!   `CI=true`.
//! - The set-up on first use: `scripts/*.sh` run under one file lock, so
//!   test binaries running at the same time do not race on the same
//!   directory or start the same broker twice.
//! - [`broker_reachable`]: a broker that does not answer is started by
//!   `scripts/brokers.sh` (once per test binary) before the test gives up
//!   on it. When the brokers are up it costs one loopback TCP connect.
#![allow(dead_code)] // Each test binary uses part of it.

use std::fs::File;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Whether this is CI (`CI=true` or `CI=1`), where nothing may skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips `test` loudly because of `why`, or fails under CI.
pub fn skip(test: &str, why: &str) {
    assert!(!ci(), "CI=true and {test} cannot run: {why}");
    eprintln!("\n!!! SKIPPED: {test}: {why}. With CI=true this fails.\n");
}

/// The checkout: where `scripts/` is, and where the scripts run.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/<script>` while holding the provisioning lock and returns
/// what it printed, or says why it failed, with its output. The lock is
/// `target/tmp/wharf-provision.lock` in the checkout: one file for the unit
/// tests and the integration tests alike (`CARGO_TARGET_TMPDIR` is only
/// known to the latter).
pub fn run_script(script: &str) -> Result<String, String> {
    let dir = root().join("target").join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("wharf-provision.lock");
    let lock = File::create(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", path.display()))?;
    let output = Command::new(root().join("scripts").join(script))
        .current_dir(root())
        .output()
        .map_err(|e| format!("scripts/{script} did not start: {e}"))?;
    drop(lock);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim_end()
    .to_owned();
    if output.status.success() {
        return Ok(printed);
    }
    Err(format!("scripts/{script} failed ({}):\n{printed}", output.status))
}

/// Runs `scripts/brokers.sh`, which installs and starts whichever of
/// RabbitMQ, NATS and Redis is not up, at most once per test binary; later
/// calls (and tests waiting on the first) get the same outcome: what it
/// printed, or why it failed.
pub fn start_brokers() -> Result<String, String> {
    static RUN: OnceLock<Result<String, String>> = OnceLock::new();
    RUN.get_or_init(|| {
        eprintln!("wharf tests: a broker is not up; running scripts/brokers.sh");
        run_script("brokers.sh")
    })
    .clone()
}

/// Whether something answers on the host and port of the broker `url`
/// (`amqp://`, `nats://`, `redis://` and their TLS forms; the first server
/// of a list). When nothing does and the host is this machine,
/// [`start_brokers`] runs and it checks again. `Err` says why the broker
/// is still unreachable, with the script's output, for the caller's
/// [`skip`]. A URL it cannot read is left to the client (`Ok`).
pub fn broker_reachable(url: &str) -> Result<(), String> {
    let Some((host, port)) = host_and_port(url) else {
        return Ok(());
    };
    let Err(error) = answers(&host, port) else {
        return Ok(());
    };
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return Err(format!(
            "nothing answers on {host}:{port} ({error}), not this machine: \
             scripts/brokers.sh cannot start it"
        ));
    }
    let ran = start_brokers();
    match answers(&host, port) {
        Ok(()) => Ok(()),
        Err(error) => Err(format!(
            "nothing answers on {host}:{port} ({error}), even after {}",
            match ran {
                Ok(printed) => format!("scripts/brokers.sh, which said:\n{printed}"),
                Err(why) => why,
            }
        )),
    }
}

/// A TCP connection to `host:port`, at once closed.
fn answers(host: &str, port: u16) -> Result<(), String> {
    let addresses = (host, port).to_socket_addrs().map_err(|e| e.to_string())?;
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(error) => last = error.to_string(),
        }
    }
    Err(last)
}

/// The host and port of a broker URL, with the scheme's default port.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next()?.trim();
    let (scheme, rest) = first.split_once("://")?;
    let default = match scheme {
        "amqp" => 5672,
        "amqps" => 5671,
        "nats" | "tls" => 4222,
        "redis" | "rediss" => 6379,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default,
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Some((host.to_owned(), port))
}
