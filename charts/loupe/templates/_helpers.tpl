{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "loupe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects; 52 characters leave room for suffixes like -secrets. */}}
{{- define "loupe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "loupe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that never change across upgrades: Deployment selector and Service selector. */}}
{{- define "loupe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loupe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The standard app.kubernetes.io labels of every object. */}}
{{- define "loupe.labels" -}}
{{ include "loupe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: loupe
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "loupe.chart" . }}
{{- end -}}

{{- define "loupe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loupe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "loupe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "loupe.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* Rules for Loupe's own resources, RayJobs, Jobs and Events: bound cluster-wide or per namespace. */}}
{{- define "loupe.namespacedRules" -}}
- apiGroups: ["loupe.dev"]
  resources: ["ingestsources", "datasets", "retrainpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["loupe.dev"]
  resources: ["ingestsources/status", "datasets/status", "retrainpolicies/status"]
  verbs: ["get", "patch"]
# RayJobs and Jobs are owned by their Dataset or RetrainPolicy with blockOwnerDeletion, which
# clusters with the OwnerReferencesPermissionEnforcement admission plugin allow only with this.
- apiGroups: ["loupe.dev"]
  resources: ["datasets/finalizers", "retrainpolicies/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# kuberay mode: one RayJob per run (Datasets may choose it whatever the default mode is).
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# RetrainPolicy actions: a batch/v1 Job per training run.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
{{- end -}}

{{/* Reading the Secrets that IngestSources and Datasets name (get only: no list, no watch). */}}
{{- define "loupe.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}

{{- define "loupe.peeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["{{ if include "loupe.clusterWide" . }}clusterkopfpeerings{{ else }}kopfpeerings{{ end }}"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}

{{- define "loupe.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail "replicaCount > 1 needs peering.enabled=true: two standalone kopf operators would both reconcile every object" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (and .Values.metrics.enabled .Values.metrics.service.enabled)) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled=true and metrics.service.enabled=true" -}}
{{- end -}}
{{- if and .Values.rbac.secretNamespaces .Values.watchNamespaces -}}
{{- fail "rbac.secretNamespaces is for cluster-wide installs; a namespaced install reads Secrets in watchNamespaces only" -}}
{{- end -}}
{{- end -}}

{{/* kuberay-mode defaults; names and formats follow operator/loupe_operator/settings.py (JSON for
objects), and a test checks that the operator knows every LOUPE_ variable the chart sets. */}}
{{- define "loupe.kuberayEnv" -}}
{{- $k := .Values.ray.kuberay -}}
- name: LOUPE_RAY_VERSION
  value: {{ $k.rayVersion | quote }}
- name: LOUPE_WORKERS
  value: {{ $k.workers | quote }}
- name: LOUPE_HEAD_RESOURCES
  value: {{ $k.head | toJson | quote }}
- name: LOUPE_WORKER_RESOURCES
  value: {{ $k.worker | toJson | quote }}
- name: LOUPE_CLUSTER_SELECTOR
  value: {{ $k.clusterSelector | toJson | quote }}
- name: LOUPE_JOB_TTL_SECONDS
  value: {{ $k.jobTtlSeconds | quote }}
{{- with $k.serviceAccountName }}
- name: LOUPE_RAY_SERVICE_ACCOUNT
  value: {{ . | quote }}
{{- end }}
- name: LOUPE_SUBMIT_PASSES_CREDENTIALS
  value: {{ .Values.ray.submitPassesCredentials | quote }}
{{- end -}}
