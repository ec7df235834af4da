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

{{/*
An image reference, as bitnami's common.images.image: <registry>/<repository>@<digest> when a digest is
set, else <registry>/<repository>:<tag>. The registry is global.imageRegistry (a parent chart's mirror),
else the image's `registry`, else the one the repository names, read as Docker reads a reference (a
first path component with a dot or a colon, or localhost, as ghcr.io in ghcr.io/modelramp/modelramp);
none: Docker Hub. Call with (list $ <image values> <repository> <tag> <digest>).
*/}}
{{- define "modelramp.imageRef" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $path := index . 2 -}}
{{- $tag := index . 3 | toString -}}
{{- $digest := index . 4 | default "" | toString -}}
{{- $named := "" -}}
{{- $parts := splitList "/" $path -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $named = $first -}}
{{- $path = rest $parts | join "/" -}}
{{- end -}}
{{- $registry := coalesce (dig "imageRegistry" "" (default dict $root.Values.global | deepCopy)) $img.registry $named -}}
{{- $name := $path -}}
{{- if $registry }}{{ $name = printf "%s/%s" (trimSuffix "/" $registry) $path }}{{ end -}}
{{- if $digest }}{{ printf "%s@%s" $name $digest }}{{ else }}{{ printf "%s:%s" $name $tag }}{{ end -}}
{{- end }}

{{/* A modelramp image: (list . "router") for the router and the legacy system, (list . "controller") for the
ramp controller; [<image.registry>/]<image.repository>-<target>, then @<image.digest.<target>> or
:<image.tag or appVersion>, as scripts/build_images.sh names them. */}}
{{- define "modelramp.image" -}}
{{- $root := index . 0 -}}
{{- $target := index . 1 -}}
{{- $img := $root.Values.image -}}
{{- $digest := index (default dict $img.digest) $target | default "" -}}
{{- include "modelramp.imageRef" (list $root $img (printf "%s-%s" $img.repository $target) (default $root.Chart.AppVersion $img.tag) $digest) }}
{{- end }}

{{/* The pull Secrets of every pod: global.imagePullSecrets then imagePullSecrets, names or {name: ...}, once each. */}}
{{- define "modelramp.imagePullSecrets" -}}
{{- $names := list -}}
{{- $global := dig "imagePullSecrets" (list) (default dict .Values.global | deepCopy) -}}
{{- range (concat $global (default (list) .Values.imagePullSecrets)) -}}
{{- if kindIs "string" . }}{{ $names = append $names . }}{{ else }}{{ $names = append $names .name }}{{ end -}}
{{- end -}}
{{- range uniq $names }}
- name: {{ . }}
{{- end }}
{{- end }}

{{/*
A pod template's labels: the component's own (which win), then <component>.podLabels, then the
top-level podLabels. Call with (list $ "router" <component podLabels>).
*/}}
{{- define "modelramp.podLabels" -}}
{{- $ctx := index . 0 -}}
{{- $own := include "modelramp.labels" (list $ctx (index . 1)) -}}
{{- $ownMap := fromYaml $own -}}
{{- $extra := merge (deepCopy (index . 2 | default dict)) (deepCopy (default dict $ctx.Values.podLabels)) -}}
{{ $own }}
{{- range $k, $v := $extra }}
{{- if not (hasKey $ownMap $k) }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A pod template's annotations as YAML, or "": the chart's own (which win), then <component>.podAnnotations,
then the top-level podAnnotations. Call with (list $ <component podAnnotations> <the chart's own, a dict>).
*/}}
{{- define "modelramp.podAnnotations" -}}
{{- $ctx := index . 0 -}}
{{- $all := merge (deepCopy (index . 2 | default dict)) (deepCopy (index . 1 | default dict)) (deepCopy (default dict $ctx.Values.podAnnotations)) -}}
{{- with $all }}{{ toYaml . }}{{ end -}}
{{- end }}

{{/* priorityClassName of a component's pods: its own, else the top-level one, else none. Call with (list $ <component value>). */}}
{{- define "modelramp.priorityClassName" -}}
{{- $ctx := index . 0 -}}
{{- default $ctx.Values.priorityClassName (index . 1) | default "" -}}
{{- end }}

{{/*
topologySpreadConstraints of a component's pods as a YAML list, or "": its own list, else the top-level
one; a constraint without labelSelector gets the component's selector labels, so one default spreads
each component by itself. Call with (list $ "router" <component list>).
*/}}
{{- define "modelramp.topologySpreadConstraints" -}}
{{- $ctx := index . 0 -}}
{{- $component := index . 1 -}}
{{- $given := index . 2 | default $ctx.Values.topologySpreadConstraints | default (list) -}}
{{- $out := list -}}
{{- range $given -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (fromYaml (include "modelramp.selectorLabels" (list $ctx $component)))) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- with $out }}{{ toYaml . }}{{ end -}}
{{- end }}

