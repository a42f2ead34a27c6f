use super::{Order, order};
use crate::faults::{Fault, FaultyStore, failing_dead_letters};
use crate::harness::{Gauge, Harness, Log, until};
use std::time::{Duration, Instant};
use wharf::{
    App, Backoff, Context, DeadLetterReason, Error, GapPolicy, Message, Meta, RouteOptions, Running,
};

fn in_session(session: &str, sequence: u64) -> Message {
    Message::json(&order(sequence))
        .unwrap()
        .with_session(session, sequence)
}

/// A deterministic shuffle (no rand dependency): a fixed LCG permutation.
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut items: Vec<u64> = (1..=n).collect();
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
    items
}

/// A handler that records (session, sequence) and optionally sleeps.
fn recorder(
    log: Log<(String, u64)>,
    gauge: Gauge,
    pause: Duration,
) -> impl wharf::Handler<(Meta, Order), ()> {
    move |meta: Meta, _: Order| {
        let (log, gauge) = (log.clone(), gauge.clone());
        async move {
            let _inside = gauge.enter();
            tokio::time::sleep(pause).await;
            log.push((meta.session_id().unwrap().to_owned(), meta.sequence().unwrap()));
        }
    }
}

fn of(log: &Log<(String, u64)>, session: &str) -> Vec<u64> {
    log.all()
        .into_iter()
        .filter(|(s, _)| s == session)
        .map(|(_, n)| n)
        .collect()
}

pub async fn session_messages_run_in_sequence_order(h: Harness) {
    let queue = h.queue("sessions-order");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().concurrency(8);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    let sessions = ["a", "b", "c"];
    let orders: Vec<Vec<u64>> = (0..3).map(|i| shuffled(20, 7 + i)).collect();
    assert_ne!(orders[0], (1..=20).collect::<Vec<_>>(), "published out of order");
    for i in 0..20 {
        for (s, order) in sessions.iter().zip(&orders) {
            h.client().send(&queue, in_session(s, order[i])).await.unwrap();
        }
    }
    let stats = until(&running, &queue, |s| s.acked == 60).await;
    for s in sessions {
        assert_eq!(of(&log, s), (1..=20).collect::<Vec<_>>(), "session {s} in order");
    }
    assert_eq!(
        (stats.duplicates, stats.dead_lettered, stats.session_buffered),
        (0, 0, 0)
    );
    running.shutdown().await;
}

