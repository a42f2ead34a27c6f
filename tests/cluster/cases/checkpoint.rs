//! A session checkpoint survives a killed worker.

use super::in_session;
use crate::cluster::Cluster;
use crate::pairs::{Pair, StoreKind};
use crate::{NATS_URL, REDIS_URL, support};
use std::time::Duration;
use wharf::store::{NatsKvStore, RedisStore};

/// A long job of 200 steps keeps a running total in its session
/// checkpoint; one worker is killed mid-way. The total at the end is
/// exactly the sum of the steps: every step applied once, resumed from
/// the last good checkpoint.
pub async fn checkpoint(pair: Pair) {
    let mut cluster = Cluster::start(pair, "ckpt", "checkpoint", Vec::new()).await;
    let steps = 200u64;
    let messages = (1..=steps).map(|seq| in_session("job", seq)).collect();
    let store: Box<dyn wharf::store::Store> = match pair.store {
        StoreKind::Redis => Box::new(
            RedisStore::connect(REDIS_URL)
                .await
                .unwrap()
                .with_prefix(cluster.keys.store_prefix()),
        ),
        StoreKind::NatsKv => Box::new(
            NatsKvStore::connect(NATS_URL)
                .await
                .unwrap()
                .with_bucket_prefix(cluster.keys.bucket_prefix()),
        ),
    };
    let session = format!("{}/job", cluster.queue);
    cluster.publish(messages).await;
    support::wait_for_async("20 steps applied", Duration::from_secs(60), async || {
        store.session_position(&session).await.unwrap().next > 20
    })
    .await;
    cluster.kill(1);
    let at_kill = store.session_position(&session).await.unwrap().next;
    cluster.restart(1).await;
    cluster
        .settle("every step applied", Duration::from_secs(120), async |_| {
            store.session_position(&session).await.unwrap().next > steps
        })
        .await;
    let state = store
        .session_state(&session)
        .await
        .unwrap()
        .expect("a checkpoint");
    let total: u64 = serde_json::from_slice(&state).unwrap();
    cluster.stop().await;
    cluster.cleanup().await;
    println!(
        "{}: checkpoint total {total} after 200 steps; a worker was killed at step {at_kill}",
        pair.name()
    );
    assert!(at_kill <= steps, "the kill came after the job had finished");
    // A step killed between saving its checkpoint and finishing its turn
    // runs again (the crash window) and adds its number twice.
    let expected = steps * (steps + 1) / 2;
    assert!(
        total >= expected && total - expected <= steps,
        "total {total}, expected {expected} (+ at most one repeated step)"
    );
}
