//! CPU time and context switches of this process, of its threads by name
//! and of other processes, from the kernel; and the markers that delimit
//! the measured part for profilers.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// CPU time consumed so far by all threads of this process.
pub fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Kernel (system) CPU time consumed so far by this process, and its
/// threads' context switches (voluntary and not): a thread that waits for
/// another one's wake-up switches once per wait.
pub fn process_sys_time_and_switches() -> (Duration, u64) {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let sys = Duration::new(usage.ru_stime.tv_sec as u64, usage.ru_stime.tv_usec as u32 * 1000);
    (sys, (usage.ru_nvcsw + usage.ru_nivcsw) as u64)
}

/// Run time in ns of a task directory's `schedstat` (0 if unreadable).
pub fn schedstat_ns(task: &Path) -> u64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time so far of this process's live threads named `names[0]` and
/// `names[1]` (from `/proc/self/task/*/schedstat`; zero where that is not
/// available).
pub fn thread_cpu_time(names: [&str; 2]) -> (Duration, Duration) {
    let (mut first, mut second) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let target = match comm.trim() {
            name if name == names[0] => &mut first,
            name if name == names[1] => &mut second,
            _ => continue,
        };
        *target += schedstat_ns(&path);
    }
    (Duration::from_nanos(first), Duration::from_nanos(second))
}

/// Marks the start of the measured part, for profilers
/// (`callgrind --dump-before=wharf_bench_measure_begin`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wharf_bench_measure_begin() {
    black_box(1u8);
}

/// Marks the end of the measured part, for profilers
/// (`callgrind --dump-before=wharf_bench_measure_end`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wharf_bench_measure_end() {
    black_box(2u8);
}
