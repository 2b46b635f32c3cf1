{{/*
Named templates of mtaq-exporter. "mtaq-exporter.sidecarContainer" and
"mtaq-exporter.sidecarVolumes" are meant to be included from YOUR MTA chart; pass them this
chart's scope so that .Values, .Chart and .Release are this chart's:

  containers:
    - name: postfix
      ...
    {{- include "mtaq-exporter.sidecarContainer" (index .Subcharts "mtaq-exporter") | nindent 4 }}
  volumes:
    {{- include "mtaq-exporter.sidecarVolumes" (index .Subcharts "mtaq-exporter") | nindent 4 }}
*/}}

{{- define "mtaq-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mtaq-exporter.fullname" -}}
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

{{- define "mtaq-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mtaq-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mtaq-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mtaq-exporter.labels" -}}
helm.sh/chart: {{ include "mtaq-exporter.chart" . }}
{{ include "mtaq-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mtaq-exporter
{{- end }}

{{/* The pods of the demo Deployment (the MTA and its sidecar) and of the blocklist checker. */}}
{{- define "mtaq-exporter.mtaPodLabels" -}}
{{ include "mtaq-exporter.selectorLabels" . }}
app.kubernetes.io/component: mta
{{- end }}

{{- define "mtaq-exporter.checkerPodLabels" -}}
{{ include "mtaq-exporter.selectorLabels" . }}
app.kubernetes.io/component: blocklist-checker
{{- end }}

{{/* Labels of the MTA pods running the sidecar: .Values.podSelector, else the demo Deployment's. */}}
{{- define "mtaq-exporter.podSelector" -}}
{{- if .Values.podSelector }}
{{- toYaml .Values.podSelector }}
{{- else if .Values.deployment.enabled }}
{{- include "mtaq-exporter.mtaPodLabels" . }}
{{- else }}
{{- fail "mtaq-exporter: set podSelector to the labels of the MTA pods running the sidecar (or deployment.enabled=true)" }}
{{- end }}
{{- end }}

{{/*
What the Service and the monitors select, as a YAML list of {name, selector}: the MTA pods
(unless only the checker runs in this release) and the checker's pods.
*/}}
{{- define "mtaq-exporter.scrapeTargets" -}}
{{- $targets := list }}
{{- if or .Values.podSelector .Values.deployment.enabled (not .Values.checker.enabled) }}
{{- $targets = append $targets (dict "name" (include "mtaq-exporter.fullname" .) "selector" (include "mtaq-exporter.podSelector" . | fromYaml)) }}
{{- end }}
{{- if .Values.checker.enabled }}
{{- $targets = append $targets (dict "name" (printf "%s-checker" (include "mtaq-exporter.fullname" .)) "selector" (include "mtaq-exporter.checkerPodLabels" . | fromYaml)) }}
{{- end }}
{{- toYaml $targets }}
{{- end }}

{{- define "mtaq-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The metrics path, from the agent's own configuration. */}}
{{- define "mtaq-exporter.telemetryPath" -}}
{{- dig "web" "telemetry_path" "/metrics" .Values.config }}
{{- end }}

{{/* Put this in the pod template's annotations so that pods restart on config changes. */}}
{{- define "mtaq-exporter.configChecksum" -}}
checksum/mtaq-config: {{ list .Values.config .Values.web | toYaml | sha256sum }}
{{- end }}

{{/* HTTPS when the web-config file turns TLS on: the probes' and the monitors' scheme. */}}
{{- define "mtaq-exporter.scheme" -}}
{{- if hasKey .Values.web.config "tls_server_config" }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The pod volumes of an agent (a list): its configuration file from the ConfigMap named `config`
and, when configured, the web-config file and the TLS Secret. Called with (dict "root" $ "config" NAME).
*/}}
{{- define "mtaq-exporter.agentVolumes" -}}
{{- $v := .root.Values -}}
- name: mtaq-config
  configMap:
    name: {{ .config }}
{{- if $v.web.config }}
- name: mtaq-web
  secret:
    secretName: {{ include "mtaq-exporter.fullname" .root }}-web
{{- end }}
{{- with $v.web.tlsSecretName }}
- name: mtaq-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{/* The sidecar's pod volumes (a list): put them into YOUR MTA pod's `volumes:`. */}}
{{- define "mtaq-exporter.sidecarVolumes" -}}
{{- include "mtaq-exporter.agentVolumes" (dict "root" . "config" (include "mtaq-exporter.fullname" .)) }}
{{- end }}

{{/*
An agent container (a list item for a pod's `containers:`), shared by the sidecar and the
blocklist checker. Parameters: root ($), name, args (flags after the common ones), env,
resources, mounts (extra volume mounts), mta (mount the MTA's queue and log volumes).
*/}}
{{- define "mtaq-exporter.agentContainer" -}}
{{- $v := .root.Values }}
{{- $scheme := include "mtaq-exporter.scheme" .root -}}
- name: {{ .name }}
  image: {{ include "mtaq-exporter.image" .root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - --config.file=/etc/mtaq/mtaq.yml
    - --web.listen-address=:{{ $v.containerPort }}
    {{- if $v.web.config }}
    - --web.config.file=/etc/mtaq-web/web-config.yml
    {{- end }}
    {{- range .args }}
    - {{ . | quote }}
    {{- end }}
  {{- with .env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: metrics
      containerPort: {{ $v.containerPort }}
      protocol: TCP
  {{- range $probe, $path := dict "livenessProbe" "/healthz" "readinessProbe" "/readyz" }}
  {{- $p := get $v $probe }}
  {{- if $p.enabled }}
  {{ $probe }}:
    httpGet:
      path: {{ $path }}
      port: metrics
      scheme: {{ $scheme }}
    initialDelaySeconds: {{ $p.initialDelaySeconds }}
    periodSeconds: {{ $p.periodSeconds }}
    timeoutSeconds: {{ $p.timeoutSeconds }}
    failureThreshold: {{ $p.failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mtaq-config
      mountPath: /etc/mtaq
      readOnly: true
    {{- if $v.web.config }}
    - name: mtaq-web
      mountPath: /etc/mtaq-web
      readOnly: true
    {{- end }}
    {{- if $v.web.tlsSecretName }}
    - name: mtaq-tls
      mountPath: /etc/mtaq-tls
      readOnly: true
    {{- end }}
    {{- if .mta }}
    - name: {{ required "mta.queuePublicDir: name of the MTA's queue volume" $v.mta.queuePublicDir }}
      mountPath: {{ $v.mta.queuePublicMountPath }}
      {{- with $v.mta.queuePublicSubPath }}
      subPath: {{ . }}
      {{- end }}
      readOnly: true
    {{- if $v.mta.logDir }}
    - name: {{ $v.mta.logDir }}
      mountPath: {{ $v.mta.logMountPath }}
      {{- with $v.mta.logSubPath }}
      subPath: {{ . }}
      {{- end }}
      readOnly: true
    {{- end }}
    {{- end }}
    {{- with .mounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The sidecar's container spec (a list item for YOUR MTA pod's `containers:`).
It mounts the MTA's queue public/ directory and log directory READ-ONLY (connecting to the
showq UNIX socket works on a read-only mount). Those volumes must exist in the pod under the
names .Values.mta.queuePublicDir and .Values.mta.logDir, plus the volumes from
"mtaq-exporter.sidecarVolumes".
postdrop: public/ is drwx--s--- postfix:postdrop, so the POD's securityContext must list the
MTA image's postdrop gid in supplementalGroups (a pod-level field: a container cannot set it),
and the group that may read the log (adm) too.
*/}}
{{- define "mtaq-exporter.sidecarContainer" -}}
{{- $env := list }}
{{- with .Values.webhookToken.secretName }}
{{- $env = append $env (dict "name" "MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $.Values.webhookToken.secretKey))) }}
{{- end }}
{{- include "mtaq-exporter.agentContainer" (dict "root" . "name" .Values.containerName "args" .Values.extraArgs
      "env" (concat $env .Values.extraEnv) "resources" .Values.resources "mounts" .Values.extraVolumeMounts "mta" true) }}
{{- end }}
