//! The Redis store over TLS (`rediss://`), against a `redis-server` this
//! test starts with TLS only, on a free loopback port, with a CA and server
//! certificate it makes with the `openssl` command: idempotency through
//! `RedisStore::connect_with_ca`, a clear refusal without the CA, over
//! plain `redis://`, or with a CA for a plain URL, and the worker
//! (`examples/worker.rs`) given the CA by `WHARF_STORE_CA_FILE`.
//!
//! Needs `/usr/bin/redis-server` built with TLS and `openssl`
//! (`scripts/brokers.sh` installs both); skips loudly without them and
//! fails with `CI=true`. The server is stopped by its pid when the test
//! ends, passed or failed.

#![cfg(feature = "redis")]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{skip, unique_queue};
use wharf::store::{Claim, RedisStore, Store, StoredReply};
use wharf::{App, Broker, BrokerErrorKind, Message, RouteOptions};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A TLS-only `redis-server` and its certificates in a directory of their
/// own; the server is killed by its pid and the directory removed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsRedis {
    /// Starts one, or `None` (a loud skip) when `redis-server` or `openssl`
    /// is missing.
    fn start(test: &str) -> Option<TlsRedis> {
        if let Err(why) = support::local_server::installed(REDIS_SERVER) {
            skip(test, &why);
            return None;
        }
        let openssl = || Command::new("openssl").arg("version").output().is_ok();
        if !openssl() {
            // scripts/brokers.sh installs it too.
            let ran = support::start_brokers();
            if !openssl() {
                let after = ran.map_or_else(
                    |why| why,
                    |printed| format!("scripts/brokers.sh said:\n{printed}"),
                );
                skip(
                    test,
                    &format!("the openssl command is missing (it makes the test certificates); {after}"),
                );
                return None;
            }
        }
        let dir = std::env::temp_dir().join(unique_queue("redis-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let port = free_port();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut server = TlsRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(server.addr()).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited with {status}: is it built with TLS (redis-server --help)?");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server listens on {}",
                server.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).unwrap()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA (`ca.crt`) and a server certificate it signed for 127.0.0.1 and
/// localhost (`server.crt`, `server.key`), P-256 keys, valid for two days.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=wharf test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // redis-server runs as whoever runs the test; the key stays private.
}

#[tokio::test]
async fn idempotency_works_through_a_store_over_tls() {
    let Some(server) = TlsRedis::start("redis_tls::idempotency_works_through_a_store_over_tls") else {
        return;
    };
    let url = format!("rediss://{}", server.addr());
    let store = RedisStore::connect_with_ca(&url, &server.ca())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .with_prefix("wharf-tls-test:");

    // The store's own steps: claim, a concurrent duplicate, completion with
    // a reply, and the duplicate that gets the reply again.
    let lease = Duration::from_secs(30);
    let Claim::Acquired(token) = store.claim("q/order-1", lease).await.unwrap() else {
        panic!("a new key is acquired")
    };
    assert_eq!(store.claim("q/order-1", lease).await.unwrap(), Claim::InProgress);
    let reply = StoredReply {
        body: bytes::Bytes::from_static(b"{\"ok\":true}"),
        content_type: "application/json".into(),
    };
    store
        .complete("q/order-1", token, Some(reply.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.claim("q/order-1", lease).await.unwrap(),
        Claim::Done(Some(reply))
    );

    // A whole app: three copies of one keyed message run the handler once.
    let broker = Broker::memory();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let queue = unique_queue("redis-tls");
    let running = App::new(broker.clone())
        .route_with(
            &queue,
            move |_order: u64| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {}
            },
            RouteOptions::new(),
        )
        .store(store)
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        let message = Message::new(&b"1"[..])
            .with_content_type(wharf::codec::JSON)
            .with_idempotency_key("order-2");
        broker.client().send(&queue, message).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.stats(&queue).acked + running.stats(&queue).duplicates < 3 {
        assert!(Instant::now() < deadline, "{:?}", running.stats(&queue));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = running.stats(&queue);
    running.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{stats:?}");
    assert_eq!(stats.duplicates, 2, "{stats:?}");
}

#[tokio::test]
async fn a_wrong_setup_is_refused_clearly() {
    let Some(server) = TlsRedis::start("redis_tls::a_wrong_setup_is_refused_clearly") else {
        return;
    };
    let started = Instant::now();

    // rediss:// without the CA: the system's trust store does not know it.
    let error = RedisStore::connect(&format!("rediss://user:hunter2@{}", server.addr()))
        .await
        .expect_err("an unknown CA is refused");
    let shown = support::chain(&error);
    eprintln!("rediss:// without the CA: {shown}");
    assert!(error.is_connection(), "{shown}");
    assert!(
        shown.contains("certificate") || shown.contains("UnknownIssuer"),
        "{shown}"
    );
    assert!(!format!("{shown} {error:?}").contains("hunter2"), "{shown}");

    // Plain redis:// to the TLS port: the server drops the connection.
    let error = RedisStore::connect(&format!("redis://{}", server.addr()))
        .await
        .expect_err("plain text to a TLS port fails");
    let shown = support::chain(&error);
    eprintln!("redis:// to the TLS port: {shown}");
    assert!(error.is_connection(), "{shown}");
    assert!(shown.contains("use rediss://"), "the error suggests TLS: {shown}");

    // A CA for a plain URL, or a CA file that holds no certificate.
    let error = RedisStore::connect_with_ca(&format!("redis://{}", server.addr()), &server.ca())
        .await
        .expect_err("a CA needs rediss://");
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{error}");
    let error = RedisStore::connect_with_ca(&format!("rediss://{}", server.addr()), b"not a PEM")
        .await
        .expect_err("a CA must be a PEM certificate");
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// The example worker, built by `cargo test` next to this test binary (or
/// built now).
fn worker_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let built = deps.parent().unwrap().join("examples/worker");
    if built.exists() {
        return built;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--example", "worker", "--features", "amqp,nats,redis"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/worker failed");
    built
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(store_url: &str, ca_file: Option<&Path>, http: SocketAddr) -> Worker {
    let mut command = Command::new(worker_binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WHARF_BROKER_URL", "memory://")
        .env("WHARF_STORE_URL", store_url)
        .env("WHARF_HTTP_ADDR", http.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ca_file) = ca_file {
        command.env("WHARF_STORE_CA_FILE", ca_file);
    }
    Worker(command.spawn().expect("the worker starts"))
}

#[tokio::test]
async fn the_worker_takes_the_ca_from_wharf_store_ca_file() {
    let Some(server) = TlsRedis::start("redis_tls::the_worker_takes_the_ca_from_wharf_store_ca_file") else {
        return;
    };
    let url = format!("rediss://{}", server.addr());

    // With the CA: the store connects and the worker becomes ready.
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut worker = start_worker(&url, Some(&server.ca_file()), http);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(http).await.is_ok()
            && support::http_get(http, "/readyz").await.0 == 200
        {
            break;
        }
        if let Ok(Some(status)) = worker.0.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the worker exited with {status}: {stderr}");
        }
        assert!(Instant::now() < deadline, "the worker became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(worker);

    // Without it: the worker stops at once, saying why.
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut worker = start_worker(&url, None, http);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker stops without the CA");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}
