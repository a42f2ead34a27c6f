#!/usr/bin/env bash
# scripts/local-cluster.sh - throwaway broker clusters and TLS brokers on
# loopback, for tests (tests/support/local_cluster.rs drives it).
#
# Everything runs from the Debian packages already installed (nats-server,
# rabbitmq-server/rabbitmqctl, openssl), beside the shared brokers on 4222
# and 5672, which are never touched: own ports, own data under DIR, every
# process tracked by a pid file in DIR. One DIR per `-up`; its `-down`
# stops what it started and removes DIR (only a DIR this script made).
#
#   nats-up DIR [BASE] [SERVER] three nats-servers n1..n3, one cluster with
#                               JetStream; client ports BASE..BASE+2, route
#                               ports BASE+3..BASE+5, monitoring BASE+6..BASE+8
#                               (default BASE 14221). Waits until every server's
#                               /healthz is ok and /jsz names a meta leader.
#                               SERVER: another nats-server binary (default
#                               $NATS_SERVER, else Debian's); nats-start uses
#                               the same one (scripts/nats-server-bin.sh)
#   nats-down DIR               TERM (then KILL) by pid, removes DIR
#   nats-kill DIR N             SIGKILL server N (1..3), waits until it is gone
#   nats-start DIR N            starts server N again with its config and
#                               store; waits until it is healthy again
#   rabbit-up DIR [BASE]        three RabbitMQ nodes wharf<BASE>r1..3@localhost
#                               in one cluster; AMQP ports BASE..BASE+2,
#                               distribution ports BASE+3..BASE+5 (default
#                               BASE 5701). Waits until node 1 sees all three
#                               running.
#   rabbit-down DIR             `rabbitmqctl stop` each, KILL by pid what is
#                               left after 10 s, removes DIR
#   rabbit-stop-app DIR N       `rabbitmqctl stop_app` on node N (an outage)
#   rabbit-start-app DIR N      `rabbitmqctl start_app` on node N
#   certs DIR                   ca.pem/ca.key, server.pem/server.key
#                               (localhost, 127.0.0.1), client.pem/
#                               client-key.pem, wrong-ca.pem (another CA);
#                               PEM, P-256 keys in PKCS#8, valid 30 days
#   nats-tls-up DIR PORT        one nats-server (JetStream) on PORT, TLS with
#                               client certificates required (`verify: true`);
#                               makes DIR's certs when missing
#   nats-tls-down DIR
#   rabbit-tls-up DIR AMQP_PORT TLS_PORT [DIST_PORT]
#                               one RabbitMQ node wharf<TLS_PORT>t@localhost:
#                               plain AMQP on AMQP_PORT, TLS on TLS_PORT with
#                               verify_peer and fail_if_no_peer_cert,
#                               distribution on DIST_PORT (default
#                               AMQP_PORT+20000); makes DIR's certs when
#                               missing and lets group rabbitmq read them
#   rabbit-tls-down DIR
#
# `-up`, `-start` and `certs` are idempotent: what already runs is kept. The
# `-up` and `-start` commands print the URLs (comma-separated; guest/guest
# for RabbitMQ, which takes guest over 127.0.0.1) as the last line of
# stdout; progress and errors go to stderr. Each command gives up after
# WHARF_CLUSTER_LIMIT seconds (default 90) with a message saying what it
# was waiting for, and the end of the logs of a server that exited.
#
# How long they took here (2 cores, shared; tests running side by side):
# nats-up 0.7-1.6 s, nats-start 1.7-6 s, nats-tls-up 0.2-1.2 s, rabbit-up
# 22-30 s (three nodes boot side by side, then two join one after the
# other), rabbit-tls-up 5-11 s, rabbit-stop-app under 1 s, rabbit-start-app
# 1.2-2 s; nats-down under 0.7 s, rabbit-down 2-5 s. After nats-kill,
# JetStream requests went unanswered for up to 10 s until the other two
# elected new leaders.
#
# RabbitMQ nodes run as the rabbitmq user (the package's wrapper switches to
# it), so DIR must be reachable by that user (not under a 0700 home). Each
# node has its own empty RABBITMQ_CONF_ENV_FILE, because the machine's
# /etc/rabbitmq/rabbitmq-env.conf sets NODENAME. rabbitmqctl (run as root,
# it switches to the rabbitmq user too) reaches a node with `-n NODE`
# through the machine's epmd on 127.0.0.1 with the rabbitmq user's Erlang
# cookie (/var/lib/rabbitmq/.erlang.cookie), the one the shared node and
# these nodes all use. Needs root (or sudo) for RabbitMQ.
set -euo pipefail

