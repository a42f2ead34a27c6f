#!/usr/bin/env bash
# The Python environment of the interop tests: a virtualenv in .venv at the
# repository root with tests/interop/requirements.txt installed (pika,
# msgpack, nats-py). Idempotent: when .venv already holds exactly those
# requirements it returns at once. The interop tests run it on first use
# (tests/support/provision.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/interop/requirements.txt
venv=.venv
stamp="$venv/.wharf-requirements.sha256"

command -v python3 >/dev/null || { echo "python-env: python3 is missing (apt-get install python3 python3-venv)" >&2; exit 1; }

# A .venv whose interpreter no longer runs (python3 upgraded or moved) is made anew.
if ! "$venv/bin/python" -c '' 2>/dev/null; then
    echo "python-env: creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || {
        echo "python-env: 'python3 -m venv' failed; on Debian install python3-venv" >&2
        rm -rf "$venv"
        exit 1
    }
fi

want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'import pika, msgpack, nats' 2>/dev/null; then
    echo "python-env: $venv up to date ($requirements)"
    exit 0
fi

echo "python-env: installing $requirements into $venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -c 'import importlib.metadata, pika, msgpack, nats; print("python-env: pika", pika.__version__, "msgpack", msgpack.version, "nats-py", importlib.metadata.version("nats-py"))'
echo "$want" >"$stamp"
