//! Log lines stay short whatever a publisher puts in a message: a 20 kB
//! message id, correlation id or session id, or a payload whose decode
//! error quotes 20 kB of it, is cut in every line (text and JSON), and kept
//! whole where it belongs (the dead letter).
//!
//! Its own test binary: it installs the process's tracing subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use wharf::{App, Broker, Message, RouteOptions};

/// What the subscriber wrote, text and JSON side by side.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The process's subscriber: wharf's logs at debug level, once as text and
/// once as JSON with the span's fields (as `examples/worker.rs` logs).
fn capture() -> (Captured, Captured) {
    static LOGS: OnceLock<(Captured, Captured)> = OnceLock::new();
    LOGS.get_or_init(|| {
        let (text, json) = (Captured::default(), Captured::default());
        let (to_text, to_json) = (text.clone(), json.clone());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_target("wharf", tracing::Level::DEBUG)
                    .with_target("log_lines", tracing::Level::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || to_text.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(move || to_json.clone()),
            );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (text, json)
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_id_is_cut_in_every_log_line_and_kept_whole_elsewhere() {
    let (text, json) = capture();
    let broker = Broker::memory();
    let queue = "log-lines";
    let message_id = format!("m-{}", "i".repeat(20_839));
    let correlation_id = format!("c-{}", "c".repeat(20_000));
    let session = format!("s-{}", "s".repeat(20_000));
    let quoted = format!("q-{}", "q".repeat(20_000));
    let running = App::new(broker.clone())
        .route_with(
            queue,
            |order: u64| async move { tracing::info!(order, "order handled") },
            RouteOptions::new().max_attempts(1),
        )
        .start()
        .await
        .unwrap();
    let client = broker.client();
    // Handled: the handler logs inside the message's span.
    let handled = Message::new(&b"7"[..])
        .with_content_type(wharf::codec::JSON)
        .with_message_id(message_id.clone())
        .with_correlation_id(correlation_id.clone());
    client.send(queue, handled).await.unwrap();
    // Dead-lettered: a session id longer than allowed, and a body whose
    // decode error quotes the 20 kB string it holds.
    let refused = Message::new(format!("{session:?}").into_bytes())
        .with_content_type(wharf::codec::JSON)
        .with_message_id(message_id.clone())
        .with_session(session.clone(), 1);
    client.send(queue, refused).await.unwrap();
    let undecodable = Message::new(format!("{quoted:?}").into_bytes())
        .with_content_type(wharf::codec::JSON)
        .with_message_id(message_id.clone());
    client.send(queue, undecodable).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = running.stats(queue);
        if stats.acked == 1 && stats.rejected == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let letters = broker.dead_letters(queue).take(2).await.unwrap();
    running.shutdown().await;

    // Kept whole where it belongs.
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        assert_eq!(letter.message.message_id.as_deref(), Some(&message_id[..]));
    }

    for (format, logs) in [("text", text.text()), ("json", json.text())] {
        assert!(
            logs.contains("order handled") && logs.contains("message dead-lettered"),
            "{format}: the events were logged:\n{logs}"
        );
        for line in logs.lines() {
            assert!(
                line.len() < 3_000,
                "{format}: a line of {} bytes: {}…",
                line.len(),
                line.get(..300).unwrap_or(line)
            );
        }
        for (what, value) in [
            ("message id", &message_id),
            ("correlation id", &correlation_id),
            ("session id", &session),
            ("quoted payload", &quoted),
        ] {
            assert!(
                !logs.contains(&value[..1_100]),
                "{format}: the {what} is logged (almost) whole"
            );
        }
        assert!(
            logs.contains(&format!("{}…(+20713 bytes)", &message_id[..128])),
            "{format}: the message id is shown cut, with its length:\n{logs}"
        );
    }
}
