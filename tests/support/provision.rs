//! The tools some tests need besides the brokers, provisioned on first use
//! so that `cargo test --all-features` alone runs every test: the Python
//! environment of the interop tests (`scripts/python-env.sh`, into `.venv`)
//! and Debian's `prometheus` and `promtool` (`scripts/prometheus-tools.sh`,
//! into `.tools/prometheus`). Both scripts are idempotent and return at once
//! when everything is in place; they run under a file lock, so test binaries
//! running at the same time do not race on the same directory. The brokers
//! are started the same way, by `scripts/brokers.sh`, when a test finds one
//! unreachable (`support::broker_reachable`).

use super::shared::{root, run_script};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The interpreter of the interop tests' virtualenv, with pika, msgpack and
/// nats-py (`tests/interop/requirements.txt`); set up now if it is not yet.
pub fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            run_script("python-env.sh")?;
            Ok(root().join(".venv/bin/python"))
        })
        .clone()
}

/// The directory holding `prometheus` and `promtool`: `WHARF_PROMETHEUS_BIN`
/// when set, else `.tools/prometheus/usr/bin` when fetched, else `/usr/bin`
/// when both are installed there, else fetched now.
pub fn prometheus_tools() -> Result<PathBuf, String> {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            if let Ok(bin) = std::env::var("WHARF_PROMETHEUS_BIN") {
                return Ok(PathBuf::from(bin));
            }
            let both = |dir: &Path| dir.join("prometheus").exists() && dir.join("promtool").exists();
            let fetched = root().join(".tools/prometheus/usr/bin");
            let system = Path::new("/usr/bin");
            if !both(&fetched) && both(system) {
                return Ok(system.to_path_buf());
            }
            run_script("prometheus-tools.sh")?;
            Ok(fetched)
        })
        .clone()
}
