//! The CPU time of the nats-server process, when it runs on this machine.

use crate::common::cpu::schedstat_ns;
use std::sync::OnceLock;
use std::time::Duration;

/// Processes named `nats-server` on this machine (looked up once).
fn nats_server_pids() -> &'static [u32] {
    static PIDS: OnceLock<Vec<u32>> = OnceLock::new();
    PIDS.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                (comm.trim() == "nats-server").then_some(pid)
            })
            .collect()
    })
}

/// CPU time so far of the local nats-server process(es), all threads;
/// `None` if there is none or it cannot be read.
pub fn cpu_time() -> Option<Duration> {
    let pids = nats_server_pids();
    if pids.is_empty() {
        return None;
    }
    let mut ns = 0;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            ns += schedstat_ns(&task.path());
        }
    }
    (ns > 0).then(|| Duration::from_nanos(ns))
}
