//! What one run of a scenario measured, per message or request, and the
//! median and spread of a figure over the runs.

use super::clock::Spent;
use std::time::Duration;

/// What one run of a scenario measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Messages or requests measured.
    pub count: u64,
    pub spent: Spent,
    /// Sorted latencies (paced and request/reply), in ns.
    pub latencies: Vec<u64>,
    /// Consume (NATS): from starting the consumer to the first message.
    pub startup: Option<Duration>,
    /// Consume on a pre-filled queue: how long the bench's own publisher
    /// took to fill it (before the clock).
    pub fill: Option<Fill>,
}

/// The pre-fill of a consume run: the bench's own publisher (raw client,
/// publish acks or confirms awaited per window), before the clock.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    pub messages: u64,
    pub took: Duration,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.spent.wall.as_secs_f64()
    }

    fn per(&self, time: Duration) -> f64 {
        time.as_secs_f64() * 1e6 / self.count as f64
    }

    /// CPU µs per message or request, whole process.
    pub fn cpu_per(&self) -> f64 {
        self.per(self.spent.cpu)
    }

    /// Kernel CPU µs per message or request.
    pub fn sys_per(&self) -> f64 {
        self.per(self.spent.sys)
    }

    /// CPU µs of the measured runtime's workers (the client side) per
    /// message or request.
    pub fn workers_per(&self) -> f64 {
        self.per(self.spent.workers)
    }

    /// CPU µs of the second group of threads (lapin's I/O threads; the
    /// servers' runtime) per message or request.
    pub fn helpers_per(&self) -> f64 {
        self.per(self.spent.helpers)
    }

    /// CPU µs of the broker's process per message or request (NaN if
    /// unknown).
    pub fn broker_per(&self) -> f64 {
        self.spent.broker.map_or(f64::NAN, |t| self.per(t))
    }

    /// Context switches per message or request.
    pub fn switches_per(&self) -> f64 {
        self.spent.switches as f64 / self.count as f64
    }

    /// Messages/s of the pre-fill (NaN if none).
    pub fn fill_rate(&self) -> f64 {
        self.fill
            .map_or(f64::NAN, |f| f.messages as f64 / f.took.as_secs_f64())
    }

    pub fn startup_ms(&self) -> f64 {
        self.startup.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    /// Percentile `p` (0–100) of the latencies, in µs.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index] as f64 / 1e3
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median, min and max of `metric` over the runs.
pub fn spread(runs: &[Measured], metric: impl Fn(&Measured) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = runs.iter().map(metric).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}