NATS_SERVER=${NATS_SERVER:-/usr/sbin/nats-server}
LIMIT=${WHARF_CLUSTER_LIMIT:-90}
DEADLINE=$((SECONDS + LIMIT))
CMD=${1:-help}
MARK=.local-cluster # in every DIR this script made; `-down` removes only those

note() { printf '%s\n' "$*" >&2; }
die() {
  note "local-cluster.sh $CMD: $*"
  exit 1
}

# Run a command as root (via sudo when we are not root and sudo exists).
as_root() {
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi
}

# Seconds left before DEADLINE (at least 1).
left() {
  local n=$((DEADLINE - SECONDS))
  [ "$n" -gt 0 ] && echo "$n" || echo 1
}

# within WHAT CMD...: retry CMD until it succeeds; die when time is up.
within() {
  local what=$1
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$DEADLINE" ] || die "gave up after ${LIMIT}s waiting for: $what"
    sleep 0.5
  done
}

# tcp_open PORT: is something accepting connections on 127.0.0.1:PORT?
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# http_get PORT PATH: the body (and headers) of an HTTP GET on loopback.
http_get() {
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 &&
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null
}

# alive PIDFILE MARK: the pid in PIDFILE runs and its command line or its
# environment holds MARK, a path in DIR (so a reused pid, or a reaped or
# zombie process, does not count). nats-server has its config file on its
# command line; a RabbitMQ node (beam.smp) only has its RABBITMQ_* paths in
# its environment.
alive() {
  [ -s "$1" ] && alive_pid "$(<"$1")" "$2"
}

# alive_pid PID MARK: the same for a pid.
alive_pid() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # Read first, then match: `grep -q` in the pipe would end it early, and
  # with pipefail the writer's SIGPIPE would count as "not alive".
  local info
  info=$(as_root cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n') || true
  grep -qxF -- "$2" <<<"$info"
}

# gone PIDFILE MARK: the negation, for `within`.
gone() { ! alive "$@"; }

# kill_pidfile PIDFILE MARK SIGNAL: signal the process, if it is ours.
kill_pidfile() {
  alive "$1" "$2" || return 0
  as_root kill "-$3" "$(<"$1")" 2>/dev/null || true
}

# made_dir DIR: create DIR (and the mark); prints its absolute path.
made_dir() {
  mkdir -p "$1" || die "cannot create $1"
  chmod 755 "$1"
  touch "$1/$MARK"
  (cd "$1" && pwd)
}

# our_dir DIR: the absolute path of a DIR this script made, or nothing.
our_dir() {
  [ -f "$1/$MARK" ] && (cd "$1" && pwd)
}

# remove_dir DIR: removes a DIR this script made.
remove_dir() {
  local dir=$1
  if [ -f "$dir/$MARK" ]; then
    as_root rm -rf -- "$dir"
  elif [ -e "$dir" ]; then
    note "not removing $dir: local-cluster.sh did not make it"
  fi
}

# number N: N must be 1, 2 or 3.
number() {
  [[ ${1:-} =~ ^[123]$ ]] || die "N must be 1, 2 or 3, not '${1:-}'"
}

# port_arg NAME VALUE: VALUE must be a port number.
port_arg() {
  [[ ${2:-} =~ ^[0-9]+$ ]] && [ "$2" -ge 1024 ] && [ "$2" -le 65535 ] ||
    die "$1 must be a port number (1024..65535), not '${2:-}'"
}

# base_of DIR FILE GIVEN DEFAULT: the base port stored in DIR/FILE, or
# GIVEN (else DEFAULT) stored there; a different GIVEN is an error.
base_of() {
  local dir=$1 file=$2 given=$3 default=$4 stored=""
  [ -s "$dir/$file" ] && stored=$(<"$dir/$file")
  if [ -n "$stored" ]; then
    [ -z "$given" ] || [ "$given" = "$stored" ] ||
      die "$dir already holds a cluster on base port $stored, not $given"
    echo "$stored"
    return
  fi
  given=${given:-$default}
  port_arg BASE_PORT "$given"
  echo "$given" >"$dir/$file"
  echo "$given"
}

