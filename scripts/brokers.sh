#!/usr/bin/env bash
# scripts/brokers.sh - make sure the brokers wharf's test suite needs are up.
#
# Run by CI and on new machines before `cargo test`. For each broker listed in
# WHARF_BROKERS (default: "rabbitmq nats redis") it:
#   1. checks whether it already answers on 127.0.0.1;
#   2. if not, installs the Debian package when the server binary is missing
#      (apt-get update runs at most once, and only when something is needed);
#   3. starts it with this machine's usual command;
#   4. waits (60 s for RabbitMQ, 15 s for the others) until it answers.
# Prints one line per broker on stdout (progress notes go to stderr) and exits
# non-zero if any broker is not up at the end. A NATS server that is running
# without JetStream is reported and left alone; it is never killed.
#
# The functions can be reused with `source scripts/brokers.sh` (main only runs
# when the file is executed).
set -euo pipefail

BROKERS=${WHARF_BROKERS:-rabbitmq nats redis}
APT_UPDATED=0

note() { printf '%s\n' "$*" >&2; }

# Run a command as root (via sudo when we are not root and sudo exists).
as_root() {
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi
}

# tcp_open PORT: is something accepting connections on 127.0.0.1:PORT?
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_for SECS CMD...: retry CMD every second until it succeeds or SECS pass.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 1
  done
}

apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update -q >&2 || return 1
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" >&2
}

# ---- RabbitMQ -------------------------------------------------------------
rabbitmq_ready() {
  tcp_open 5672 || return 1
  as_root timeout 10 rabbitmqctl -q await_startup >/dev/null 2>&1 \
    || as_root timeout 10 rabbitmq-diagnostics -q check_running >/dev/null 2>&1
}
rabbitmq_start() { as_root rabbitmq-server -detached >&2; }

# ---- NATS -----------------------------------------------------------------
# nats_info: print the server's first line (INFO {...}) from 127.0.0.1:4222.
nats_info() {
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && IFS= read -r -t 2 l <&3 && printf "%s\n" "$l"' 2>/dev/null
}
# has_jetstream LINE: does this INFO line advertise JetStream?
has_jetstream() { [[ $1 =~ \"jetstream\":[[:space:]]*true ]]; }
nats_ready() { local info; info=$(nats_info) && has_jetstream "$info"; }
nats_start() {
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
}

# ---- Redis ----------------------------------------------------------------
redis_ready() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]
  else
    timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379 && printf "PING\r\n" >&3 &&
      IFS= read -r -t 2 l <&3 && [[ $l == +PONG* ]]' 2>/dev/null
  fi
}
redis_start() {
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >&2
}

# ensure NAME PORT BINARY PACKAGE WAIT_SECS: the generic check/install/start/wait
# flow, using NAME_ready and NAME_start.
ensure() {
  local name=$1 port=$2 bin=$3 pkg=$4 secs=$5 did=""
  if "${name}_ready"; then echo "$name: up on 127.0.0.1:$port"; return 0; fi
  if tcp_open "$port"; then
    did="port was open but not ready, waited"            # probably still starting
  else
    if [ ! -x "$bin" ] && ! command -v "${bin##*/}" >/dev/null 2>&1; then
      note "$name: $bin not found, installing $pkg"
      apt_install "$pkg" || { echo "$name: FAILED to install $pkg"; return 1; }
      did="installed $pkg, "
    fi
    if tcp_open "$port"; then                              # package may start it
      did+="waited"
    else
      note "$name: not reachable, starting it"
      "${name}_start" || { echo "$name: FAILED to start (see output above)"; return 1; }
      did+="started"
    fi
  fi
  if wait_for "$secs" "${name}_ready"; then
    echo "$name: $did, up on 127.0.0.1:$port"
  else
    echo "$name: NOT ready on 127.0.0.1:$port after ${secs}s ($did)"
    return 1
  fi
}

ensure_rabbitmq() { ensure rabbitmq 5672 /usr/sbin/rabbitmq-server rabbitmq-server 60; }
ensure_redis() {
  ensure redis 6379 /usr/bin/redis-server redis-server 15 || return 1
  # tests/redis_tls.rs makes its certificates with the openssl command.
  if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl || { echo "redis: FAILED to install openssl (for the TLS test)"; return 1; }
  fi
}
ensure_nats() {
  local info
  if info=$(nats_info) && [ -n "$info" ] && ! has_jetstream "$info"; then
    echo "nats: a server is running on 127.0.0.1:4222 WITHOUT JetStream;" \
      "restart it with -js (left untouched)"
    return 1
  fi
  ensure nats 4222 /usr/sbin/nats-server nats-server 15
}

main() {
  local b failed=()
  for b in $BROKERS; do
    case $b in
      rabbitmq | nats | redis) "ensure_$b" || failed+=("$b") ;;
      *) echo "unknown broker '$b' in WHARF_BROKERS (known: rabbitmq nats redis)"; failed+=("$b") ;;
    esac
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    note "brokers NOT ready: ${failed[*]}"
    exit 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
