use super::*;

const LEASE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn conforms() {
    super::super::conformance::all(&MemoryStore::new(), "memory").await;
}

/// Runs `key` to completion, kept for `window`.
fn run(store: &MemoryStore, key: &str, window: Duration) {
    assert!(
        matches!(store.claim_now(key, LEASE), Claim::Acquired(_)),
        "{key} is new"
    );
    store.complete_now(key, None, window);
}

/// The keys the store holds, sorted.
fn kept(store: &MemoryStore) -> Vec<String> {
    let mut keys: Vec<String> = store.keys().records.keys().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}

#[test]
fn the_key_cap_evicts_the_oldest_completed_record_first() {
    let store = MemoryStore::new().with_max_keys(3);
    for key in ["a", "b", "c", "d", "e"] {
        run(&store, key, HOUR);
        assert!(store.keys().records.len() <= 3);
    }
    assert_eq!(kept(&store), ["c", "d", "e"]);
    assert_eq!(
        store.claim_now("e", LEASE),
        Claim::Done(None),
        "kept: a duplicate"
    );
    assert!(
        matches!(store.claim_now("a", LEASE), Claim::Acquired(_)),
        "evicted: it runs again"
    );
}

#[test]
fn the_key_cap_evicts_the_record_closest_to_expiry_first() {
    // Routes with different windows: what expires soonest goes first,
    // whatever its age.
    let store = MemoryStore::new().with_max_keys(3);
    run(&store, "long", 24 * HOUR);
    run(&store, "short", HOUR);
    run(&store, "middle", 2 * HOUR);
    run(&store, "new", 24 * HOUR);
    assert_eq!(kept(&store), ["long", "middle", "new"]);
    run(&store, "newer", 24 * HOUR);
    assert_eq!(kept(&store), ["long", "new", "newer"]);
}

#[test]
fn claims_being_run_are_never_evicted() {
    let store = MemoryStore::new().with_max_keys(2);
    for key in ["a", "b", "c"] {
        assert!(matches!(store.claim_now(key, LEASE), Claim::Acquired(_)));
    }
    // Nothing completed to evict: the third claim is let in above the cap.
    assert_eq!(kept(&store), ["a", "b", "c"]);
    store.complete_now("a", None, HOUR);
    assert!(matches!(store.claim_now("d", LEASE), Claim::Acquired(_)));
    assert_eq!(kept(&store), ["b", "c", "d"], "only the completed record went");
    for key in ["b", "c", "d"] {
        assert_eq!(store.claim_now(key, LEASE), Claim::InProgress, "{key}");
    }
}

/// Handles `sequence` of `session` to the end.
fn handle(store: &MemoryStore, session: &str, sequence: u64) {
    assert_eq!(store.begin_now(session, sequence, LEASE), SessionTurn::Run);
    store.end_now(session, sequence, None);
}

fn has_session(store: &MemoryStore, session: &str) -> bool {
    store.sessions.lock().unwrap().map.contains_key(session)
}

#[test]
fn the_session_cap_evicts_the_longest_idle_sessions() {
    let store = MemoryStore::new().with_max_sessions(10);
    for i in 0..30 {
        handle(&store, &format!("s{i}"), 1);
        assert!(store.sessions.lock().unwrap().map.len() <= 10);
    }
    assert!(has_session(&store, "s29") && has_session(&store, "s25"));
    assert!(!has_session(&store, "s0") && !has_session(&store, "s19"));
    // One that was used again lately stays.
    let store = MemoryStore::new().with_max_sessions(10);
    handle(&store, "busy", 1);
    for i in 0..30 {
        handle(&store, &format!("s{i}"), 1);
        handle(&store, "busy", i + 2);
    }
    assert_eq!(store.begin_now("busy", 32, LEASE), SessionTurn::Run);
}

#[test]
fn sessions_in_use_are_never_evicted() {
    let store = MemoryStore::new().with_max_sessions(4);
    // Leased (running), held (a retry comes back), waiting (early numbers).
    assert_eq!(store.begin_now("leased", 1, LEASE), SessionTurn::Run);
    assert_eq!(store.begin_now("held", 1, LEASE), SessionTurn::Run);
    store.end_now("held", 1, Some(LEASE));
    assert_eq!(
        store.begin_now("waiting", 2, LEASE),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(store.begin_now("leased-too", 1, LEASE), SessionTurn::Run);
    for i in 0..5 {
        handle(&store, &format!("idle{i}"), 1);
    }
    // Full of sessions in use: the new ones came in above the cap, and
    // only idle ones were evicted.
    for session in ["leased", "held", "waiting", "leased-too", "idle4"] {
        assert!(has_session(&store, session), "{session}");
    }
    assert!(!has_session(&store, "idle0"));
    assert_eq!(store.begin_now("leased", 1, LEASE), SessionTurn::Busy);
    assert!(!store.skip_now("held", 1, 2), "still held");
    let early = store.sessions.lock().unwrap().map["waiting"].early();
    assert_eq!(early, Some(2), "the early number is remembered");
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn evictions_and_sizes_are_reported_as_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exposition = recorder.handle();
    let store = MemoryStore::new().with_max_keys(2).with_max_sessions(10);
    metrics::with_local_recorder(&recorder, || store.register_metrics());
    let text = exposition.render();
    for series in [
        r#"wharf_store_records{kind="idempotency"}"#,
        r#"wharf_store_records{kind="session"}"#,
        r#"wharf_store_evictions_total{kind="idempotency"}"#,
        r#"wharf_store_evictions_total{kind="session"}"#,
    ] {
        assert_eq!(
            sample(&text, series),
            Some(0.0),
            "{series} from the start:\n{text}"
        );
    }
    for key in ["a", "b", "c", "d", "e"] {
        run(&store, key, HOUR);
    }
    for i in 0..11 {
        handle(&store, &format!("s{i}"), 1);
    }
    let text = exposition.render();
    let value = |series| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(value(r#"wharf_store_evictions_total{kind="idempotency"}"#), 3.0);
    assert_eq!(value(r#"wharf_store_records{kind="idempotency"}"#), 2.0);
    // The eleventh session evicted the two longest idle (down to 9/10 of
    // the cap, less one for it).
    assert_eq!(value(r#"wharf_store_evictions_total{kind="session"}"#), 2.0);
    assert_eq!(value(r#"wharf_store_records{kind="session"}"#), 9.0);
}
