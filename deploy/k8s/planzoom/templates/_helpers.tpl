{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "planzoom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name. */}}
{{- define "planzoom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "planzoom.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "planzoom.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "planzoom.componentName" -}}
{{- printf "%s-%s" (include "planzoom.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "planzoom.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "planzoom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "planzoom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "planzoom.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "planzoom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "planzoom.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "planzoom.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s-%s" $img.repository .component -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $repo }}{{ end -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion $img.tag) }}
{{- end }}

{{/* Seconds a pod gets to stop: gRPC grace + JetStream ack wait + 15. */}}
{{- define "planzoom.terminationGrace" -}}
{{- add (int .Values.grpcGraceSeconds) (int .Values.ackWaitSeconds) 15 }}
{{- end }}

{{/* The component's listening port and its name: http (the gateway) or grpc. */}}
{{- define "planzoom.port" -}}
{{- $c := index .root.Values.components .component -}}
{{- $c.httpPort | default $c.grpcPort -}}
{{- end -}}
{{- define "planzoom.portName" -}}
{{- $c := index .root.Values.components .component -}}
{{- if $c.httpPort }}http{{ else }}grpc{{ end -}}
{{- end -}}

{{/* Settings every component reads (the ConfigMap's data; the NATS setup
Job, a pre-install hook that runs before the ConfigMap exists, gets them as
env values). A YAML map of strings. */}}
{{- define "planzoom.config" -}}
PLANZOOM_NATS_URL: {{ .Values.nats.url | quote }}
PLANZOOM_NATS_REPLICAS: {{ .Values.nats.replicas | int | quote }}
PLANZOOM_S3_REGION: {{ .Values.s3.region | quote }}
PLANZOOM_S3_BUCKET: {{ .Values.s3.bucket | quote }}
PLANZOOM_S3_CREATE_BUCKET: {{ .Values.s3.createBucket | quote }}
{{- with .Values.s3.endpointUrl }}
PLANZOOM_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
PLANZOOM_GRPC_GRACE_SECONDS: {{ .Values.grpcGraceSeconds | quote }}
PLANZOOM_ACK_WAIT_SECONDS: {{ .Values.ackWaitSeconds | quote }}
PLANZOOM_METRICS_PORT: {{ .Values.metrics.port | quote }}
PLANZOOM_WORK_DIR: /tmp/planzoom
PLANZOOM_AUTH_ISSUER: {{ .Values.auth.issuer | quote }}
PLANZOOM_AUTH_AUDIENCE: {{ .Values.auth.audience | quote }}
PLANZOOM_AUTH_ALGORITHM: {{ .Values.auth.algorithm | quote }}
{{- if .Values.auth.jwksUrl }}
PLANZOOM_AUTH_JWKS: {{ .Values.auth.jwksUrl | quote }}
{{- else }}
PLANZOOM_AUTH_PUBLIC_KEY_FILE: /etc/planzoom/auth/public-key.pem
{{- end }}
PLANZOOM_ORG_MAX_JOBS_IN_FLIGHT: {{ .Values.quotas.jobsInFlight | int64 | quote }}
PLANZOOM_ORG_MAX_PIXELS_IN_FLIGHT: {{ .Values.quotas.pixelsInFlight | int64 | quote }}
PLANZOOM_ORG_MAX_PAGES_IN_FLIGHT: {{ .Values.quotas.pagesInFlight | int64 | quote }}
{{- if .Values.tls.secretName }}
PLANZOOM_TLS_CA_FILE: /etc/planzoom/tls/ca.crt
{{- end }}
{{- if .Values.nats.usersSecret }}
PLANZOOM_NATS_SETUP: "false"
{{- end }}
{{- with .Values.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- range $k, $v := .Values.otel.env }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- range $k, $v := .Values.config }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}


{{/*
Refuse to render an installation open to the cluster network unless
.Values.insecure says it is a throwaway: NATS without credentials lets any
pod publish work and forge progress; gRPC without TLS carries bearer tokens
in clear from the gateway to ingest and progress.
*/}}
{{- define "planzoom.requireSecure" -}}
{{- if not .Values.insecure }}
{{- if not (or .Values.nats.usersSecret .Values.nats.credentialsSecret) }}
{{- fail "NATS has no credentials: set nats.usersSecret (a user per component, README \"NATS users\") or nats.credentialsSecret, or insecure: true for a throwaway cluster" }}
{{- end }}
{{- if not .Values.tls.secretName }}
{{- fail "the gRPC APIs have no TLS: set tls.secretName (a kubernetes.io/tls Secret naming the ingest and progress Services), or insecure: true for a throwaway cluster" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy peers: every address but private, loopback, link-local and
shared ranges (networkPolicy.webhooks.exceptIPv4/exceptIPv6).
*/}}
{{- define "planzoom.publicAddresses" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except:
      {{- toYaml .Values.networkPolicy.webhooks.exceptIPv4 | nindent 6 }}
- ipBlock:
    cidr: ::/0
    except:
      {{- toYaml .Values.networkPolicy.webhooks.exceptIPv6 | nindent 6 }}
{{- end }}