pub async fn one_session_runs_one_message_at_a_time(h: Harness) {
    let queue = h.queue("sessions-serial");
    let (log, gauge) = (Log::new(), Gauge::default());
    let handler = recorder(log.clone(), gauge.clone(), Duration::from_millis(5));
    let options = RouteOptions::new().concurrency(8);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 1..=20 {
        h.client().send(&queue, in_session("only", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 20).await;
    assert_eq!(gauge.max(), 1);
    assert_eq!(of(&log, "only"), (1..=20).collect::<Vec<_>>());
    running.shutdown().await;
}

pub async fn different_sessions_run_concurrently(h: Harness) {
    let queue = h.queue("sessions-concurrent");
    let (log, gauge) = (Log::new(), Gauge::default());
    let handler = recorder(log.clone(), gauge.clone(), Duration::from_millis(100));
    let options = RouteOptions::new().concurrency(8);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 1..=3 {
        for s in ["w", "x", "y", "z"] {
            h.client().send(&queue, in_session(s, n)).await.unwrap();
        }
    }
    until(&running, &queue, |s| s.acked == 12).await;
    assert!(
        gauge.max() >= 2,
        "sessions overlapped: max {} at once",
        gauge.max()
    );
    for s in ["w", "x", "y", "z"] {
        assert_eq!(of(&log, s), vec![1, 2, 3]);
    }
    running.shutdown().await;
}

pub async fn stale_and_repeated_sequence_numbers_are_acked_and_counted(h: Harness) {
    let queue = h.queue("sessions-stale");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let running = h.app().route(&queue, handler).start().await.unwrap();
    for n in [1, 2] {
        h.client().send(&queue, in_session("s", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 2).await;
    for n in [1, 2, 3] {
        h.client().send(&queue, in_session("s", n)).await.unwrap();
    }
    let stats = until(&running, &queue, |s| s.acked == 3 && s.stale == 2).await;
    assert_eq!(stats.duplicates, 2);
    assert_eq!(of(&log, "s"), vec![1, 2, 3]);
    running.shutdown().await;
}

/// A session route with a 300 ms gap timeout under `policy`, sent 1, 3, 4.
async fn gap_after_one(h: &Harness, name: &str, policy: GapPolicy) -> (Running, String, Log<(String, u64)>) {
    let queue = h.queue(name);
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new()
        .gap_timeout(Duration::from_millis(300))
        .gap_policy(policy);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in [1, 3, 4] {
        h.client().send(&queue, in_session("g", n)).await.unwrap();
    }
    (running, queue, log)
}

pub async fn gap_timeout_dead_letters_the_waiting_messages(h: Harness) {
    let (running, queue, log) = gap_after_one(&h, "sessions-gap-dl", GapPolicy::DeadLetter).await;
    let stats = until(&running, &queue, |s| s.gap_timeouts == 1 && s.dead_lettered == 2).await;
    assert_eq!(stats.acked, 1);
    let letters = h.dead_letters(&queue, 2).await;
    let mut sequences: Vec<&str> = letters.iter().map(|l| l.message.sequence().unwrap()).collect();
    sequences.sort();
    assert_eq!(sequences, vec!["3", "4"]);
    assert!(
        letters
            .iter()
            .all(|l| l.reason() == Some(DeadLetterReason::SessionGap))
    );
    // The session carries on after the dead-lettered numbers; the missing
    // one, arriving late, never ran: it is dead-lettered too, not dropped.
    h.client().send(&queue, in_session("g", 5)).await.unwrap();
    h.client().send(&queue, in_session("g", 2)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 2 && s.dead_lettered == 3).await;
    assert_eq!(stats.stale, 0);
    assert_eq!(of(&log, "g"), vec![1, 5]);
    let letters = h.dead_letters(&queue, 1).await;
    assert_eq!(letters[0].message.sequence(), Some("2"));
    assert_eq!(letters[0].reason(), Some(DeadLetterReason::SessionGap));
    running.shutdown().await;
}

pub async fn gap_timeout_skip_ahead_continues_with_the_next_waiting(h: Harness) {
    let (running, queue, log) = gap_after_one(&h, "sessions-gap-skip", GapPolicy::SkipAhead).await;
    let stats = until(&running, &queue, |s| s.acked == 3).await;
    assert_eq!((stats.gap_timeouts, stats.dead_lettered), (1, 0));
    assert_eq!(of(&log, "g"), vec![1, 3, 4]);
    // The skipped number, arriving late, is dead-lettered, not dropped.
    h.client().send(&queue, in_session("g", 2)).await.unwrap();
    let stats = until(&running, &queue, |s| s.dead_lettered == 1).await;
    assert_eq!((stats.acked, stats.stale), (3, 0));
    let letters = h.dead_letters(&queue, 1).await;
    assert_eq!(letters[0].message.sequence(), Some("2"));
    assert_eq!(letters[0].reason(), Some(DeadLetterReason::SessionGap));
    running.shutdown().await;
}

pub async fn early_arrivals_beyond_the_buffer_go_back_to_the_broker(h: Harness) {
    let queue = h.queue("sessions-backpressure");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    // prefetch 2 + 2: at most 3 messages may wait in memory.
    let options = RouteOptions::new()
        .concurrency(2)
        .session_buffer(2)
        .defer_delay(Duration::from_millis(50));
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 2..=30 {
        h.client().send(&queue, in_session("bp", n)).await.unwrap();
    }
    let waiting = until(&running, &queue, |s| s.deferred >= 5 && s.session_buffered == 3).await;
    assert_eq!(waiting.acked, 0);
    h.client().send(&queue, in_session("bp", 1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 30).await;
    assert_eq!(
        of(&log, "bp"),
        (1..=30).collect::<Vec<_>>(),
        "all complete, in order"
    );
    assert_eq!((stats.dead_lettered, stats.session_buffered), (0, 0));
    running.shutdown().await;
}

pub async fn retried_session_message_blocks_only_its_session(h: Harness) {
    let queue = h.queue("sessions-retry");
    let log = Log::new();
    let l = log.clone();
    let handler = move |ctx: Context, meta: Meta, _: Order| {
        let l = l.clone();
        async move {
            let (session, n) = (meta.session_id().unwrap().to_owned(), meta.sequence().unwrap());
            if session == "a" && n == 1 && ctx.attempt() == 1 {
                return Err(Error::new("not yet"));
            }
            l.push((session, n));
            Ok(())
        }
    };
    // The retry waits longer than the gap timeout: a message in retry is
    // not a gap.
    let options = RouteOptions::new()
        .backoff(Backoff::fixed(Duration::from_millis(500)))
        .gap_timeout(Duration::from_millis(150));
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, in_session("a", 1)).await.unwrap();
    until(&running, &queue, |s| s.retried == 1).await;
    for (s, n) in [("a", 2), ("b", 1), ("b", 2)] {
        h.client().send(&queue, in_session(s, n)).await.unwrap();
    }
    let stats = until(&running, &queue, |s| s.acked == 4).await;
    let order = log.all();
    let pos = |s: &str, n: u64| order.iter().position(|e| e.0 == s && e.1 == n).unwrap();
    assert!(
        pos("b", 2) < pos("a", 1),
        "session b went on while a waited: {order:?}"
    );
    assert!(pos("a", 1) < pos("a", 2));
    assert_eq!(stats.gap_timeouts, 0);
    running.shutdown().await;
}

pub async fn dead_lettered_session_message_lets_the_session_continue(h: Harness) {
    let queue = h.queue("sessions-dead");
    let log = Log::new();
    let l = log.clone();
    let handler = move |meta: Meta, _: Order| {
        let l = l.clone();
        async move {
            let n = meta.sequence().unwrap();
            if n == 1 {
                return Err(Error::permanent("cannot process"));
            }
            l.push(n);
            Ok(())
        }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    let poison = Message::new(&b"\x00garbage"[..]).with_session("d", 2);
    h.client().send(&queue, in_session("d", 3)).await.unwrap();
    h.client().send(&queue, poison).await.unwrap();
    h.client().send(&queue, in_session("d", 1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!((stats.dead_lettered, stats.rejected), (1, 1));
    assert_eq!(log.all(), vec![3]);
    running.shutdown().await;
}

pub async fn session_state_checkpoint_is_kept_between_messages(h: Harness) {
    let queue = h.queue("sessions-state");
    let totals = Log::new();
    let t = totals.clone();
    let handler = move |ctx: Context, o: Order| {
        let t = t.clone();
        async move {
            let total = ctx.session_state::<u64>().await?.unwrap_or(0) + o.id;
            ctx.set_session_state(&total).await?;
            t.push(total);
            Ok::<_, Error>(())
        }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    for n in [3, 1, 2] {
        h.client().send(&queue, in_session("cp", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 3).await;
    assert_eq!(totals.all(), vec![1, 3, 6]);
    running.shutdown().await;
}

pub async fn replayed_session_dead_letter_runs_again(h: Harness) {
    let queue = h.queue("sessions-replay");
    let log = Log::new();
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (l, b) = (log.clone(), broken.clone());
    let handler = move |meta: Meta, _: Order| {
        let (l, b) = (l.clone(), b.clone());
        async move {
            let n = meta.sequence().unwrap();
            if n == 1 && b.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::permanent("bug"));
            }
            l.push(n);
            Ok(())
        }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    h.client().send(&queue, in_session("r", 1)).await.unwrap();
    h.client().send(&queue, in_session("r", 2)).await.unwrap();
    until(&running, &queue, |s| s.dead_lettered == 1 && s.acked == 1).await;
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(h.broker.dead_letters(&queue).replay(10).await.unwrap(), 1);
    let stats = until(&running, &queue, |s| s.acked == 2).await;
    assert_eq!(
        log.all(),
        vec![2, 1],
        "the replayed message ran although its turn had passed"
    );
    assert_eq!(stats.stale, 0);
    running.shutdown().await;
}

pub async fn busy_sessions_published_in_order_flow_without_waiting(h: Harness) {
    // Few sessions, many messages each, published in order: the worker's own
    // concurrency must not reorder them into early arrivals, and a full
    // session buffer must not turn into a defer loop.
    let queue = h.queue("sessions-busy");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().concurrency(32).session_buffer(16);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    let sessions = ["p", "q", "r", "s"];
    for n in 1..=500 {
        for s in sessions {
            h.client().send(&queue, in_session(s, n)).await.unwrap();
        }
    }
    let stats = until(&running, &queue, |s| s.acked == 2000).await;
    for s in sessions {
        assert_eq!(of(&log, s), (1..=500).collect::<Vec<_>>(), "session {s} in order");
    }
    assert!(
        stats.deferred < 100,
        "in-order sessions should rarely go back to the broker: {stats:?}"
    );
    running.shutdown().await;
}

pub async fn waiting_session_messages_run_as_soon_as_their_turn_comes(h: Harness) {
    // Default gap timeout (30 s): the watcher only polls every 250 ms, so
    // this pins that a finished message hands its turn on at once.
    let queue = h.queue("sessions-wake");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let running = h.app().route(&queue, handler).start().await.unwrap();
    for n in (2..=11).rev() {
        h.client().send(&queue, in_session("w", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.session_buffered == 10).await;
    let started = Instant::now();
    h.client().send(&queue, in_session("w", 1)).await.unwrap();
    until(&running, &queue, |s| s.acked == 11).await;
    assert_eq!(of(&log, "w"), (1..=11).collect::<Vec<_>>());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the waiting messages ran one poll tick apart: {:?}",
        started.elapsed()
    );
    running.shutdown().await;
}

pub async fn repeated_sequence_number_waits_while_its_first_copy_runs(h: Harness) {
    let queue = h.queue("sessions-copy");
    let (log, gauge) = (Log::new(), Gauge::default());
    let handler = recorder(log.clone(), gauge.clone(), Duration::from_millis(200));
    let running = h.app().route(&queue, handler).start().await.unwrap();
    h.client().send(&queue, in_session("r", 1)).await.unwrap();
    until(&running, &queue, |s| s.in_flight == 1).await;
    h.client().send(&queue, in_session("r", 1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1 && s.stale == 1).await;
    assert_eq!(gauge.max(), 1, "the copy did not run alongside the original");
    assert_eq!(of(&log, "r"), vec![1]);
    assert_eq!(stats.duplicates, 1);
    running.shutdown().await;
}

pub async fn woken_session_messages_respect_the_concurrency_limit(h: Harness) {
    let queue = h.queue("sessions-slots");
    let (log, gauge) = (Log::new(), Gauge::default());
    let handler = recorder(log.clone(), gauge.clone(), Duration::from_millis(30));
    let options = RouteOptions::new().concurrency(2);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for s in ["a", "b", "c", "d"] {
        for n in [3, 2] {
            h.client().send(&queue, in_session(s, n)).await.unwrap();
        }
    }
    until(&running, &queue, |s| s.session_buffered == 8).await;
    for s in ["a", "b", "c", "d"] {
        h.client().send(&queue, in_session(s, 1)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 12).await;
    assert_eq!(gauge.max(), 2, "woken messages take a slot like any other");
    running.shutdown().await;
}

pub async fn woken_session_message_runs_with_concurrency_one(h: Harness) {
    // An idle consumer must not hold the only slot while the woken message
    // waits for it.
    let queue = h.queue("sessions-one-slot");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().concurrency(1);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, in_session("one", 2)).await.unwrap();
    until(&running, &queue, |s| s.session_buffered == 1).await;
    h.client().send(&queue, in_session("one", 1)).await.unwrap();
    until(&running, &queue, |s| s.acked == 2).await;
    assert_eq!(of(&log, "one"), vec![1, 2]);
    running.shutdown().await;
}

pub async fn deferred_messages_do_not_use_attempts(h: Harness) {
    let queue = h.queue("defer-attempts");
    let attempts = Log::new();
    let log = attempts.clone();
    let handler = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move { log.push(ctx.attempt()) }
    };
    // prefetch 1 + 1: one message may wait, the rest are deferred.
    let options = RouteOptions::new()
        .concurrency(1)
        .session_buffer(1)
        .defer_delay(Duration::from_millis(20));
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 2..=8 {
        h.client().send(&queue, in_session("d", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.deferred >= 10).await;
    h.client().send(&queue, in_session("d", 1)).await.unwrap();
    until(&running, &queue, |s| s.acked == 8).await;
    assert_eq!(attempts.all(), vec![1; 8], "deferrals are not attempts");
    running.shutdown().await;
}

pub async fn sessions_keep_order_with_prefetch_one(h: Harness) {
    // With one unsettled delivery at a time no message may wait in memory,
    // or the one it waits for could never be received: it is deferred.
    for policy in [GapPolicy::DeadLetter, GapPolicy::SkipAhead] {
        let queue = h.queue("sessions-prefetch-one");
        let log = Log::new();
        let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
        let options = RouteOptions::new()
            .prefetch(1)
            .gap_timeout(Duration::from_millis(300))
            .gap_policy(policy)
            .defer_delay(Duration::from_millis(50));
        let running = h
            .app()
            .route_with(&queue, handler, options)
            .start()
            .await
            .unwrap();
        h.client().send(&queue, in_session("p", 2)).await.unwrap();
        until(&running, &queue, |s| s.deferred >= 1).await;
        h.client().send(&queue, in_session("p", 1)).await.unwrap();
        let stats = until(&running, &queue, |s| s.acked == 2).await;
        assert_eq!(of(&log, "p"), vec![1, 2], "{policy:?}");
        assert_eq!((stats.dead_lettered, stats.stale, stats.gap_timeouts), (0, 0, 0));
        running.shutdown().await;
    }
}

pub async fn a_gap_filled_while_the_watcher_looks_is_not_a_gap(h: Harness) {
    // The store answers slowly (a remote store's round trip); the missing
    // number arrives while the watcher is asking it, in the round at whose
    // end the gap timeout would expire.
    let queue = h.queue("sessions-gap-race");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().gap_timeout(Duration::from_millis(300));
    let running = h
        .app()
        .store(FaultyStore::new(Fault::SlowSessionNext(Duration::from_millis(
            1000,
        ))))
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, in_session("g", 2)).await.unwrap();
    // Watcher rounds ask the store during about 0.04–1.04 s and 1.08–2.08 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.client().send(&queue, in_session("g", 1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 2).await;
    assert_eq!(of(&log, "g"), vec![1, 2]);
    assert_eq!((stats.dead_lettered, stats.gap_timeouts), (0, 0));
    running.shutdown().await;
}

pub async fn skip_ahead_never_moves_a_session_backwards(h: Harness) {
    let queue = h.queue("sessions-skip-back");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new()
        .gap_timeout(Duration::from_millis(300))
        .gap_policy(GapPolicy::SkipAhead);
    let running = h
        .app()
        .store(FaultyStore::new(Fault::SlowSessionNext(Duration::from_millis(
            1000,
        ))))
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 1..=4 {
        h.client().send(&queue, in_session("g", n)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 4).await;
    h.client().send(&queue, in_session("g", 7)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A copy of a number handled long ago arrives while the watcher looks.
    h.client().send(&queue, in_session("g", 2)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 5 && s.stale == 1).await;
    assert_eq!(of(&log, "g"), vec![1, 2, 3, 4, 7], "2 must not run twice");
    assert_eq!(stats.gap_timeouts, 1);
    running.shutdown().await;
}

pub async fn a_duplicate_still_uses_up_its_sequence_number(h: Harness) {
    // The publisher sent operation op-1 again as number 2: it is a duplicate
    // and is not run, but the session moves past 2 at once.
    let queue = h.queue("sessions-duplicate");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().gap_timeout(Duration::from_millis(300));
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    let client = h.client();
    client
        .send(&queue, in_session("d", 1).with_idempotency_key("op-1"))
        .await
        .unwrap();
    client
        .send(&queue, in_session("d", 2).with_idempotency_key("op-1"))
        .await
        .unwrap();
    client
        .send(&queue, in_session("d", 3).with_idempotency_key("op-3"))
        .await
        .unwrap();
    let stats = until(&running, &queue, |s| s.acked == 2 && s.duplicates == 1).await;
    assert_eq!(of(&log, "d"), vec![1, 3]);
    assert_eq!((stats.dead_lettered, stats.gap_timeouts), (0, 0));
    running.shutdown().await;
}

pub async fn gap_dead_letters_are_stored_before_the_session_moves_on(h: Harness) {
    // If storing a gap's dead letter fails, the message comes back and waits
    // again; it is never acked as stale and lost.
    let (broker, failures) = failing_dead_letters(&h.broker);
    let queue = h.queue("sessions-gap-store");
    let log = Log::new();
    let handler = recorder(log.clone(), Gauge::default(), Duration::ZERO);
    let options = RouteOptions::new().gap_timeout(Duration::from_millis(200));
    let running = App::new(broker.clone())
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    broker.client().send(&queue, in_session("g", 1)).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    failures.store(1, std::sync::atomic::Ordering::SeqCst);
    broker.client().send(&queue, in_session("g", 3)).await.unwrap();
    let letters = h.dead_letters(&queue, 1).await;
    assert_eq!(letters[0].message.sequence(), Some("3"));
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the first attempt failed"
    );
    let stats = running.stats(&queue);
    assert_eq!((stats.stale, stats.acked), (0, 1));
    running.shutdown().await;
}
