#!/usr/bin/env bash
# Puts Debian's `prometheus` and `promtool` binaries under .tools/prometheus
# (extracted from the package, not installed: installing it would start a
# Prometheus service on :9090) and prints the directory holding them.
# Used by tests/prometheus.rs (on first use, through tests/support/provision.rs)
# and scripts/validate-chart.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/prometheus"
bin="$dest/usr/bin"
if [ -x "$bin/prometheus" ] && [ -x "$bin/promtool" ]; then
    echo "$bin"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get download prometheus >/dev/null
fi
mkdir -p "$dest"
dpkg-deb -x prometheus_*.deb "$dest"
"$bin/prometheus" --version 2>&1 | head -n 1 >&2
echo "$bin"
