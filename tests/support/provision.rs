//! The tools some tests need besides the brokers, provisioned on first use
//! so that `cargo test --all-features` alone runs every test: the Python
//! environment of the interop tests (`scripts/python-env.sh`, into `.venv`)
//! and Debian's `prometheus` and `promtool` (`scripts/prometheus-tools.sh`,
//! into `.tools/prometheus`). Both scripts are idempotent and return at once
//! when everything is in place; they run under a file lock, so test binaries
//! running at the same time do not race on the same directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/<script>` while holding the provisioning lock (a file under
/// cargo's target directory), or says why it failed, with its output.
fn run_locked(script: &str) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("wharf-provision.lock");
    let lock = File::create(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", path.display()))?;
    let output = Command::new(root().join("scripts").join(script))
        .current_dir(root())
        .output()
        .map_err(|e| format!("scripts/{script} did not start: {e}"))?;
    drop(lock);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "scripts/{script} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The interpreter of the interop tests' virtualenv, with pika, msgpack and
/// nats-py (`tests/interop/requirements.txt`); set up now if it is not yet.
pub fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            run_locked("python-env.sh")?;
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
            run_locked("prometheus-tools.sh")?;
            Ok(fetched)
        })
        .clone()
}
