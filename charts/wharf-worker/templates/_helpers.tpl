{{/*
The chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "wharf-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: <release>-<chart>, or the release
name alone when it already contains the chart name.
*/}}
{{- define "wharf-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wharf-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels of every resource.
*/}}
{{- define "wharf-worker.labels" -}}
helm.sh/chart: {{ include "wharf-worker.chart" . }}
{{ include "wharf-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: wharf
{{- end }}

{{/*
Labels that select the release's pods (never change them after an install:
a Deployment's selector is immutable).
*/}}
{{- define "wharf-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wharf-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wharf-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wharf-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret and key holding the broker URL: an existing Secret, or the one the
chart creates from broker.url.
*/}}
{{- define "wharf-worker.brokerSecretName" -}}
{{- if .Values.broker.existingSecret }}
{{- .Values.broker.existingSecret }}
{{- else }}
{{- printf "%s-broker" (include "wharf-worker.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "wharf-worker.brokerSecretKey" -}}
{{- default "url" .Values.broker.existingSecretKey }}
{{- end }}

{{/*
The broker kind, checked.
*/}}
{{- define "wharf-worker.brokerKind" -}}
{{- $kind := .Values.broker.kind | toString }}
{{- if not (has $kind (list "amqp" "nats")) }}
{{- fail (printf "broker.kind must be \"amqp\" or \"nats\", not %q" $kind) }}
{{- end }}
{{- $kind }}
{{- end }}

{{/*
The NATS JetStream stream of a wharf queue: "WHARF_" + enc(queue), where enc
keeps ASCII letters, digits and "-" and writes every other byte as "_XX" in
upper-case hex (src/transport/nats/naming.rs): orders -> WHARF_orders,
orders.eu -> WHARF_orders_2Eeu, a_b -> WHARF_a_5Fb. splitList "" splits into
characters (UTF-8 sequences); printf "%X" of a character is the hex of its
bytes, so a non-ASCII character becomes one "_XX" per byte, as in wharf.
Usage: include "wharf-worker.natsStreamName" "orders.eu"
*/}}
{{- define "wharf-worker.natsStreamName" -}}
{{- $out := "" }}
{{- range $c := splitList "" (toString .) }}
{{- if regexMatch "^[A-Za-z0-9-]$" $c }}
{{- $out = print $out $c }}
{{- else }}
{{- $out = print $out (regexReplaceAll "([0-9A-F]{2})" (printf "%X" $c) "_${1}") }}
{{- end }}
{{- end }}
{{- printf "WHARF_%s" $out }}
{{- end }}

{{/*
The lowest replica count the release can run with (for the "absent" alert,
which must not fire for a worker that KEDA scaled to zero).
*/}}
{{- define "wharf-worker.minReplicas" -}}
{{- if .Values.autoscaling.keda.enabled }}
{{- .Values.autoscaling.keda.minReplicas | int }}
{{- else if .Values.autoscaling.hpa.enabled }}
{{- .Values.autoscaling.hpa.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
PromQL label matchers scoping the alerts to this release's metrics.
*/}}
{{- define "wharf-worker.metricSelector" -}}
{{- if .Values.prometheusRule.metricSelector }}
{{- .Values.prometheusRule.metricSelector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "wharf-worker.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Checks the broker connection options and the topology against each other and
against broker.kind, where values.schema.json cannot: fails with a message
naming the values; renders nothing.
*/}}
{{- define "wharf-worker.checkBrokerOptions" -}}
{{- $kind := include "wharf-worker.brokerKind" . }}
{{- $b := .Values.broker }}
{{- $c := $b.credentials }}
{{- $t := .Values.topology }}
{{- /* The chart-made URL list: every URL of the broker kind. */}}
{{- if and (not $b.existingSecret) $b.url }}
{{- $schemes := ternary "amqp:// or amqps://" "nats:// or tls://" (eq $kind "amqp") }}
{{- range $i, $u := splitList "," ($b.url | toString) }}
{{- if not (regexMatch (ternary "^amqps?://[^\\s]+$" "^(nats|tls)://[^\\s]+$" (eq $kind "amqp")) $u) }}
{{- /* Only the scheme is shown: the rest may hold a password. */}}
{{- fail (printf "broker.url: every URL of the comma-separated list must start with %s (broker.kind is %s), without spaces; URL %d starts with %q" $schemes $kind (add1 $i) (default "no scheme" (regexFind "^[A-Za-z][A-Za-z0-9+.-]*://" $u))) }}
{{- end }}
{{- end }}
{{- if and (contains "," ($b.url | toString)) .Values.autoscaling.keda.enabled (eq $kind "amqp") (not .Values.autoscaling.keda.rabbitmq.existingSecret) }}
{{- fail "broker.url is a list of URLs, but the KEDA rabbitmq trigger takes one: set autoscaling.keda.rabbitmq.existingSecret to a Secret holding one URL for KEDA" }}
{{- end }}
{{- end }}
{{- /* Credentials: keys need the Secret, the Secret needs a key, one way to authenticate. */}}
{{- $keys := list }}
{{- range $k := list "passwordKey" "tokenKey" "natsCredsKey" "natsNkeyKey" }}
{{- if index $c $k }}{{ $keys = append $keys $k }}{{ end }}
{{- end }}
{{- if and $keys (not $c.secret) }}
{{- fail (printf "broker.credentials.%s names a key, but broker.credentials.secret is empty" (first $keys)) }}
{{- end }}
{{- if and $c.secret (not $keys) }}
{{- fail "broker.credentials.secret is set, but none of broker.credentials.passwordKey, tokenKey, natsCredsKey, natsNkeyKey names a key in it" }}
{{- end }}
{{- if gt (len $keys) 1 }}
{{- fail (printf "broker.credentials: set one way to authenticate, not %s" (join " and " $keys)) }}
{{- end }}
{{- if and $c.user (not $c.passwordKey) }}
{{- fail "broker.credentials.user needs broker.credentials.passwordKey (the password's key in broker.credentials.secret)" }}
{{- end }}
{{- if and $c.passwordKey (not $c.user) }}
{{- fail "broker.credentials.passwordKey needs broker.credentials.user" }}
{{- end }}
{{- /* Options of the other broker are errors, not silently ignored. */}}
{{- if eq $kind "amqp" }}
{{- range $k := list "tokenKey" "natsCredsKey" "natsNkeyKey" }}
{{- if index $c $k }}{{ fail (printf "broker.credentials.%s is for NATS, but broker.kind is amqp" $k) }}{{ end }}
{{- end }}
{{- if not (kindIs "invalid" $t.streamReplicas) }}{{ fail "topology.streamReplicas is for NATS JetStream, but broker.kind is amqp" }}{{ end }}
{{- if $t.streamStorage }}{{ fail "topology.streamStorage is for NATS JetStream, but broker.kind is amqp" }}{{ end }}
{{- else }}
{{- if $b.amqp.vhost }}{{ fail "broker.amqp.vhost is for RabbitMQ, but broker.kind is nats" }}{{ end }}
{{- if not (kindIs "invalid" $b.amqp.heartbeatSeconds) }}{{ fail "broker.amqp.heartbeatSeconds is for RabbitMQ, but broker.kind is nats" }}{{ end }}
{{- if $t.queueType }}{{ fail "topology.queueType is for RabbitMQ, but broker.kind is nats" }}{{ end }}
{{- end }}
{{- /* Variables the chart sets from values must not come through worker.extraEnv as well. */}}
{{- $owned := dict }}
{{- $_ := set $owned "WHARF_BROKER_TLS_CA_FILE" "broker.tls.secret/caSecret" }}
{{- $_ := set $owned "WHARF_BROKER_TLS_CERT_FILE" "broker.tls.secret" }}
{{- $_ := set $owned "WHARF_BROKER_TLS_KEY_FILE" "broker.tls.secret" }}
{{- $_ := set $owned "WHARF_BROKER_TLS_SERVER_NAME" "broker.tls.serverName" }}
{{- $_ := set $owned "WHARF_BROKER_USER" "broker.credentials.user" }}
{{- $_ := set $owned "WHARF_BROKER_PASSWORD_FILE" "broker.credentials.passwordKey" }}
{{- $_ := set $owned "WHARF_BROKER_TOKEN_FILE" "broker.credentials.tokenKey" }}
{{- $_ := set $owned "WHARF_NATS_CREDS_FILE" "broker.credentials.natsCredsKey" }}
{{- $_ := set $owned "WHARF_NATS_NKEY_FILE" "broker.credentials.natsNkeyKey" }}
{{- $_ := set $owned "WHARF_AMQP_VHOST" "broker.amqp.vhost" }}
{{- $_ := set $owned "WHARF_AMQP_HEARTBEAT_SECONDS" "broker.amqp.heartbeatSeconds" }}
{{- $_ := set $owned "WHARF_BROKER_CONNECTION_NAME" "broker.connectionName" }}
{{- $_ := set $owned "WHARF_QUEUE_TYPE" "topology.queueType" }}
{{- $_ := set $owned "WHARF_STREAM_REPLICAS" "topology.streamReplicas" }}
{{- $_ := set $owned "WHARF_STREAM_STORAGE" "topology.streamStorage" }}
{{- $_ := set $owned "WHARF_STORE_REPLICAS" "topology.storeReplicas" }}
{{- range .Values.worker.extraEnv }}
{{- if hasKey $owned .name }}
{{- fail (printf "worker.extraEnv sets %s, which the chart sets from %s: use that value instead" .name (get $owned .name)) }}
{{- end }}
{{- end }}
{{- end }}