# stored_base DIR FILE: the base port of an existing cluster in DIR.
stored_base() {
  [ -s "$1/$2" ] || die "$1 holds no cluster (no $2); run the -up command first"
  cat "$1/$2"
}

# joined SEP ITEMS...: the items joined by SEP.
joined() {
  local sep=$1 out=$2
  shift 2
  for item in "$@"; do out+="$sep$item"; done
  echo "$out"
}

# ---- NATS ------------------------------------------------------------------
# Server I of a cluster based at BASE: client BASE+I-1, route BASE+I+2,
# monitoring BASE+I+5.
nats_client_port() { echo $(($1 + $2 - 1)); }
nats_route_port() { echo $(($1 + $2 + 2)); }
nats_monitor_port() { echo $(($1 + $2 + 5)); }

# nats_start_conf DIR NAME: starts nats-server with DIR/NAME.conf, unless it
# runs already; its pid goes to DIR/NAME.pid.
nats_start_conf() {
  local dir=$1 name=$2
  [ -x "$NATS_SERVER" ] || die "$NATS_SERVER is not installed (scripts/brokers.sh installs it)"
  if alive "$dir/$name.pid" "$dir/$name.conf"; then return 0; fi
  mkdir -p "$dir/$name"
  "$NATS_SERVER" -c "$dir/$name.conf" >>"$dir/$name/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  # Until the child has exec'd, /proc shows this script's command line.
  within "nats-server $name to start" execd $! "$dir/$name.conf"
}

# execd PID MARK: the process started as PID is what MARK says (it has
# exec'd), or it is gone already.
execd() {
  local state
  alive_pid "$1" "$2" && return 0
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
  [[ $state == Z* ]]
}

# nats_log DIR NAME: the end of a server's log, for a failure message.
nats_log() { tail -n 15 "$1/$2/server.log" "$1/$2/stdout.log" >&2 2>/dev/null || true; }

# nats_current DIR BASE I: server I runs and says it is healthy with
# JetStream: its /healthz (which in 2.9 asks that JetStream is current with
# a meta leader) and its /jsz naming a meta leader.
nats_current() {
  local dir=$1 base=$2 i=$3 port
  alive "$dir/n$i.pid" "$dir/n$i.conf" || {
    nats_log "$dir" "n$i"
    die "nats-server n$i exited (its log is above)"
  }
  port=$(nats_monitor_port "$base" "$i")
  http_get "$port" /healthz | grep -q '"status": *"ok"' &&
    http_get "$port" /jsz | grep -q '"leader": *"n[123]"'
}

