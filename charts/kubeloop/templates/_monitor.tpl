{{/*
The monitor's pod spec: include with (dict "ctx" $ "mode" "once") for the CronJob or
(dict "ctx" $ "mode" "interval") for the Deployment.
*/}}
{{- define "kubeloop.monitorPodSpec" -}}
{{- $m := .ctx.Values.monitor }}
{{- $mode := .mode }}
{{- with .ctx -}}
restartPolicy: {{ if eq $mode "once" }}Never{{ else }}Always{{ end }}
serviceAccountName: {{ include "kubeloop.monitorServiceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- include "kubeloop.podSecurityContext" . | nindent 2 }}
{{- with include "kubeloop.scheduling" . }}
{{ . }}
{{- end }}
containers:
  - name: monitor
    image: {{ include "kubeloop.image" (dict "ctx" . "image" .Values.images.components) }}
    imagePullPolicy: {{ .Values.images.components.pullPolicy }}
    command: ["kubeloop", "monitor"]
    args:
      {{- if eq $mode "once" }}
      - --once
      {{- else }}
      - --interval={{ $m.intervalSeconds }}
      - --metrics-port={{ $m.metricsPort }}
      {{- end }}
      - --model={{ .Values.model.name }}
      - --registry={{ .Values.storage.registryUri }}
      - --state-file=/var/lib/kubeloop/monitor-state.json
      - --psi-threshold={{ $m.psiThreshold }}
      - --drift-share={{ $m.driftShare }}
      - --cooldown={{ $m.cooldownSeconds }}
      - --daily-cap={{ $m.dailyCap }}
      {{- if eq $m.source "prometheus" }}
      - --prometheus-url={{ $m.prometheusUrl }}
      {{- else }}
      - --metrics-url={{ include "kubeloop.predictorMetricsUrl" . }}
      {{- end }}
      {{- if $m.retrain }}
      - --kfp-host={{ .Values.pipelines.host }}
      - --data={{ .Values.model.dataUri }}
      - --target={{ .Values.model.target }}
      {{- with include "kubeloop.deployArgs" . }}{{ . | trim | nindent 6 }}{{- end }}
      {{- with include "kubeloop.rolloutJudgeArgs" . }}{{ . | trim | nindent 6 }}{{- end }}
      {{- else }}
      - --dry-run
      {{- end }}
      {{- range $m.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    {{- if ne $mode "once" }}
    ports:
      - name: metrics
        containerPort: {{ $m.metricsPort }}
        protocol: TCP
    readinessProbe:
      tcpSocket:
        port: metrics
      periodSeconds: 10
    livenessProbe:
      tcpSocket:
        port: metrics
      initialDelaySeconds: 30
      periodSeconds: 30
    {{- end }}
    env:
      {{- include "kubeloop.runSubmitEnv" . | nindent 6 }}
      {{- include "kubeloop.s3Env" . | nindent 6 }}
    resources:
      {{- toYaml $m.resources | nindent 6 }}
    securityContext:
      {{- include "kubeloop.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      {{- include "kubeloop.tmpMount" . | nindent 6 }}
      - name: state
        mountPath: /var/lib/kubeloop
      {{- include "kubeloop.kfpTokenMount" . | nindent 6 }}
      {{- with include "kubeloop.s3Mount" . }}{{ . | trim | nindent 6 }}{{- end }}
volumes:
  {{- include "kubeloop.tmpVolume" . | nindent 2 }}
  - name: state
    persistentVolumeClaim:
      claimName: {{ include "kubeloop.fullname" . }}-monitor-state
  {{- include "kubeloop.kfpTokenVolume" . | nindent 2 }}
  {{- with include "kubeloop.s3Volume" . }}{{ . | trim | nindent 2 }}{{- end }}
{{- end }}
{{- end }}
