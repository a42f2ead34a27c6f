//! The NATS server goes away and comes back in the middle of a run: nothing
//! is lost, the worker reconnects and its JetStream consumers resume by
//! themselves, readiness follows the connection, and requests fail clearly
//! instead of hanging while the server is gone.
//!
//! Its own test binary: it stops the local nats-server (SIGTERM) and starts
//! it again with this machine's usual command (the one in
//! `scripts/brokers.sh`), which no other test may see. Whatever happens, the
//! server is running again when the test is over: a guard's `Drop` starts it
//! (also when the test panics midway).
//!
//! Run with `cargo test --features nats --test nats_restart -- --nocapture`
//! (as a user allowed to signal nats-server and run start-stop-daemon, i.e.
//! root here). It skips loudly when the server is not local and controllable;
//! with `CI=true` that fails instead.
//!
//! `-- --ignored restart_helper` runs only the stop/start helper against the
//! real server (no wharf involved).

#![cfg(feature = "nats")]

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{skip, unique_queue, wait_for};
use wharf::{App, Broker, BrokerErrorKind, Context, RouteOptions};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const ADDR: &str = "127.0.0.1:4222";
const SERVER: &str = "/usr/sbin/nats-server";
/// Exactly how this machine starts the server (scripts/brokers.sh).
const START: &[&str] = &[
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    SERVER,
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
];
const MESSAGES: u64 = 5_000;

/// The tests in this binary that restart the server take turns.
static SERVER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
}

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

fn addr() -> SocketAddr {
    ADDR.parse().unwrap()
}

// ---- controlling the local server -----------------------------------------

/// Pids of the nats-server processes serving port 4222 (ones started with
/// another `-p`/`--port` are left alone).
fn server_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "nats-server" {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mut port = "4222".to_owned();
        for (i, arg) in args.iter().enumerate() {
            let flag = arg.trim_start_matches('-');
            if let Some(value) = flag.strip_prefix("port=").or_else(|| flag.strip_prefix("p=")) {
                port = value.to_owned();
            } else if (flag == "p" || flag == "port") && i + 1 < args.len() {
                port = args[i + 1].clone();
            }
        }
        if port == "4222" && !is_zombie(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn port_refuses() -> bool {
    match TcpStream::connect_timeout(&addr(), Duration::from_secs(1)) {
        Ok(_) => false,
        Err(error) => error.kind() == ErrorKind::ConnectionRefused,
    }
}

/// One JetStream API request over a bare NATS connection (no client
/// library, so it also works inside `Drop` and without a runtime): the
/// reply's payload, or `None` when the server is unreachable or nothing
/// answers (JetStream not up yet: "no responders").
fn js_api(subject: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("INFO ") {
        return None;
    }
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\
         \"protocol\":1,\"name\":\"wharf-restart-probe\"}}\r\n\
         SUB _INBOX.wharf-restart-probe 1\r\nPUB {subject} _INBOX.wharf-restart-probe 0\r\n\r\nPING\r\n"
    );
    stream.write_all(hello.as_bytes()).ok()?;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("MSG") => {
                let size: usize = words.last()?.parse().ok()?;
                let mut payload = vec![0; size + 2];
                reader.read_exact(&mut payload).ok()?;
                payload.truncate(size);
                return Some(String::from_utf8_lossy(&payload).into_owned());
            }
            // A status message: 503 no responders.
            Some("HMSG") | Some("-ERR") => return None,
            Some("PING") => stream.write_all(b"PONG\r\n").ok()?,
            _ => {}
        }
    }
}

/// The server accepts connections and JetStream answers its API.
fn jetstream_answers() -> bool {
    js_api("$JS.API.INFO")
        .is_some_and(|info| info.contains("account_info_response") && !info.contains("\"error\""))
}

