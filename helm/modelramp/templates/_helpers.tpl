{{/* Names, labels and the pieces every workload shares. */}}

{{- define "modelramp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide prefix of every object name (63 characters at most, DNS-1123). */}}
{{- define "modelramp.fullname" -}}
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

{{/* "<fullname>-<component>", cut to 63 characters. Call with (list $ "router"). */}}
{{- define "modelramp.componentName" -}}
{{- $ctx := index . 0 }}
{{- printf "%s-%s" (include "modelramp.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods; never change them after the first install. */}}
{{- define "modelramp.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "modelramp.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every object's labels (docs/architecture.md, "Names"). Call with (list $ "router"). */}}
{{- define "modelramp.labels" -}}
{{- $ctx := index . 0 -}}
{{ include "modelramp.selectorLabels" . }}
app.kubernetes.io/part-of: modelramp
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A modelramp image: (list . "router") for the router and the legacy system, (list . "controller") for the
ramp controller; <image.repository>-<target>:<image.tag or appVersion>, as scripts/build_images.sh names them. */}}
{{- define "modelramp.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s:%s" $root.Values.image.repository (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) }}
{{- end }}

{{- define "modelramp.experimentConfigMap" -}}
{{- include "modelramp.componentName" (list . "experiment") }}
{{- end }}

{{- define "modelramp.routerSecret" -}}
{{- if .Values.router.secret.existingSecret }}
{{- .Values.router.secret.existingSecret }}
{{- else }}
{{- include "modelramp.componentName" (list . "router") }}
{{- end }}
{{- end }}

{{/* Where the router reaches the legacy system: the local demo Service or production's URL. */}}
{{- define "modelramp.legacyUrl" -}}
{{- if .Values.legacy.local.enabled }}
{{- printf "http://%s:%d" (include "modelramp.componentName" (list . "legacy")) (int .Values.legacy.local.port) }}
{{- else }}
{{- required "legacy.externalUrl is required when legacy.local.enabled is false" .Values.legacy.externalUrl }}
{{- end }}
{{- end }}

{{/* Where the router reaches TF Serving: gRPC host:port or REST base URL. */}}
{{- define "modelramp.modelTarget" -}}
{{- $tfs := include "modelramp.componentName" (list . "tfserving") }}
{{- if eq .Values.experiment.modelBackend.protocol "grpc" }}
{{- if .Values.tfserving.enabled }}{{ printf "%s:%d" $tfs (int .Values.tfserving.grpcPort) }}{{ else }}{{ required "experiment.modelBackend.externalTarget is required when tfserving.enabled is false" .Values.experiment.modelBackend.externalTarget }}{{ end }}
{{- else }}
{{- if .Values.tfserving.enabled }}{{ printf "http://%s:%d" $tfs (int .Values.tfserving.restPort) }}{{ else }}{{ required "experiment.modelBackend.externalTarget is required when tfserving.enabled is false" .Values.experiment.modelBackend.externalTarget }}{{ end }}
{{- end }}
{{- end }}

{{/* Pod-level security context shared by every pod (non-root, RuntimeDefault seccomp). */}}
{{- define "modelramp.podSecurityContext" -}}
{{- $uid := index . 1 -}}
runAsNonRoot: true
runAsUser: {{ $uid }}
runAsGroup: {{ $uid }}
fsGroup: {{ $uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context: the rules every container follows. */}}
{{- define "modelramp.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* The ConfigMap holding the feature baseline the router mounts, or "" when skew monitoring is off. */}}
{{- define "modelramp.baselineConfigMap" -}}
{{- $b := .Values.experiment.skew.baseline }}
{{- if and $b.content $b.existingConfigMap }}
{{- fail "experiment.skew.baseline: set content or existingConfigMap, not both" }}
{{- end }}
{{- if $b.existingConfigMap }}
{{- $b.existingConfigMap }}
{{- else if $b.content }}
{{- include "modelramp.componentName" (list . "baseline") }}
{{- end }}
{{- end }}

{{/*
The Secret holding the routers' outcome ledger URL: router.outcomeLedger.existingSecret, else the
audit database's when it is PostgreSQL (the ledger keeps its own tables there), else "" (per-pod SQLite).
*/}}
{{- define "modelramp.outcomeLedgerSecret" -}}
{{- if .Values.router.outcomeLedger.existingSecret }}{{ .Values.router.outcomeLedger.existingSecret }}
{{- else if eq .Values.rampController.audit.type "postgres" }}{{ .Values.rampController.audit.postgres.existingSecret }}
{{- end }}
{{- end }}

{{- define "modelramp.outcomeLedgerKey" -}}
{{- if .Values.router.outcomeLedger.existingSecret }}{{ .Values.router.outcomeLedger.key }}{{ else }}{{ .Values.rampController.audit.postgres.key }}{{ end }}
{{- end }}
