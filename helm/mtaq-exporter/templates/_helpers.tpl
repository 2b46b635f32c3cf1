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

{{/* Labels of the pods running the agent: .Values.podSelector, else the demo Deployment's. */}}
{{- define "mtaq-exporter.podSelector" -}}
{{- if .Values.podSelector }}
{{- toYaml .Values.podSelector }}
{{- else if .Values.deployment.enabled }}
{{- include "mtaq-exporter.selectorLabels" . }}
{{- else }}
{{- fail "mtaq-exporter: set podSelector to the labels of the MTA pods running the sidecar (or deployment.enabled=true)" }}
{{- end }}
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
checksum/mtaq-config: {{ toYaml .Values.config | sha256sum }}
{{- end }}

{{/* The pod volume holding the agent's configuration file (a list item). */}}
{{- define "mtaq-exporter.sidecarVolumes" -}}
- name: mtaq-config
  configMap:
    name: {{ include "mtaq-exporter.fullname" . }}
{{- end }}

{{/*
The agent's container spec (a list item for a pod's `containers:`).
It mounts the MTA's queue public/ directory and log directory READ-ONLY (connecting to the
showq UNIX socket works on a read-only mount). Those volumes must exist in the pod under the
names .Values.mta.queuePublicDir and .Values.mta.logDir, plus the config volume from
"mtaq-exporter.sidecarVolumes".
postdrop: public/ is drwx--x--- postfix:postdrop, so the POD's securityContext must list the
MTA image's postdrop gid in supplementalGroups (a pod-level field: a container cannot set it).
*/}}
{{- define "mtaq-exporter.sidecarContainer" -}}
- name: {{ .Values.containerName }}
  image: {{ include "mtaq-exporter.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - --config.file=/etc/mtaq/mtaq.yml
    - --web.listen-address=:{{ .Values.containerPort }}
    {{- range .Values.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: metrics
      containerPort: {{ .Values.containerPort }}
      protocol: TCP
  {{- if .Values.livenessProbe.enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    initialDelaySeconds: {{ .Values.livenessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
  {{- end }}
  {{- if .Values.readinessProbe.enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    initialDelaySeconds: {{ .Values.readinessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mtaq-config
      mountPath: /etc/mtaq
      readOnly: true
    - name: {{ required "mta.queuePublicDir: name of the MTA's queue volume" .Values.mta.queuePublicDir }}
      mountPath: {{ .Values.mta.queuePublicMountPath }}
      {{- with .Values.mta.queuePublicSubPath }}
      subPath: {{ . }}
      {{- end }}
      readOnly: true
    {{- if .Values.mta.logDir }}
    - name: {{ .Values.mta.logDir }}
      mountPath: {{ .Values.mta.logMountPath }}
      {{- with .Values.mta.logSubPath }}
      subPath: {{ . }}
      {{- end }}
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