/// SIGTERM to the server; waits until it has exited and the port refuses.
fn stop_server() -> Result<Duration, String> {
    let started = Instant::now();
    let pids = server_pids();
    if pids.is_empty() {
        return Err("no nats-server process serves port 4222".into());
    }
    for &pid in &pids {
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal nats-server (pid {pid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let deadline = started + Duration::from_secs(30);
    while pids.iter().any(|&pid| alive(pid)) || !port_refuses() {
        if Instant::now() > deadline {
            return Err(format!(
                "nats-server {pids:?} still running or port 4222 still open 30 s after SIGTERM"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// Starts the server with this machine's usual command; waits until it
/// accepts connections and JetStream answers.
fn start_server() -> Result<Duration, String> {
    let started = Instant::now();
    let status = Command::new("start-stop-daemon")
        .args(START)
        .status()
        .map_err(|e| format!("cannot run start-stop-daemon: {e}"))?;
    if !status.success() {
        return Err(format!("start-stop-daemon {START:?} failed: {status}"));
    }
    let deadline = started + Duration::from_secs(30);
    while !jetstream_answers() {
        if Instant::now() > deadline {
            return Err("nats-server started but JetStream did not answer within 30 s \
                 (see /var/log/nats-server.log)"
                .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(started.elapsed())
}

/// Makes sure the server runs: waits for one that is starting or stopping,
/// starts it when none is left.
fn ensure_server_running() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if jetstream_answers() {
            return Ok(());
        }
        if server_pids().is_empty() {
            return start_server().map(drop);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nats-server {:?} is running but JetStream does not answer on {ADDR}",
                server_pids()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why this machine's server cannot be restarted by this test, if it cannot.
fn not_controllable(url: &str) -> Option<String> {
    let host_port = url
        .strip_prefix("nats://")
        .map(|rest| rest.rsplit_once('@').map_or(rest, |(_, hp)| hp))
        .map(|hp| hp.trim_end_matches('/'));
    if !matches!(
        host_port,
        Some("127.0.0.1:4222" | "localhost:4222" | "127.0.0.1" | "localhost")
    ) {
        return Some(format!(
            "WHARF_TEST_NATS_URL is not the local server on {ADDR}; it cannot be restarted from here"
        ));
    }
    if !std::path::Path::new(SERVER).exists() {
        return Some(format!("{SERVER} is not installed"));
    }
    if Command::new("start-stop-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("start-stop-daemon is not installed".into());
    }
    let pids = server_pids();
    if pids.is_empty() {
        return Some(format!(
            "no local nats-server process serves {ADDR} (run scripts/brokers.sh; a server in a \
             container cannot be restarted from here)"
        ));
    }
    if pids.iter().any(|&pid| unsafe { libc::kill(pid, 0) } != 0) {
        return Some(format!(
            "not allowed to signal nats-server {pids:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !jetstream_answers() {
        return Some(format!(
            "nats-server on {ADDR} does not answer JetStream requests"
        ));
    }
    None
}

/// `WHARF_<enc(queue)>` etc. (docs: /tmp/nats-spec.md): only for deleting
/// what a panicked run leaves behind.
fn enc(queue: &str) -> String {
    let mut out = String::new();
    for b in queue.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Starts the server again when dropped, whatever happened; when the test
/// did not get to delete its queue, deletes the queue's streams.
struct Restore {
    queue: Option<String>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(error) = ensure_server_running() {
            eprintln!("\n!!! could not restart nats-server after the test: {error}\n");
            return;
        }
        if let Some(queue) = self.queue.take() {
            delete_streams(&queue);
        }
    }
}

/// Deletes the streams of `queue` (best effort, without the transport).
fn delete_streams(queue: &str) {
    let dlq = format!("{queue}.dlq");
    for stream in [
        format!("WHARF_{}", enc(queue)),
        format!("WHARF_{}", enc(&dlq)),
        format!("WHARFDELAY_{}", enc(queue)),
        format!("WHARFDELAY_{}", enc(&dlq)),
    ] {
        js_api(&format!("$JS.API.STREAM.DELETE.{stream}"));
    }
}

// ---- the tests -------------------------------------------------------------

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[derive(Default)]
struct Seen {
    ids: HashSet<u64>,
    runs: u64,
    /// Runs with `Context::attempt() > 1`: JetStream redeliveries.
    redelivered: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_run_loses_nothing() {
    let _turn = SERVER_LOCK.lock().await;
    let url = url();
    if let Err(why) = support::broker_reachable(&url) {
        return skip("nats_restart", &format!("NATS is not reachable: {why}"));
    }
    if let Some(why) = not_controllable(&url) {
        return skip("nats_restart", &why);
    }
    let began = Instant::now();
    let broker = match tokio::time::timeout(Duration::from_secs(15), Broker::connect(&url)).await {
        Ok(Ok(broker)) => broker,
        Ok(Err(error)) => return skip("nats_restart", &format!("NATS is not usable: {error}")),
        Err(_) => panic!("Broker::connect({url}) hung for 15 s"),
    };
    assert_eq!(broker.kind(), "nats");
    let queue = unique_queue("restart");
    // From here on the server runs again at the end, whatever happens.
    let mut restore = Restore {
        queue: Some(queue.clone()),
    };
    // Also when the run is interrupted (Ctrl-C, or SIGTERM from a CI timeout).
    let interrupted = tokio::spawn({
        let queue = queue.clone();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (mut int, mut term) = (
                signal(SignalKind::interrupt()).unwrap(),
                signal(SignalKind::terminate()).unwrap(),
            );
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("\n!!! interrupted: making sure nats-server runs before exiting");
            match blocking(ensure_server_running).await {
                Ok(()) => blocking(move || delete_streams(&queue)).await,
                Err(error) => eprintln!("!!! could not restart nats-server: {error}"),
            }
            std::process::exit(130);
        }
    });

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    let handler = move |ctx: Context, order: Order| {
        let record = record.clone();
        async move {
            let mut seen = record.lock().unwrap();
            seen.ids.insert(order.id);
            seen.runs += 1;
            if ctx.attempt() > 1 {
                seen.redelivered += 1;
            }
        }
    };
    let running = App::new(broker.clone())
        .route_with(&queue, handler, RouteOptions::new().concurrency(32))
        .http("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let health = running.health();
    assert!(health.is_ready());
    let ops = running.http_addr().expect("operations listener");
    assert_eq!(support::http_get(ops, "/readyz").await.0, 200);

    // The publisher keeps going through the outage, retrying what fails. It
    // is paced (about 1 ms a message) so that the outage falls in the middle.
    let publisher = {
        let (client, queue) = (broker.client(), queue.clone());
        tokio::spawn(async move {
            let mut retries = 0u64;
            let mut last_error = None;
            let mut slowest_failure = Duration::ZERO;
            for id in 0..MESSAGES {
                loop {
                    let publishing = Instant::now();
                    match client.publish(&queue, &Order { id }).await {
                        Ok(()) => break,
                        Err(error) => {
                            retries += 1;
                            slowest_failure = slowest_failure.max(publishing.elapsed());
                            last_error = Some(format!("{:?}: {error}", error.kind()));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (retries, last_error, slowest_failure)
        })
    };
    let distinct = || seen.lock().unwrap().ids.len() as u64;
    wait_for("1,000 messages handled", Duration::from_secs(60), || {
        distinct() >= 1_000
    })
    .await;

    // ---- the server goes away ----
    let stopped_at = Instant::now();
    let stop_took = blocking(stop_server).await.unwrap_or_else(|e| panic!("{e}"));
    let handled_at_stop = distinct();
    let not_ready_after = wait_for("readiness to go false", Duration::from_secs(30), || {
        !health.is_ready()
    })
    .await
        + stop_took;
    support::assert_reconnecting(ops).await;
    assert!(
        handled_at_stop < MESSAGES,
        "the server went away mid-run (all {MESSAGES} were handled before the stop)"
    );

    // While the server is away, a request fails clearly instead of hanging.
    // A miss here is recorded and the run goes on, to see the rest too.
    let mut problems = Vec::new();
    let asked = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        broker
            .client()
            .request_timeout::<_, u64>(&queue, &1u64, Duration::from_secs(30)),
    )
    .await;
    let waited = asked.elapsed();
    match answer {
        Err(_) => problems.push(format!(
            "a request while the server is down hung past its own 30 s timeout ({waited:?})"
        )),
        Ok(Ok(reply)) => problems.push(format!(
            "a request while the server is down got a reply ({reply}) after {waited:?}"
        )),
        Ok(Err(error)) => {
            if !matches!(&error, wharf::RequestError::Broker(e) if e.kind() == BrokerErrorKind::Connection) {
                problems.push(format!(
                    "a request while the server is down: expected a Connection error, got \
                     after {waited:?}: {error} ({error:?})"
                ));
            } else if waited >= Duration::from_secs(10) {
                problems.push(format!(
                    "a request while the server is down failed only after {waited:?} \
                     (timeout 30 s): {error}"
                ));
            } else {
                eprintln!("request while down failed in {waited:?}: {error}");
            }
        }
    }

    // Down for a couple of seconds at least, so the publisher meets it too.
    let down_min = Duration::from_secs(2);
    if stopped_at.elapsed() < down_min {
        tokio::time::sleep(down_min - stopped_at.elapsed()).await;
    }

    // ---- the server comes back ----
    let start_took = blocking(start_server).await.unwrap_or_else(|e| panic!("{e}"));
    let outage = stopped_at.elapsed();
    let ready_after = wait_for("readiness to come back", Duration::from_secs(60), || {
        health.is_ready()
    })
    .await;
    support::assert_reconnected(ops, broker.kind()).await;
    let (retries, last_publish_error, slowest_failure) =
        tokio::time::timeout(Duration::from_secs(120), publisher)
            .await
            .expect("the publisher finished within 120 s of the restart")
            .unwrap();
    let drained_after = wait_for(
        "every message handled after the restart",
        Duration::from_secs(120),
        || distinct() == MESSAGES,
    )
    .await;

    let report = tokio::time::timeout(Duration::from_secs(60), running.shutdown())
        .await
        .expect("shutdown finished within 60 s");
    let stats = report.stats(&queue);
    let (runs, redelivered) = {
        let seen = seen.lock().unwrap();
        (seen.runs, seen.redelivered)
    };
    eprintln!(
        "nats restart run, whole test {:?}:\n\
         - {MESSAGES} distinct messages handled in {runs} handler runs ({} repeated, \
         {redelivered} of them JetStream redeliveries); {handled_at_stop} handled before the stop\n\
         - SIGTERM to port closed {stop_took:?}; readiness false {not_ready_after:?} after SIGTERM; \
         server down {outage:?}\n\
         - request while down answered in {waited:?}\n\
         - start to JetStream answering {start_took:?}; readiness back {ready_after:?} after that; \
         the rest handled {drained_after:?} after the publisher finished\n\
         - {retries} publish retries, a failed publish took up to {slowest_failure:?}, \
         last error: {last_publish_error:?}\n\
         - route stats {stats:?}",
        began.elapsed(),
        runs - MESSAGES,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        (stats.dead_lettered, stats.rejected),
        (0, 0),
        "nothing dead-lettered or rejected (a rejected message would be the request made \
         during the outage, delivered to the queue after all)"
    );
    assert_eq!(
        broker.queue_depth(&queue).await.unwrap(),
        0,
        "nothing left behind"
    );
    assert!(broker.dead_letters(&queue).list(10).await.unwrap().is_empty());
    broker.delete_queue(&queue).await.unwrap();
    restore.queue = None;
    broker.close().await;
    interrupted.abort();
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        Broker::connect("nats://wharf:s3cret@127.0.0.1:1"),
    )
    .await
    .expect("connecting to a closed port hung")
    .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{error}");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The stop/start helper alone, against the real server: stop, see the port
/// refuse, start, see JetStream answer (and the guard's restart after a
/// panic with the server down).
#[tokio::test]
async fn restart_helper_works() {
    let _turn = SERVER_LOCK.lock().await;
    if let Err(why) = support::broker_reachable(&url()) {
        return skip("nats_restart", &format!("NATS is not reachable: {why}"));
    }
    if let Some(why) = not_controllable(&url()) {
        return skip("nats_restart", &why);
    }
    blocking(|| {
        let restore = Restore { queue: None };
        let stop = stop_server().unwrap();
        assert!(port_refuses() && server_pids().is_empty() && !jetstream_answers());
        let start = start_server().unwrap();
        assert!(jetstream_answers() && !server_pids().is_empty());
        eprintln!("stop took {stop:?}, start until JetStream answered {start:?}");

        // A panic while the server is down: the guard starts it.
        let panicked = std::thread::spawn(move || {
            let _restore = restore;
            stop_server().unwrap();
            panic!("deliberate panic with the server down");
        })
        .join();
        assert!(panicked.is_err());
        assert!(jetstream_answers(), "the guard restarted the server");
        eprintln!("the guard restarted the server after a panic");
    })
    .await;
}
