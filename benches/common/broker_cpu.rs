//! The CPU time of broker processes on this machine, by pid: the server
//! that listens on a bench's port, or the nodes of a cluster the bench
//! started (their pid files). Which processes the clock reads is chosen
//! per run ([`measure`]): the shared server for most runs, a cluster's
//! servers for the runs on it.

use super::cpu::schedstat_ns;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The processes [`cpu_time`] adds up.
static MEASURED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// From now on [`cpu_time`] reads the processes `pids` (none: unknown).
pub fn measure(pids: &[u32]) {
    *MEASURED.lock().unwrap() = pids.to_vec();
}

/// CPU time so far of the processes chosen with [`measure`], all their
/// threads; `None` if none is chosen or one cannot be read (gone).
pub fn cpu_time() -> Option<Duration> {
    let pids = MEASURED.lock().unwrap().clone();
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
    Some(Duration::from_nanos(ns))
}

/// The pid in a pid file (a server's or a node's), if it holds one.
pub fn pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The loopback port of a broker URL (its first server), if the broker
/// runs on this machine: `127.0.0.1`, `localhost` or `::1`, with the
/// scheme's `default` port when the URL names none.
pub fn local_port(url: &str, default: u16) -> Option<u16> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, port.parse().ok()?),
        _ => (host_port, default),
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]").then_some(port)
}

/// The process listening on TCP `port` (IPv4 or IPv6) on this machine,
/// from `/proc/net/tcp*` and the processes' open sockets; `None` if none
/// is found (or `/proc` is not readable).
pub fn listening_pid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let mut sockets = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = fields.get(1) else { continue };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && fields.get(3) == Some(&LISTEN)
                && let Some(inode) = fields.get(9)
            {
                sockets.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if sockets.is_empty() {
        return None;
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    processes.flatten().find_map(|process| {
        let pid: u32 = process.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| sockets.contains(target.to_string_lossy().as_ref()))
            })
            .then_some(pid)
    })
}
