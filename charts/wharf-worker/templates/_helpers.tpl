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