nats_write_configs() {
  local dir=$1 base=$2 i j routes
  for i in 1 2 3; do
    routes=()
    for j in 1 2 3; do
      [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:$(nats_route_port "$base" "$j")")
    done
    cat >"$dir/n$i.conf" <<EOF
# nats-up: server n$i of the cluster based at port $base
server_name: n$i
listen: 127.0.0.1:$(nats_client_port "$base" "$i")
http: 127.0.0.1:$(nats_monitor_port "$base" "$i")
log_file: "$dir/n$i/server.log"
jetstream {
  store_dir: "$dir/n$i/jetstream"
  max_memory_store: 256MB
  max_file_store: 1GB
}
cluster {
  name: wharf-$base
  listen: 127.0.0.1:$(nats_route_port "$base" "$i")
  routes: [$(joined ", " "${routes[@]}")]
}
EOF
  done
}

nats_urls() {
  local base=$1
  joined , "nats://127.0.0.1:$base" "nats://127.0.0.1:$((base + 1))" "nats://127.0.0.1:$((base + 2))"
}

nats_up() {
  local dir base i
  [ -n "${1:-}" ] || die "usage: nats-up DIR [BASE_PORT]"
  dir=$(made_dir "$1")
  base=$(base_of "$dir" nats.base "${2:-}" 14221)
  # The binary, for nats-start to restart a server with the same one.
  [ -z "${3:-}" ] || NATS_SERVER=$3
  echo "$NATS_SERVER" >"$dir/nats.server"
  nats_write_configs "$dir" "$base"
  for i in 1 2 3; do nats_start_conf "$dir" "n$i"; done
  for i in 1 2 3; do
    within "nats-server n$i (monitoring port $(nats_monitor_port "$base" "$i")) healthy with a JetStream meta leader" \
      nats_current "$dir" "$base" "$i"
  done
  nats_urls "$base"
}

# nats_down_all DIR: every nats-server DIR's pid files name, TERM then KILL.
nats_down_all() {
  local dir=$1 pidfile
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill_pidfile "$pidfile" "${pidfile%.pid}.conf" TERM
  done
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    local end=$((SECONDS + 5))
    while alive "$pidfile" "${pidfile%.pid}.conf" && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    kill_pidfile "$pidfile" "${pidfile%.pid}.conf" KILL
  done
}

nats_down() {
  local dir
  [ -n "${1:-}" ] || die "usage: nats-down DIR"
  dir=$(our_dir "$1") || { remove_dir "$1"; return 0; }
  nats_down_all "$dir"
  remove_dir "$dir"
}

nats_kill() {
  local dir
  [ -n "${1:-}" ] || die "usage: nats-kill DIR N"
  number "${2:-}"
  dir=$(our_dir "$1") || die "$1 holds no cluster; run nats-up first"
  kill_pidfile "$dir/n$2.pid" "$dir/n$2.conf" KILL
  within "nats-server n$2 to exit" gone "$dir/n$2.pid" "$dir/n$2.conf"
}

nats_start() {
  local dir base
  [ -n "${1:-}" ] || die "usage: nats-start DIR N"
  number "${2:-}"
  dir=$(our_dir "$1") || die "$1 holds no cluster; run nats-up first"
  base=$(stored_base "$dir" nats.base)
  [ ! -s "$dir/nats.server" ] || NATS_SERVER=$(cat "$dir/nats.server")
  nats_start_conf "$dir" "n$2"
  within "nats-server n$2 healthy with a JetStream meta leader" nats_current "$dir" "$base" "$2"
  nats_urls "$base"
}

# ---- certificates ------------------------------------------------------------
# key FILE: a new P-256 key, PKCS#8 PEM (genpkey writes PKCS#8).
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME SUBJECT: a self-signed CA, NAME.key and NAME.pem.
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 30 -subj "$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf KEY CERT SUBJECT EXTENSIONS: a certificate signed by ca.pem.
leaf() {
  key "$1"
  openssl req -new -key "$1" -out "$2.csr" -subj "$3" 2>/dev/null
  printf '%s\n' "$4" >"$2.ext"
  openssl x509 -req -in "$2.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$2" -days 30 -extfile "$2.ext" 2>/dev/null
  rm -f "$2.csr" "$2.ext"
}

certs_made() {
  local f
  for f in ca.pem ca.key server.pem server.key client.pem client-key.pem wrong-ca.pem; do
    [ -s "$1/$f" ] || return 1
  done
}

certs() {
  local dir
  [ -n "${1:-}" ] || die "usage: certs DIR"
  command -v openssl >/dev/null || die "the openssl command is missing (scripts/brokers.sh installs it)"
  dir=$(made_dir "$1")
  certs_made "$dir" && return 0
  (
    cd "$dir"
    umask 022
    ca ca "/CN=wharf test CA"
    leaf server.key server.pem "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
    leaf client-key.pem client.pem "/CN=wharf-client" "subjectAltName=DNS:wharf-client
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
    ca wrong-ca "/CN=wharf unrelated CA"
    rm -f ca.srl
  ) || die "openssl failed making the certificates in $dir"
  certs_made "$dir" || die "openssl did not make every certificate in $dir"
  note "certs: made in $dir"
}

# ---- NATS with TLS -------------------------------------------------------------
nats_tls_answers() {
  local dir=$1 port=$2
  alive "$dir/tls.pid" "$dir/tls.conf" || {
    nats_log "$dir" tls
    die "the TLS nats-server exited (its log is above)"
  }
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 && IFS= read -r -t 2 l <&3 &&
    [[ $l == INFO* && $l =~ \"tls_required\":[[:space:]]*true ]]' _ "$port" 2>/dev/null
}

nats_tls_up() {
  local dir port
  [ -n "${1:-}" ] || die "usage: nats-tls-up DIR PORT"
  port_arg PORT "${2:-}"
  port=$2
  certs "$1"
  dir=$(our_dir "$1")
  cat >"$dir/tls.conf" <<EOF
# nats-tls-up: one server, TLS with client certificates
server_name: wharf-tls-$port
listen: 127.0.0.1:$port
log_file: "$dir/tls/server.log"
jetstream {
  store_dir: "$dir/tls/jetstream"
  max_memory_store: 256MB
  max_file_store: 1GB
}
tls {
  cert_file: "$dir/server.pem"
  key_file: "$dir/server.key"
  ca_file: "$dir/ca.pem"
  verify: true
  timeout: 5
}
EOF
  nats_start_conf "$dir" tls
  within "the TLS nats-server to greet on 127.0.0.1:$port" nats_tls_answers "$dir" "$port"
  echo "tls://127.0.0.1:$port"
}

nats_tls_down() {
  local dir
  [ -n "${1:-}" ] || die "usage: nats-tls-down DIR"
  dir=$(our_dir "$1") || { remove_dir "$1"; return 0; }
  nats_down_all "$dir"
  remove_dir "$dir"
}

# ---- RabbitMQ ------------------------------------------------------------------
# A node lives in DIR/<id>/: rabbitmq.conf, env.conf (empty: the machine's
# /etc/rabbitmq/rabbitmq-env.conf sets NODENAME, which must not apply),
# enabled_plugins, mnesia/, log/, pid (written by the node), nodename.

rabbit_installed() {
  command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null ||
    die "rabbitmq-server/rabbitmqctl are not installed (scripts/brokers.sh installs them)"
  [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null ||
    die "RabbitMQ nodes need root (or sudo): they run as the rabbitmq user"
}

# ctl_in SECS ARGS...: rabbitmqctl as root, for at most SECS seconds. Each
# call is an Erlang node of its own, listening on a port from 35672 up to
# RABBITMQ_CTL_DIST_PORT_MAX (35682 by default: eleven calls at a time on
# the machine); this script runs several at once, and tests run side by
# side, so it may go higher.
ctl_in() {
  local secs=$1
  shift
  as_root env RABBITMQ_CTL_DIST_PORT_MAX=35771 timeout "$secs" rabbitmqctl "$@"
}

# ctl ARGS...: ctl_in, bounded by the time left.
ctl() { ctl_in "$(left)" "$@"; }

# ctl_quiet ARGS...: ctl, its output shown only when it fails (join_cluster
# logs harmless errors about tables of the node it stopped).
ctl_quiet() {
  local out
  out=$(ctl -q "$@" 2>&1) || die "rabbitmqctl $* failed: $out"
}

# rabbit_prepare NODEDIR NODENAME CONF: the node's files, owned by rabbitmq.
rabbit_prepare() {
  local d=$1
  mkdir -p "$d/mnesia" "$d/log"
  echo '[].' >"$d/enabled_plugins"
  printf '%s\n' "$3" >"$d/rabbitmq.conf"
  : >"$d/env.conf"
  echo "$2" >"$d/nodename"
  as_root chown -R rabbitmq:rabbitmq "$d"
  as_root runuser -u rabbitmq -- test -w "$d/mnesia" ||
    die "the rabbitmq user cannot write $d (is a parent directory closed to it? use a DIR under /tmp)"
}

# rabbit_node_alive NODEDIR: the node's beam runs (its pid file, written by
# the node once it boots, names a process started with its node name).
rabbit_node_alive() { alive "$1/pid" "RABBITMQ_PID_FILE=$1/pid"; }

# rabbit_start NODEDIR DIST_PORT: starts the node, unless it runs already.
rabbit_start() {
  local d=$1 name
  name=$(<"$d/nodename")
  rabbit_node_alive "$d" && return 0
  # Started before but no pid file yet: still booting?
  if [ -e "$d/start.log" ] && ctl -n "$name" -q ping >/dev/null 2>&1; then
    return 0
  fi
  rm -f "$d/pid"
  as_root env RABBITMQ_CONF_ENV_FILE="$d/env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_NODENAME="$name" RABBITMQ_DIST_PORT="$2" \
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" RABBITMQ_PID_FILE="$d/pid" \
    rabbitmq-server -detached >>"$d/start.log" 2>&1 </dev/null ||
    die "rabbitmq-server $name did not start: $(cat "$d/start.log")"
}

# rabbit_log NODEDIR: the end of a node's log, for a failure message.
rabbit_log() { tail -n 20 "$1"/log/*.log "$1/start.log" >&2 2>/dev/null || true; }

# rabbit_await NODEDIR...: waits (all at once) until each node's app runs.
rabbit_await() {
  local d waits=() failed=""
  for d in "$@"; do
    ctl -n "$(<"$d/nodename")" -q wait --timeout "$(left)" "$d/pid" >/dev/null 2>&1 &
    waits+=("$!:$d")
  done
  for w in "${waits[@]}"; do
    wait "${w%%:*}" || failed+=" ${w#*:}"
  done
  if [ -n "$failed" ]; then
    for d in $failed; do rabbit_log "$d"; done
    die "RabbitMQ node(s) in$failed did not start, or not within ${LIMIT}s (logs above)"
  fi
}

# beams_of NODEDIR: the pids of the Erlang VMs started for the node: its pid
# file's, and any beam.smp with its RABBITMQ_PID_FILE in the environment
# (a node still booting has not written its pid file yet).
beams_of() {
  local proc pid
  [ -s "$1/pid" ] && alive_pid "$(<"$1/pid")" "RABBITMQ_PID_FILE=$1/pid" && cat "$1/pid" && echo
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$(cat "$proc/comm" 2>/dev/null)" = beam.smp ] || continue
    [ "$pid" = "$(cat "$1/pid" 2>/dev/null)" ] && continue
    alive_pid "$pid" "RABBITMQ_PID_FILE=$1/pid" && echo "$pid"
  done
  return 0
}

# rabbit_stop_nodes NODEDIR...: `rabbitmqctl stop` (all at once), then KILL
# what still runs after 10 s.
rabbit_stop_nodes() {
  local d pid pids=() end
  for d in "$@"; do
    [ -s "$d/nodename" ] && [ -e "$d/start.log" ] || continue
    # The node deletes its pid file as it stops: find the pids first.
    for pid in $(beams_of "$d"); do pids+=("$pid:$d"); done
    ctl_in 30 -n "$(<"$d/nodename")" -q stop >/dev/null 2>&1 &
  done
  wait || true
  end=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    d=${pid#*:}
    pid=${pid%%:*}
    while alive_pid "$pid" "RABBITMQ_PID_FILE=$d/pid" && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    if alive_pid "$pid" "RABBITMQ_PID_FILE=$d/pid"; then
      note "$(<"$d/nodename") did not stop: KILL"
      as_root kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

rabbit_name() { echo "wharf${1}r$2@localhost"; }
rabbit_urls() {
  local base=$1
  joined , "amqp://guest:guest@127.0.0.1:$base/%2f" "amqp://guest:guest@127.0.0.1:$((base + 1))/%2f" \
    "amqp://guest:guest@127.0.0.1:$((base + 2))/%2f"
}

# rabbit_cluster_json NODE: cluster_status as JSON.
rabbit_cluster_json() { ctl -n "$1" -q cluster_status --formatter json 2>/dev/null; }

# rabbit_all_running NODE1 NODE2 NODE3: node 1 sees all three running.
rabbit_all_running() {
  local status running node
  status=$(rabbit_cluster_json "$1") || return 1
  running=$(grep -o '"running_nodes":\[[^]]*\]' <<<"$status") || return 1
  for node in "$@"; do grep -qF "\"$node\"" <<<"$running" || return 1; done
}

rabbit_up() {
  local dir base i d status first
  [ -n "${1:-}" ] || die "usage: rabbit-up DIR [BASE_PORT]"
  rabbit_installed
  dir=$(made_dir "$1")
  base=$(base_of "$dir" rabbit.base "${2:-}" 5701)
  local nodes=() dirs=()
  for i in 1 2 3; do
    d="$dir/r$i"
    nodes+=("$(rabbit_name "$base" "$i")")
    dirs+=("$d")
    if [ ! -s "$d/nodename" ]; then
      rabbit_prepare "$d" "${nodes[-1]}" "listeners.tcp.local = 127.0.0.1:$((base + i - 1))
loopback_users.guest = true"
    fi
  done
  for i in 0 1 2; do rabbit_start "${dirs[$i]}" $((base + 3 + i)); done
  rabbit_await "${dirs[@]}"
  first=${nodes[0]}
  # Nodes 2 and 3 join node 1 one after the other (the way the recipe in
  # shared/notes/local-clusters.md was checked); a node already in node 1's
  # cluster is left alone.
  for i in 1 2; do
    status=$(rabbit_cluster_json "$first") || die "cluster_status on $first failed"
    if grep -o '"disk_nodes":\[[^]]*\]' <<<"$status" | grep -qF "\"${nodes[$i]}\""; then
      continue
    fi
    note "rabbit-up: ${nodes[$i]} joins $first"
    ctl_quiet -n "${nodes[$i]}" stop_app
    ctl_quiet -n "${nodes[$i]}" join_cluster "$first"
    ctl_quiet -n "${nodes[$i]}" start_app
  done
  within "${nodes[*]} running in one cluster" rabbit_all_running "${nodes[@]}"
  rabbit_urls "$base"
}

rabbit_down() {
  local dir
  [ -n "${1:-}" ] || die "usage: rabbit-down DIR"
  dir=$(our_dir "$1") || { remove_dir "$1"; return 0; }
  rabbit_stop_nodes "$dir"/r[123]
  remove_dir "$dir"
}

# rabbit_app DIR N stop_app|start_app
rabbit_app() {
  local dir base name
  [ -n "${1:-}" ] || die "usage: rabbit-${3/_/-} DIR N"
  number "${2:-}"
  rabbit_installed
  dir=$(our_dir "$1") || die "$1 holds no cluster; run rabbit-up first"
  base=$(stored_base "$dir" rabbit.base)
  name=$(rabbit_name "$base" "$2")
  ctl -n "$name" -q "$3" >/dev/null || die "$3 on $name failed"
  if [ "$3" = start_app ]; then
    echo "amqp://guest:guest@127.0.0.1:$((base + $2 - 1))/%2f"
  fi
}

rabbit_tls_up() {
  local dir amqp tls dist d f name
  [ -n "${1:-}" ] || die "usage: rabbit-tls-up DIR AMQP_PORT TLS_PORT [DIST_PORT]"
  port_arg AMQP_PORT "${2:-}"
  port_arg TLS_PORT "${3:-}"
  amqp=$2 tls=$3 dist=${4:-$(($2 + 20000))}
  port_arg DIST_PORT "$dist"
  rabbit_installed
  certs "$1"
  dir=$(our_dir "$1")
  # The node (user rabbitmq) reads the server's key: group rabbitmq.
  as_root chgrp rabbitmq "$dir/server.key" "$dir/server.pem" "$dir/ca.pem"
  chmod 640 "$dir/server.key"
  for f in ca.pem server.pem server.key; do
    as_root runuser -u rabbitmq -- test -r "$dir/$f" ||
      die "the rabbitmq user cannot read $dir/$f (is a parent directory closed to it? use a DIR under /tmp)"
  done
  d="$dir/rtls"
  name="wharf${tls}t@localhost"
  if [ ! -s "$d/nodename" ]; then
    rabbit_prepare "$d" "$name" "listeners.tcp.local = 127.0.0.1:$amqp
listeners.ssl.local = 127.0.0.1:$tls
loopback_users.guest = true
ssl_options.cacertfile = $dir/ca.pem
ssl_options.certfile = $dir/server.pem
ssl_options.keyfile = $dir/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true"
  fi
  rabbit_start "$d" "$dist"
  rabbit_await "$d"
  within "the TLS listener of $name on 127.0.0.1:$tls" tcp_open "$tls"
  echo "amqps://guest:guest@127.0.0.1:$tls/%2f"
}

rabbit_tls_down() {
  local dir
  [ -n "${1:-}" ] || die "usage: rabbit-tls-down DIR"
  dir=$(our_dir "$1") || { remove_dir "$1"; return 0; }
  rabbit_stop_nodes "$dir/rtls"
  remove_dir "$dir"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

main() {
  [ $# -gt 0 ] && shift
  case $CMD in
    nats-up) nats_up "$@" ;;
    nats-down) nats_down "$@" ;;
    nats-kill) nats_kill "$@" ;;
    nats-start) nats_start "$@" ;;
    rabbit-up) rabbit_up "$@" ;;
    rabbit-down) rabbit_down "$@" ;;
    rabbit-stop-app) rabbit_app "${1:-}" "${2:-}" stop_app ;;
    rabbit-start-app) rabbit_app "${1:-}" "${2:-}" start_app ;;
    certs) certs "$@" ;;
    nats-tls-up) nats_tls_up "$@" ;;
    nats-tls-down) nats_tls_down "$@" ;;
    rabbit-tls-up) rabbit_tls_up "$@" ;;
    rabbit-tls-down) rabbit_tls_down "$@" ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
