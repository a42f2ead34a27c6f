//! `App::run` drains on SIGTERM: the handler in flight finishes and is
//! acked, then `run` returns. One test per process, as it signals itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wharf::{App, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_handlers_and_returns() {
    let broker = Broker::memory();
    let (started, finished) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (s, f) = (started.clone(), finished.clone());
    let slow = move |_: u32| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.fetch_add(1, Ordering::SeqCst);
        }
    };
    broker.client().publish("signal.jobs", &1u32).await.unwrap();
    let app = App::new(broker.clone()).route("signal.jobs", slow);
    let run = tokio::spawn(app.run());
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the handler never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SAFETY: sending a signal to our own process; `run` has installed its
    // handler before starting, so this does not terminate the test.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run returned after SIGTERM")
        .unwrap();
    assert!(result.is_ok());
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the in-flight handler ran to the end"
    );
    assert_eq!(
        broker.queue_depth("signal.jobs").await.unwrap(),
        0,
        "and its message was acked"
    );
}
