//! The clock of a run's measured part: wall time, and the CPU time of the
//! process, of two groups of its threads and of the broker's process.

use super::cpu::{
    process_cpu_time, process_sys_time_and_switches, thread_cpu_time, wharf_bench_measure_begin,
    wharf_bench_measure_end,
};
use std::time::{Duration, Instant};

/// What a bench's clock accounts apart from the whole process.
#[derive(Debug)]
pub struct Accounting {
    /// Names of two groups of this process's threads: the measured
    /// runtime's workers (the consumer, or the requesting client), and a
    /// second group (lapin's I/O threads; the servers' runtime).
    pub threads: [&'static str; 2],
    /// CPU time so far of the broker's process(es), all threads; `None`
    /// if it does not run here or cannot be read.
    pub broker: fn() -> Option<Duration>,
}

/// What the measured part cost.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    pub wall: Duration,
    /// CPU time of all threads of this process.
    pub cpu: Duration,
    /// Of `cpu`, in the kernel.
    pub sys: Duration,
    /// Context switches of all threads.
    pub switches: u64,
    /// Of `cpu`, the measured runtime's workers (the client side).
    pub workers: Duration,
    /// Of `cpu`, the second group of threads ([`Accounting::threads`]).
    pub helpers: Duration,
    /// CPU time of the broker's process, if it runs here.
    pub broker: Option<Duration>,
}

/// Starts measuring at [`Clock::start`].
#[derive(Debug)]
pub struct Clock {
    pub wall: Instant,
    cpu: Duration,
    sys: Duration,
    switches: u64,
    threads: (Duration, Duration),
    broker: Option<Duration>,
    accounting: &'static Accounting,
}

impl Clock {
    /// The process's figures are taken outermost, so that they include
    /// the cost of reading the others from `/proc`.
    pub fn start(accounting: &'static Accounting) -> Self {
        let cpu = process_cpu_time();
        let (sys, switches) = process_sys_time_and_switches();
        let broker = (accounting.broker)();
        let threads = thread_cpu_time(accounting.threads);
        wharf_bench_measure_begin();
        Clock {
            wall: Instant::now(),
            cpu,
            sys,
            switches,
            threads,
            broker,
            accounting,
        }
    }

    pub fn stop(self) -> Spent {
        let wall = self.wall.elapsed();
        wharf_bench_measure_end();
        let (workers, helpers) = thread_cpu_time(self.accounting.threads);
        let broker = (self.accounting.broker)()
            .zip(self.broker)
            .map(|(now, then)| now.saturating_sub(then));
        let (sys, switches) = process_sys_time_and_switches();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        Spent {
            wall,
            cpu,
            sys: sys.saturating_sub(self.sys),
            switches: switches.saturating_sub(self.switches),
            workers: workers.saturating_sub(self.threads.0),
            helpers: helpers.saturating_sub(self.threads.1),
            broker,
        }
    }
}
