//! The Prometheus exposition of wharf's metrics: a global
//! `metrics-exporter-prometheus` recorder, installed once, whose text the
//! HTTP listener serves at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds, in seconds, of wharf's duration histograms: from a
/// millisecond (a handler that only decodes) to a minute (the default
/// handler timeout).
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// How often histograms are drained into the exposition when nothing
/// scrapes (rendering does it too).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// wharf's metrics in the Prometheus text format. Cheap to clone.
///
/// ```
/// let exporter = wharf::metrics::install_prometheus().expect("no other recorder installed");
/// assert!(exporter.render().is_empty() || exporter.render().contains("wharf_"));
/// ```
#[derive(Clone)]
pub struct MetricsExporter {
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

impl std::fmt::Debug for MetricsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsExporter").finish_non_exhaustive()
    }
}

impl MetricsExporter {
    /// Everything recorded so far, in the Prometheus text exposition format
    /// (version 0.0.4).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Why the exporter could not be installed.
#[derive(Debug, Clone)]
pub struct ExporterError(String);

impl std::fmt::Display for ExporterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot install the Prometheus exporter: {}", self.0)
    }
}

impl std::error::Error for ExporterError {}

static INSTALLED: OnceLock<Result<MetricsExporter, ExporterError>> = OnceLock::new();

/// Installs wharf's Prometheus recorder as the process's `metrics` recorder
/// (the first call does; later calls return the same exporter). It fails
/// if the program installed another recorder first: `/metrics` then has
/// nothing of wharf's to show, and the program's own recorder receives
/// wharf's metrics instead.
pub fn install() -> Result<MetricsExporter, ExporterError> {
    INSTALLED
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .map_err(|e| ExporterError(e.to_string()))?;
            let handle = builder
                .install_recorder()
                .map_err(|e| ExporterError(e.to_string()))?;
            super::describe();
            // Histogram samples pile up until drained; a thread of its own
            // drains them whatever runtime comes and goes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("wharf-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| ExporterError(e.to_string()))?;
            Ok(MetricsExporter { handle })
        })
        .clone()
}