{{/*
The ServiceAccount a component's pods run as: with serviceAccount.create, its name or "<fullname>-<component>";
without, its name or "default" (the namespace's). Call with (list $ "router" <component serviceAccount>).
*/}}
{{- define "modelramp.serviceAccountName" -}}
{{- $ctx := index . 0 -}}
{{- $sa := index . 2 -}}
{{- if $sa.create }}{{ default (include "modelramp.componentName" (list $ctx (index . 1))) $sa.name }}{{ else }}{{ default "default" $sa.name }}{{ end -}}
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

{{/* Where the router reaches TF Serving: gRPC over the headless Service (every pod's address, so the
router's round_robin channel spreads calls over the pods; a ClusterIP would pin each router to one
pod per connection), or the REST base URL (HTTP/1.1 connections spread through the ClusterIP). */}}
{{- define "modelramp.modelTarget" -}}
{{- $tfs := include "modelramp.componentName" (list . "tfserving") }}
{{- if eq .Values.experiment.modelBackend.protocol "grpc" }}
{{- if .Values.tfserving.enabled }}{{ printf "dns:///%s-headless:%d" $tfs (int .Values.tfserving.grpcPort) }}{{ else }}{{ required "experiment.modelBackend.externalTarget is required when tfserving.enabled is false" .Values.experiment.modelBackend.externalTarget }}{{ end }}
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

{{- /* Progressive delivery (progressiveDelivery.*): which tool, if any, rolls out the TF Serving pods,
and the checks that keep the values coherent. "" (none), "argo-rollouts" or "flagger". */ -}}
{{- define "modelramp.progressiveDelivery" -}}
{{- $pd := .Values.progressiveDelivery -}}
{{- $managedBy := .Values.tfserving.managedBy -}}
{{- if and $pd.argoRollouts.enabled $pd.flagger.enabled -}}
{{- fail "progressiveDelivery: enable argoRollouts or flagger, not both (each rolls out the TF Serving pods)" -}}
{{- end -}}
{{- if and (or $pd.argoRollouts.enabled $pd.flagger.enabled) (not .Values.tfserving.enabled) -}}
{{- fail "progressiveDelivery.argoRollouts and progressiveDelivery.flagger roll out the chart's TF Serving: they need tfserving.enabled" -}}
{{- end -}}
{{- if and $pd.argoRollouts.enabled (ne $managedBy "argo-rollouts") -}}
{{- fail "progressiveDelivery.argoRollouts.enabled needs tfserving.managedBy \"argo-rollouts\" (the Rollout runs the TF Serving pods; the Deployment is only its template)" -}}
{{- end -}}
{{- if and (eq $managedBy "argo-rollouts") (not $pd.argoRollouts.enabled) -}}
{{- fail "tfserving.managedBy \"argo-rollouts\" needs progressiveDelivery.argoRollouts.enabled (or a Rollout of your own: then keep managedBy \"helm\" and scale the Deployment yourself)" -}}
{{- end -}}
{{- if and $pd.flagger.enabled (ne $managedBy "flagger") -}}
{{- fail "progressiveDelivery.flagger.enabled needs tfserving.managedBy \"flagger\" (Flagger scales the TF Serving pods; the Deployment renders no replicas and an HPA pins them)" -}}
{{- end -}}
{{- if and (eq $managedBy "flagger") (not $pd.flagger.enabled) -}}
{{- fail "tfserving.managedBy \"flagger\" needs progressiveDelivery.flagger.enabled (or a Canary of your own: then keep managedBy \"helm\")" -}}
{{- end -}}
{{- if and $pd.flagger.enabled (ne .Values.experiment.modelBackend.protocol "grpc") -}}
{{- fail "progressiveDelivery.flagger needs experiment.modelBackend.protocol \"grpc\": the model arm must dial the headless Service narrowed to the version under experiment" -}}
{{- end -}}
{{- if $pd.flagger.enabled -}}
{{- range $key := list "app" "modelramp.io/model-version" -}}
{{- if or (hasKey (default dict $.Values.podLabels) $key) (hasKey (default dict $.Values.tfserving.podLabels) $key) -}}
{{- fail (printf "progressiveDelivery.flagger sets the TF Serving pods' label %q itself: remove it from podLabels and tfserving.podLabels" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $pd.argoRollouts.enabled }}argo-rollouts{{ else if $pd.flagger.enabled }}flagger{{ end -}}
{{- end }}

{{- /* The model version under Flagger's experiment: progressiveDelivery.flagger.modelVersion, else the model image's tag. */ -}}
{{- define "modelramp.flaggerModelVersion" -}}
{{- $v := default (toString .Values.tfserving.model.image.tag) (toString .Values.progressiveDelivery.flagger.modelVersion) -}}
{{- if not (regexMatch "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$" $v) -}}
{{- fail (printf "progressiveDelivery.flagger.modelVersion: %q is not a label value; set it (the model image tag is used when empty)" $v) -}}
{{- end -}}
{{- $v -}}
{{- end }}

{{- /* The analysis service's in-cluster URL: Argo Rollouts' and Flagger's controllers call it from their own namespaces. */ -}}
{{- define "modelramp.analysisUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "modelramp.componentName" (list . "analysis")) .Release.Namespace (int .Values.progressiveDelivery.analysis.port) -}}
{{- end }}
