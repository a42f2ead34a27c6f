//! Setting a bench up: its runtimes, its run's id, and what happens when
//! the broker is not there.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;

/// A multi-threaded runtime of `workers` threads named `name`.
pub fn new_runtime(workers: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// This run's id in queue names: `<pid>.<nanos>`, in hex.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}.{:x}", std::process::id(), nanos)
}

/// The broker is not usable: exits with a failure under `CI=true` (after
/// printing `ci_line`), or prints `skipped` (the bench then ends, and
/// passes).
pub fn broker_unusable(ci_line: &str, skipped: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        eprintln!("{ci_line}");
        std::process::exit(1);
    }
    println!("\n!!! SKIPPED: {skipped}. With CI=true this fails.\n");
}
