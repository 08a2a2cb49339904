{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "kubeloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: "<release>-<chart>", or the release name when it already contains the
chart name. Truncated to 45 characters so that suffixes ("-monitor", "-predictor") still fit.
*/}}
{{- define "kubeloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubeloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "kubeloop.labels" -}}
helm.sh/chart: {{ include "kubeloop.chart" . }}
{{ include "kubeloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeloop
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kubeloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component: include with (dict "ctx" $ "component" "monitor").
*/}}
{{- define "kubeloop.componentLabels" -}}
{{ include "kubeloop.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kubeloop.componentSelectorLabels" -}}
{{ include "kubeloop.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The InferenceService name (default: the model name).
*/}}
{{- define "kubeloop.isvcName" -}}
{{- default .Values.model.name .Values.inferenceService.name }}
{{- end }}

{{/*
In-cluster URL of the predictor's metrics (Standard mode Service "<isvc>-predictor", port 80).
*/}}
{{- define "kubeloop.predictorMetricsUrl" -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local/metrics" (include "kubeloop.isvcName" .) .Release.Namespace }}
{{- end }}

{{/*
ServiceAccount names.
*/}}
{{- define "kubeloop.serviceAccountName" -}}
{{- $sa := index .ctx.Values .key "serviceAccount" }}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "kubeloop.fullname" .ctx) .suffix) $sa.name }}
{{- else }}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .key .key) $sa.name }}
{{- end }}
{{- end }}

{{- define "kubeloop.predictorServiceAccountName" -}}
{{- include "kubeloop.serviceAccountName" (dict "ctx" . "key" "inferenceService" "suffix" "predictor") }}
{{- end }}

{{- define "kubeloop.monitorServiceAccountName" -}}
{{- include "kubeloop.serviceAccountName" (dict "ctx" . "key" "monitor" "suffix" "monitor") }}
{{- end }}

{{- define "kubeloop.pipelinesServiceAccountName" -}}
{{- include "kubeloop.serviceAccountName" (dict "ctx" . "key" "pipelines" "suffix" "pipelines") }}
{{- end }}

{{/*
Image reference: repository:tag, or repository@digest when a digest is set (immutable).
*/}}
{{- define "kubeloop.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Pod security context: Pod Security Standards "restricted".
*/}}
{{- define "kubeloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context: "restricted" plus a read-only root filesystem.
*/}}
{{- define "kubeloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Scheduling constraints shared by every pod.
*/}}
{{- define "kubeloop.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A short-lived ServiceAccount token for the KFP API (audience pipelines.kubeflow.org), where
kfp.Client looks for it (KF_PIPELINES_SA_TOKEN_PATH). KFP multi-user mode authorizes the
caller with it; no pod of the chart gets a Kubernetes API token (automount is off).
*/}}
{{- define "kubeloop.kfpTokenVolume" -}}
- name: kfp-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          audience: pipelines.kubeflow.org
          expirationSeconds: 7200
{{- end }}

{{- define "kubeloop.kfpTokenMount" -}}
- name: kfp-token
  mountPath: /var/run/secrets/kubeflow/pipelines
  readOnly: true
{{- end }}

{{/*
S3 access for the registry: endpoint and the shared-credentials file (never env secrets).
*/}}
{{- define "kubeloop.s3Env" -}}
- name: KUBELOOP_REGISTRY
  value: {{ .Values.storage.registryUri | quote }}
{{- with .Values.storage.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.storage.s3.credentialsSecret }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: /var/run/secrets/kubeloop/s3/credentials
{{- end }}
{{- end }}

{{/*
Environment of everything that submits pipeline runs (the schedule Job, the monitor): the
image the steps run in, and the credentials Secret the package compiled at submission mounts
into every step (`kubeloop.pipelines.launch.cluster`; it must also exist in the runs' namespace).
The submitters set AWS_ENDPOINT_URL (storage.s3.endpoint) too: the steps get it the same way.
*/}}
{{- define "kubeloop.runSubmitEnv" -}}
- name: KUBELOOP_IMAGE
  value: {{ include "kubeloop.image" (dict "ctx" . "image" .Values.images.components) | quote }}
{{- with .Values.storage.s3.credentialsSecret }}
- name: KUBELOOP_S3_CREDENTIALS_SECRET
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
In-cluster URL of the chart's MLflow tracking server.
*/}}
{{- define "kubeloop.mlflowUri" -}}
{{- printf "http://%s-mlflow.%s.svc.cluster.local:%v" (include "kubeloop.fullname" .) .Release.Namespace .Values.mlflow.port }}
{{- end }}

