//! Broker servers a test starts itself, with a configuration the shared
//! ones must not get (authorization, say): on a free loopback port, with
//! their own data directory, stopped by pid when the guard is dropped
//! (also when the test panics). The shared servers on the usual ports are
//! never touched.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where this machine's nats-server is (`scripts/brokers.sh`).
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Where this machine's redis-server is (`scripts/brokers.sh`).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a server may take to answer on its port.
const STARTUP: Duration = Duration::from_secs(15);

/// A server this test started; killed (by its pid) and its directory
/// removed when dropped.
pub struct LocalServer {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
}

/// `Ok` when `program` is installed, after running `scripts/brokers.sh`
/// (which installs it) if it was not; else why it is still missing.
pub fn installed(program: &str) -> Result<(), String> {
    let here = || std::path::Path::new(program).exists();
    if here() {
        return Ok(());
    }
    let ran = super::shared::start_brokers();
    if here() {
        return Ok(());
    }
    Err(match ran {
        Ok(printed) => {
            format!("{program} is not installed, even after scripts/brokers.sh, which said:\n{printed}")
        }
        Err(why) => format!("{program} is not installed: {why}"),
    })
}

impl LocalServer {
    /// A nats-server with JetStream and `auth` (e.g. `["--user", "u",
    /// "--pass", "p"]` or `["--auth", "token"]`); `Err` says why it could
    /// not start (the caller skips, or fails under CI).
    pub fn nats(auth: &[&str]) -> Result<LocalServer, String> {
        LocalServer::start("nats", NATS_SERVER, |port, dir| {
            let mut args: Vec<String> = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
            args.push(dir.join("jetstream").display().to_string());
            args.extend(["-l".to_owned(), dir.join("server.log").display().to_string()]);
            args.extend(auth.iter().map(|a| (*a).to_owned()));
            args
        })
    }

    /// A redis-server that asks for `password` (`--requirepass`), keeping
    /// nothing on disk.
    pub fn redis(password: &str) -> Result<LocalServer, String> {
        LocalServer::start("redis", REDIS_SERVER, |port, dir| {
            [
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                &dir.join("server.log").display().to_string(),
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
        })
    }

    fn start(kind: &str, program: &str, args: impl Fn(u16, &PathBuf) -> Vec<String>) -> Result<Self, String> {
        installed(program)?;
        let mut last_error = String::new();
        // A free port can be taken by someone else before the server binds
        // it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let dir =
                std::env::temp_dir().join(format!("wharf-test-{kind}-{}-{nanos:x}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let child = Command::new(program)
                .args(args(port, &dir))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {program}: {e}"))?;
            let mut server = LocalServer { child, port, dir };
            match server.wait_until_answering(kind) {
                Ok(()) => return Ok(server),
                Err(why) => last_error = why, // dropped: killed and removed
            }
        }
        Err(last_error)
    }

    fn wait_until_answering(&mut self, kind: &str) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{kind} server on port {} exited: {status}", self.port));
            }
            if self.answers(kind) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{kind} server on port {} did not answer within {STARTUP:?}",
            self.port
        ))
    }

    /// Whether the server greets (NATS: its `INFO` line) or answers a
    /// `PING` (Redis: `+PONG`, or `-NOAUTH` when it wants a password).
    fn answers(&self, kind: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
        if kind == "redis" && stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        let read = BufReader::new(&mut stream).read_line(&mut line);
        read.is_ok()
            && (line.starts_with("INFO ") || line.starts_with("+PONG") || line.starts_with("-NOAUTH"))
    }

    /// What the server logged, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
