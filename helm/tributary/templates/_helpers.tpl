{{/*
Names, labels and the pieces every role's pod shares.
*/}}

{{- define "tributary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tributary.fullname" -}}
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

{{/* "<fullname>-<suffix>", kept under 63 characters. */}}
{{- define "tributary.component" -}}
{{- printf "%s-%s" (include "tributary.fullname" .root | trunc 50 | trimSuffix "-") .name }}
{{- end }}

{{- define "tributary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tributary.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "tributary.labels" -}}
helm.sh/chart: {{ include "tributary.chart" .root }}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/part-of: tributary
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to no one role. */}}
{{- define "tributary.commonLabels" -}}
{{ include "tributary.labels" (dict "root" . "role" "platform") }}
{{- end }}

{{- define "tributary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tributary.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tributary.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "tributary.jwtSecretName" -}}
{{- .Values.jwt.existingSecret | default (include "tributary.component" (dict "root" . "name" "jwt")) }}
{{- end }}

{{- define "tributary.mqttTlsSecretName" -}}
{{- if .Values.ingest.tls.existingSecret }}
{{- .Values.ingest.tls.existingSecret }}
{{- else }}
{{- include "tributary.component" (dict "root" . "name" "mqtt-tls") }}
{{- end }}
{{- end }}

{{/* kafka://b1:9092,b2:9092 */}}
{{- define "tributary.logUrl" -}}
{{- printf "kafka://%s" (join "," .Values.kafka.brokers) }}
{{- end }}

{{/* The store URL from scylla.url, with the chart's retention appended when
the URL names none (Scylla's TTL and ingest's age limit must agree). */}}
{{- define "tributary.scyllaUrl" -}}
{{- $url := .Values.scylla.url }}
{{- $ret := toString .Values.retention }}
{{- if eq $ret "0" }}{{ $ret = "none" }}{{ end }}
{{- if regexMatch "[?&]retention=" $url }}
{{- $url }}
{{- else }}
{{- printf "%s%sretention=%s" $url (ternary "&" "?" (contains "?" $url)) $ret }}
{{- end }}
{{- end }}

{{/* The TRIBUTARY_STORE variable: a value, or a key of the user's Secret. */}}
{{- define "tributary.storeEnv" -}}
- name: TRIBUTARY_STORE
{{- if .Values.scylla.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.scylla.existingSecret }}
      key: {{ .Values.scylla.existingSecretKey }}
{{- else }}
  value: {{ include "tributary.scyllaUrl" . | quote }}
{{- end }}
{{- end }}

{{- define "tributary.kafkaOptionsEnv" -}}
{{- if .Values.kafka.optionsSecret.name }}
- name: TRIBUTARY_KAFKA_OPTIONS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.optionsSecret.name }}
      key: {{ .Values.kafka.optionsSecret.key }}
{{- end }}
{{- end }}

{{- define "tributary.registryUrl" -}}
{{- printf "http://%s:%d" (include "tributary.component" (dict "root" . "name" "registry")) (int .Values.registry.grpcPort) }}
{{- end }}

{{/*
Pod annotations: a checksum of the configuration, so that a changed
ConfigMap rolls the pods, plus the user's.
*/}}
{{- define "tributary.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Scheduling of one role: its own affinity, or anti-affinity between its
replicas; its own spread constraints, or the chart's zone and node spread.
*/}}
{{- define "tributary.scheduling" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $selector := include "tributary.selectorLabels" . | fromYaml }}
{{- with ($v.nodeSelector | default $root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (concat $root.Values.tolerations $v.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
{{- if $v.affinity }}
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
  {{- if eq $root.Values.podAntiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
  {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
  {{- end }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else if $root.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range $root.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- toYaml $selector | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod-level settings every role shares. */}}
{{- define "tributary.podCommon" -}}
serviceAccountName: {{ include "tributary.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{ include "tributary.scheduling" . | trim }}
{{- end }}

{{/* The container-level settings every role shares. */}}
{{- define "tributary.containerCommon" -}}
image: {{ include "tributary.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "tributary.component" (dict "root" .root "name" "common") }}
{{- if ne .role "registry" }}
  - configMapRef:
      name: {{ include "tributary.component" (dict "root" .root "name" "limits") }}
{{- end }}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .root.Values.probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .root.Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .root.Values.probes.readiness | nindent 2 }}
{{- if .values.preStopSleepSeconds }}
lifecycle:
  preStop:
    exec:
      # The image's busybox; Services drop the pod's endpoint meanwhile.
      command: ["busybox", "sleep", "{{ .values.preStopSleepSeconds }}"]
{{- end }}
{{- end }}

{{/* Volume mounts every role has: /tmp and the JWT secret. */}}
{{- define "tributary.commonMounts" -}}
- name: tmp
  mountPath: /tmp
- name: jwt
  mountPath: /etc/tributary/jwt
  readOnly: true
{{- end }}

{{- define "tributary.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: jwt
  secret:
    secretName: {{ include "tributary.jwtSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.jwt.existingSecretKey }}
        path: jwt.secret
{{- end }}

{{/* A PodDisruptionBudget for one role. */}}
{{- define "tributary.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tributary.component" (dict "root" .root "name" .role) }}
  labels:
    {{- include "tributary.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .values.pdb.minAvailable) }}
  minAvailable: {{ .values.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .values.pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "tributary.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* A CPU HorizontalPodAutoscaler for one role. */}}
{{- define "tributary.cpuHpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tributary.component" (dict "root" .root "name" .role) }}
  labels:
    {{- include "tributary.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tributary.component" (dict "root" .root "name" .role) }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
