//! The operations listener: `/healthz` (the process is alive), `/readyz`
//! (connected, consuming, not draining) and `/metrics` (Prometheus text
//! format) on one address.
//!
//! Probes and scrapes are short `GET`s from the kubelet and Prometheus, so
//! this is a deliberately small HTTP/1.1 server on tokio (one request per
//! connection, bounded request size and time) rather than a web framework
//! in every worker.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::ops::health::{Health, Phase};
use crate::ops::metrics::exporter::MetricsExporter;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener serving until dropped.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl HttpServer {
    /// Binds `addr` and serves `health` and `metrics` from a task.
    pub(crate) async fn start(
        addr: SocketAddr,
        health: Health,
        metrics: Option<MetricsExporter>,
    ) -> Result<Self, BrokerError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Config,
                format!("cannot listen for /healthz, /readyz and /metrics on {addr}"),
            )
            .with_source(e)
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, health, metrics, stop.clone()));
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
        Ok(HttpServer { addr, stop })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    health: Health,
    metrics: Option<MetricsExporter>,
    stop: CancellationToken,
) {
    loop {
        let connection = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match connection {
            Ok((stream, _)) => {
                let health = health.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, &health, metrics.as_ref()).await {
                        tracing::debug!(error = %crate::error::Chain(&error), "operations request failed");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: pause, do not spin.
                tracing::warn!(error = %crate::error::Chain(&error), "accepting an operations connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One response.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    health: &Health,
    metrics: Option<&MetricsExporter>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let response = match head {
        Some(head) => respond(&head, health, metrics),
        None => Response::text("400 Bad Request", "request head too large or incomplete\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    out.push_str(&response.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the blank line ending the request head; `None` if it is
/// larger than [`MAX_REQUEST`] or the connection ends first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            // However the bytes were split into reads.
            if end > MAX_REQUEST {
                return Ok(None);
            }
            buffer.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buffer).into_owned()));
        }
        // Read on past the limit (up to a hard cap) so the answer is a 400,
        // not a connection reset for unread bytes.
        if buffer.len() > 8 * MAX_REQUEST {
            return Ok(None);
        }
    }
}

fn parse_request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split_ascii_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next()?.starts_with("HTTP/1.").then_some((method, target))
}

/// The answer to a request head.
fn respond(head: &str, health: &Health, metrics: Option<&MetricsExporter>) -> Response {
    let Some((method, target)) = parse_request_line(head) else {
        return Response::text("400 Bad Request", "malformed request line\n");
    };
    if method != "GET" {
        return Response::text("405 Method Not Allowed", "only GET\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => readiness(health),
        "/metrics" => match metrics {
            Some(exporter) => Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: exporter.render(),
            },
            None => Response::text(
                "503 Service Unavailable",
                "wharf's Prometheus exporter is not installed (another metrics recorder was installed first)\n",
            ),
        },
        _ => Response::text("404 Not Found", "not found: try /healthz, /readyz or /metrics\n"),
    }
}

fn readiness(health: &Health) -> Response {
    let phase = health.phase();
    let connected = health.is_connected();
    if connected && phase == Phase::Running {
        return Response::text("200 OK", "ready\n");
    }
    let why = match phase {
        Phase::Starting => "starting",
        Phase::Draining => "draining: shutting down",
        Phase::Stopped => "stopped",
        Phase::Running => "broker connection lost: reconnecting",
    };
    Response::text("503 Service Unavailable", format!("not ready: {why}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    /// `GET path` against `addr`: the status code and the body.
    async fn get(addr: SocketAddr, request: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    fn request(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n")
    }

    #[tokio::test]
    async fn readiness_follows_the_phase_and_the_connection() {
        let (phase, phase_rx) = watch::channel(Phase::Starting);
        let (connected, connected_rx) = watch::channel(true);
        let health = Health::new(phase_rx, connected_rx);
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), health, None)
            .await
            .unwrap();
        let addr = server.addr();
        let ready = || async move { get(addr, &request("/readyz")).await };

        assert_eq!(ready().await, (503, "not ready: starting\n".into()));
        phase.send_replace(Phase::Running);
        assert_eq!(ready().await, (200, "ready\n".into()));
        connected.send_replace(false);
        assert_eq!(
            ready().await,
            (503, "not ready: broker connection lost: reconnecting\n".into())
        );
        connected.send_replace(true);
        assert_eq!(ready().await.0, 200, "ready again after the reconnect");
        phase.send_replace(Phase::Draining);
        assert_eq!(
            ready().await,
            (503, "not ready: draining: shutting down\n".into())
        );
        // Alive all along.
        assert_eq!(get(addr, &request("/healthz")).await, (200, "ok\n".into()));
        phase.send_replace(Phase::Stopped);
        assert_eq!(ready().await.0, 503);
        assert_eq!(get(addr, &request("/healthz")).await.0, 200);
    }

    #[tokio::test]
    async fn other_requests_get_clear_answers() {
        let (_phase, phase_rx) = watch::channel(Phase::Running);
        let (_connected, connected_rx) = watch::channel(true);
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Health::new(phase_rx, connected_rx),
            None,
        )
        .await
        .unwrap();
        let addr = server.addr();
        assert_eq!(get(addr, &request("/nope")).await.0, 404);
        assert_eq!(get(addr, &request("/readyz?verbose=1")).await.0, 200);
        assert_eq!(get(addr, "POST /readyz HTTP/1.1\r\n\r\n").await.0, 405);
        assert_eq!(get(addr, "garbage\r\n\r\n").await.0, 400);
        let huge = format!("GET /healthz HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(MAX_REQUEST));
        assert_eq!(get(addr, &huge).await.0, 400);
        // No exporter: /metrics says why instead of an empty page.
        let (status, body) = get(addr, &request("/metrics")).await;
        assert_eq!(status, 503);
        assert!(body.contains("not installed"), "{body}");
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "closed when dropped");
    }
}