{{/*
"true" when rollout.mode is canary or shadow (a staged rollout), "" for direct. In a staged
rollout the predictor follows the registry pointer (`kubeloop serve --registry`) and the runs
register the gate's winner as the registry's candidate: nothing patches the InferenceService.
*/}}
{{- define "kubeloop.stagedRollout" -}}
{{- if ne .Values.rollout.mode "direct" }}true{{ end }}
{{- end }}

{{/*
A staged rollout is only ever ended by the monitor: refuse values that would leave a candidate
out forever, or judge it without the servers' statistics (rendered by templates/validate.yaml).
*/}}
{{- define "kubeloop.validateRollout" -}}
{{- if include "kubeloop.stagedRollout" . }}
{{- $mode := .Values.rollout.mode }}
{{- if not .Values.monitor.enabled }}
{{- fail (printf "rollout.mode=%s needs monitor.enabled=true: the monitor is what promotes or rolls back the candidate" $mode) }}
{{- end }}
{{- if not .Values.monitor.retrain }}
{{- fail (printf "rollout.mode=%s needs monitor.retrain=true: with monitor.retrain=false the monitor runs --dry-run and never ends a rollout" $mode) }}
{{- end }}
{{- if and (eq .Values.monitor.source "metrics") (gt (int .Values.inferenceService.maxReplicas) 1) }}
{{- fail (printf "rollout.mode=%s with up to %v predictor replicas needs monitor.source=prometheus: /metrics through the Service reads one replica per run, Prometheus sums the rollout's statistics over all of them (or set inferenceService.maxReplicas=1)" $mode .Values.inferenceService.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pipeline-run arguments shared by the schedule Job and the monitor's retraining runs: how the
gate's winner goes live and MLflow. Direct: the InferenceService the deploy step patches on
promotion (and Knative's canary). Staged: `--rollout` (and the canary's share); no deploy
target, the predictor follows the registry.
*/}}
{{- define "kubeloop.deployArgs" -}}
{{- if include "kubeloop.stagedRollout" . }}
- --rollout={{ .Values.rollout.mode }}
{{- if eq .Values.rollout.mode "canary" }}
- --canary-percent={{ int64 .Values.rollout.canaryPercent }}
{{- end }}
{{- else if .Values.inferenceService.enabled }}
- --inference-service={{ include "kubeloop.isvcName" . }}
- --namespace={{ .Release.Namespace }}
{{- if and (eq .Values.inferenceService.deploymentMode "Knative") (not (kindIs "invalid" .Values.inferenceService.canaryTrafficPercent)) }}
- --canary-percent={{ .Values.inferenceService.canaryTrafficPercent }}
{{- end }}
{{- end }}
{{- if .Values.mlflow.enabled }}
- --mlflow-uri={{ include "kubeloop.mlflowUri" . }}
{{- end }}
{{- end }}

{{/*
The monitor's sequential test of a staged rollout (unset values keep the monitor's defaults).
*/}}
{{- define "kubeloop.rolloutJudgeArgs" -}}
{{- if include "kubeloop.stagedRollout" . }}
- --rollout-alpha={{ .Values.rollout.alpha }}
{{- with .Values.rollout.minRequests }}
- --rollout-min-requests={{ int64 . }}
{{- end }}
{{- with .Values.rollout.maxDurationSeconds }}
- --rollout-max-duration={{ int64 . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubeloop.s3Volume" -}}
{{- if .Values.storage.s3.credentialsSecret }}
- name: s3-credentials
  secret:
    secretName: {{ .Values.storage.s3.credentialsSecret }}
    defaultMode: 0440
    items:
      - key: credentials
        path: credentials
{{- end }}
{{- end }}

{{- define "kubeloop.s3Mount" -}}
{{- if .Values.storage.s3.credentialsSecret }}
- name: s3-credentials
  mountPath: /var/run/secrets/kubeloop/s3
  readOnly: true
{{- end }}
{{- end }}

{{/*
Writable scratch space (the root filesystem is read-only).
*/}}
{{- define "kubeloop.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "kubeloop.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
NetworkPolicy egress rules shared by the policies.
*/}}
{{- define "kubeloop.egressDns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}

{{- define "kubeloop.egressKfp" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.pipelines.namespace }}
      podSelector:
        matchLabels:
          app: ml-pipeline
  ports:
    - protocol: TCP
      port: 8888
{{- end }}

{{- define "kubeloop.egressS3" -}}
- ports:
    {{- range .Values.networkPolicy.s3Egress.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.s3Egress.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
