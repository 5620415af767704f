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
