{{/*
Chart name, truncated to 63 characters (Kubernetes name limit).
*/}}
{{- define "mailwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release-chart unless the release name already contains the chart name.
*/}}
{{- define "mailwatch.fullname" -}}
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

{{- define "mailwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mailwatch.labels" -}}
helm.sh/chart: {{ include "mailwatch.chart" . }}
{{ include "mailwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailwatch
{{- end }}

{{- define "mailwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mailwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mailwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mailwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Secret holding the secret settings: the user's existingSecret or the chart's own.
*/}}
{{- define "mailwatch.secretName" -}}
{{- default (include "mailwatch.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
env entries for the secret settings, read from the Secret by key.
The operator token is optional: an existing Secret may leave it out.
*/}}
{{- define "mailwatch.secretEnv" -}}
- name: MAILWATCH_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mailwatch.secretName" . }}
      key: {{ .Values.existingSecretKeys.databaseUrl }}
- name: MAILWATCH_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "mailwatch.secretName" . }}
      key: {{ .Values.existingSecretKeys.secretKeys }}
- name: MAILWATCH_OPERATOR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mailwatch.secretName" . }}
      key: {{ .Values.existingSecretKeys.operatorToken }}
      optional: true
{{- end }}

{{/*
terminationGracePeriodSeconds: the drain time plus time for the workers to finish.
*/}}
{{- define "mailwatch.terminationGracePeriodSeconds" -}}
{{- add (.Values.config.graceSeconds | int) (.Values.terminationGraceExtraSeconds | int) }}
{{- end }}
