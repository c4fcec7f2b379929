{{/* Names and labels. */}}
{{- define "mention-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mention-router.fullname" -}}
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

{{- define "mention-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mention-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mention-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mention-router.labels" -}}
helm.sh/chart: {{ include "mention-router.chart" . }}
{{ include "mention-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mention-router
{{- end }}

{{/* The labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "mention-router.componentLabels" -}}
{{ include "mention-router.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mention-router.componentSelector" -}}
{{ include "mention-router.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mention-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mention-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mention-router.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mention-router.secretName" -}}
{{- default (printf "%s-secrets" (include "mention-router.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "mention-router.configName" -}}
{{- printf "%s-config" (include "mention-router.fullname" .) }}
{{- end }}

{{/* Topic settings as the services read them (MR_TOPIC_*), shared by the services and the topic Job. */}}
{{- define "mention-router.topicEnv" -}}
- name: MR_TOPIC_PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: MR_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
{{- if not (kindIs "invalid" .Values.topics.retentionMs) }}
- name: MR_TOPIC_RETENTION_MS
  value: {{ .Values.topics.retentionMs | int64 | quote }}
{{- end }}
- name: MR_TOPIC_OVERRIDES
  value: {{ .Values.topics.overrides | toJson | quote }}
{{- end }}

{{/* Environment of every container: connection settings, secrets, extra variables. */}}
{{- define "mention-router.env" -}}
- name: MR_BUS
  value: kafka
- name: MR_KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
- name: MR_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
{{ include "mention-router.topicEnv" . }}
- name: MR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mention-router.secretName" . }}
      key: {{ .Values.secrets.databaseUrlKey }}
{{- range $name, $key := .Values.secrets.env }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mention-router.secretName" $ }}
      key: {{ $key }}
{{- end }}
- name: MR_DATABASE_POOL_SIZE
  value: {{ .Values.database.poolSize | quote }}
- name: MR_TAXONOMY_FILE
  value: /etc/mention-router/taxonomy.yaml
- name: MR_ROUTING_FILE
  value: /etc/mention-router/routing.yaml
- name: MR_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: MR_LOG_JSON
  value: "true"
- name: MR_API_HOST
  value: "0.0.0.0"
- name: MR_API_PORT
  value: {{ .Values.api.service.port | quote }}
- name: MR_METRICS_HOST
  value: "0.0.0.0"
- name: MR_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by Deployments and Jobs. */}}
{{- define "mention-router.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Kafka security: the user one container logs in as, (dict "root" $ "who" "router"); "admin" for the
     jobs. Nothing with PLAINTEXT. The password and the CA are files from Secrets (kafkaVolumes). */}}
{{- define "mention-router.kafkaUser" -}}
{{- $sec := .root.Values.kafka.security }}
{{- if eq .who "admin" }}
{{- toYaml $sec.admin }}
{{- else }}
{{- toYaml (index $sec.users .who) }}
{{- end }}
{{- end }}

{{- define "mention-router.kafkaEnv" -}}
{{- $sec := .root.Values.kafka.security }}
{{- if ne $sec.protocol "PLAINTEXT" }}
{{- $user := include "mention-router.kafkaUser" . | fromYaml }}
- name: MR_KAFKA_SECURITY_PROTOCOL
  value: {{ $sec.protocol | quote }}
- name: MR_KAFKA_SASL_MECHANISM
  value: {{ $sec.saslMechanism | quote }}
- name: MR_KAFKA_SASL_USERNAME
  value: {{ required (printf "kafka.security: the Kafka user of %s" .who) $user.username | quote }}
- name: MR_KAFKA_SASL_PASSWORD_FILE
  value: /run/secrets/kafka-user/password
{{- if $sec.caSecret.name }}
- name: MR_KAFKA_SSL_CAFILE
  value: /run/secrets/kafka-ca/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{- define "mention-router.kafkaMounts" -}}
{{- $sec := .Values.kafka.security }}
{{- if ne $sec.protocol "PLAINTEXT" }}
- name: kafka-user
  mountPath: /run/secrets/kafka-user
  readOnly: true
{{- if $sec.caSecret.name }}
- name: kafka-ca
  mountPath: /run/secrets/kafka-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "mention-router.kafkaVolumes" -}}
{{- $sec := .root.Values.kafka.security }}
{{- if ne $sec.protocol "PLAINTEXT" }}
{{- $user := include "mention-router.kafkaUser" . | fromYaml }}
- name: kafka-user
  secret:
    secretName: {{ required (printf "kafka.security: the Secret with the password of %s" .who) $user.passwordSecret }}
    items:
      - key: {{ $user.passwordKey }}
        path: password
{{- if $sec.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $sec.caSecret.name }}
    items:
      - key: {{ $sec.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- end }}
