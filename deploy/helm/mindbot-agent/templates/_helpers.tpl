{{/* Names and labels shared by the templates. */}}

{{- define "mindbot-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mindbot-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mindbot-agent.labels" -}}
{{ include "mindbot-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mindbot-agent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The worker's environment: settings from values, credentials from the Secret. */}}
{{- define "mindbot-agent.env" -}}
- name: MINDBOT_HTTP_ADDRESS
  value: "0.0.0.0:{{ .Values.service.port }}"
- name: MINDBOT_DATABASE_MIGRATE_ON_START
  value: "false"
- name: LIVEKIT_URL
  value: {{ .Values.livekit.url | quote }}
- name: MINDBOT_LIVEKIT_AGENT_NAME
  value: {{ .Values.livekit.agentName | quote }}
- name: MINDBOT_WORKER_MAX_JOBS
  value: {{ .Values.worker.maxJobs | quote }}
- name: MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS
  value: {{ .Values.worker.drainTimeoutSeconds | quote }}
- name: MINDBOT_API_ENABLED
  value: {{ .Values.api.enabled | quote }}
- name: MINDBOT_API_JWT_ALGORITHM
  value: {{ .Values.api.jwtAlgorithm | quote }}
- name: MINDBOT_API_JWT_ISSUER
  value: {{ .Values.api.jwtIssuer | quote }}
- name: MINDBOT_API_JWT_AUDIENCE
  value: {{ .Values.api.jwtAudience | quote }}
- name: MINDBOT_VOICE_ENABLED
  value: {{ .Values.voice.enabled | quote }}
- name: MINDBOT_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: MINDBOT_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range list "DATABASE_URL" "LIVEKIT_API_KEY" "LIVEKIT_API_SECRET" "MINDBOT_HTTP_METRICS_TOKEN" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.name }}
      key: {{ . }}
{{- end }}
{{- range .Values.secrets.optional }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.name }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end -}}

{{- define "mindbot-agent.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
