{{/* Names ------------------------------------------------------------------------------------------------------ */}}

{{- define "rfo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rfo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rfo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rfo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------------------------- */}}

{{- define "rfo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rfo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rfo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rfo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redis-functions-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image: registry/repository:tag, or registry/repository@digest when a digest is given -------------------------- */}}

{{- define "rfo.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* RBAC ------------------------------------------------------------------------------------------------------- */}}

{{/*
The rules the operator needs on namespaced resources, in every watched namespace (a Role each) or cluster-wide (the
ClusterRole when watchNamespaces is empty). Found empirically: the operator run with only these grants, its log read
for 403s (tests/e2e/test_chart.py runs it with the chart's ServiceAccount token). Why each one is there:
- redisfunctionlibraries list/watch: kopf's watch stream (an initial list, then watch); patch: kopf adds/removes the
  finalizer and keeps its bookkeeping in annotations. No get/create/update/delete: never used.
- redisfunctionlibraries/status patch: the operator writes status with a merge patch.
- secrets, configmaps get: target credentials and TLS material, and codeFrom; list/watch: kopf watches them so a
  Secret/ConfigMap that appears or changes wakes the libraries that reference it.
- events create: the operator's own events (Loaded, Updated, DriftRepaired, Deleted, warnings) and kopf's warnings.
*/}}
{{- define "rfo.namespacedRules" -}}
- apiGroups: [redisfunctions.dev]
  resources: [redisfunctionlibraries]
  verbs: [list, watch, patch]
- apiGroups: [redisfunctions.dev]
  resources: [redisfunctionlibraries/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
