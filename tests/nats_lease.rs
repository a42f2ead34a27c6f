//! The lease on NATS: JetStream's ack wait is the route's lease, short by
//! default, and a live worker keeps every message it holds for as long as
//! it needs it with in-progress acks — prefetched and waiting behind a
//! backlog, or in a handler that runs for many leases. Another worker on
//! the same queue gets none of them meanwhile.
//!
//! (How fast a killed worker's messages come back is measured with real
//! worker processes in `tests/cluster/`.)
//!
//! Needs NATS with JetStream on `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); skips loudly without it, fails under `CI=true`.

#![cfg(feature = "nats")]

mod support;

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{skip, unique_queue, wait_for};
use wharf::{App, Broker, Context, RouteOptions};

const LEASE: Duration = Duration::from_secs(2);
const WORK: Duration = Duration::from_millis(2500);

#[derive(Serialize, Deserialize)]
struct Job {
    id: u64,
}

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Which worker handled which job, on which attempt.
type Seen = Arc<Mutex<Vec<(&'static str, u64, u32)>>>;

/// A handler that records each job and works on it for `work`.
fn worker(
    seen: &Seen,
    name: &'static str,
    work: Duration,
) -> impl Fn(Context, Job) -> futures_util::future::BoxFuture<'static, ()> + Clone + Send + Sync + 'static {
    let seen = seen.clone();
    move |ctx: Context, job: Job| {
        seen.lock().unwrap().push((name, job.id, ctx.attempt()));
        Box::pin(tokio::time::sleep(work))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_keeps_its_messages_past_the_lease() {
    let test = "a_live_worker_keeps_its_messages_past_the_lease";
    if let Err(why) = support::broker_reachable(&url()) {
        return skip(test, &format!("NATS is not reachable: {why}"));
    }
    let (Ok(first), Ok(second)) = (Broker::connect(&url()).await, Broker::connect(&url()).await) else {
        skip(test, "NATS is not reachable");
        return;
    };
    let queue = unique_queue("lease");
    let seen: Seen = Arc::default();
    let options = RouteOptions::new().lease(LEASE).concurrency(1).no_timeout();
    // The first worker takes all four jobs: one runs for longer than the
    // lease, the others wait behind it, the last for three runs.
    let busy = App::new(first.clone())
        .route_with(&queue, worker(&seen, "busy", WORK), options.clone())
        .start()
        .await
        .unwrap();
    for id in 1..=4 {
        first.client().publish(&queue, &Job { id }).await.unwrap();
    }
    wait_for("the first job to start", Duration::from_secs(5), || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = App::new(second.clone())
        .route_with(
            &queue,
            worker(&seen, "idle", Duration::ZERO),
            options.concurrency(4),
        )
        .start()
        .await
        .unwrap();
    wait_for("all four jobs", WORK * 4 + Duration::from_secs(10), || {
        busy.stats(&queue).acked == 4
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        (1..=4).map(|id| ("busy", id, 1)).collect::<Vec<_>>(),
        "the busy worker kept all four for {:?}, {}x the lease: none went to the idle one",
        WORK * 4,
        (WORK * 4).as_secs_f64() / LEASE.as_secs_f64()
    );
    assert_eq!(idle.stats(&queue).received, 0);
    busy.shutdown().await;
    idle.shutdown().await;
    first.delete_queue(&queue).await.unwrap();
}
