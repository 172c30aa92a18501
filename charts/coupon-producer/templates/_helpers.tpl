{{/* Chart name, at most 63 characters. */}}
{{- define "coupon-producer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. A release named after the chart is not
repeated ("coupon-producer", not "coupon-producer-coupon-producer").
*/}}
{{- define "coupon-producer.fullname" -}}
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

{{/*
Name of one job's CronJob. CronJob names may not exceed 52 characters
(the controller appends an 11-character suffix to name each Job). The name
is refused rather than cut, since two cut names could collide.
Call with (dict "root" $ "key" $key).
*/}}
{{- define "coupon-producer.cronJobName" -}}
{{- $name := printf "%s-%s" (include "coupon-producer.fullname" .root) .key }}
{{- if gt (len $name) 52 }}
{{- fail (printf "CronJob name %q is %d characters, Kubernetes allows 52: shorten the release name, fullnameOverride or the jobs key %q" $name (len $name) .key) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "coupon-producer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the release's objects; they never change on upgrade. */}}
{{- define "coupon-producer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coupon-producer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of an object: commonLabels, then the object's own label values in
the order given (later wins), then the labels that identify the release,
which no value can override. One map, so no key is rendered twice.
Call with (dict "root" $ "extra" (list $labelsA $labelsB ...)).
*/}}
{{- define "coupon-producer.labelsWith" -}}
{{- $root := .root }}
{{- $l := dict "app.kubernetes.io/part-of" "coupon-pipeline" }}
{{- range (prepend (.extra | default list) $root.Values.commonLabels) }}
{{- $l = mergeOverwrite $l (. | default dict) }}
{{- end }}
{{- $_ := set $l "helm.sh/chart" (include "coupon-producer.chart" $root) }}
{{- $_ := set $l "app.kubernetes.io/name" (include "coupon-producer.name" $root) }}
{{- $_ := set $l "app.kubernetes.io/instance" $root.Release.Name }}
{{- $_ := set $l "app.kubernetes.io/version" (include "coupon-producer.tag" $root | trunc 63 | trimSuffix "-") }}
{{- $_ := set $l "app.kubernetes.io/managed-by" $root.Release.Service }}
{{- toYaml $l }}
{{- end }}

{{/* Labels of an object that sets none of its own. */}}
{{- define "coupon-producer.labels" -}}
{{- include "coupon-producer.labelsWith" (dict "root" . "extra" list) }}
{{- end }}

{{/*
Annotations of an object: commonAnnotations, then the object's own
annotation values in the order given (later wins); empty when there are
none. Call with (dict "root" $ "extra" (list $annotationsA ...)).
*/}}
{{- define "coupon-producer.annotations" -}}
{{- $a := dict }}
{{- range (prepend (.extra | default list) .root.Values.commonAnnotations) }}
{{- $a = mergeOverwrite $a (. | default dict) }}
{{- end }}
{{- with $a }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "coupon-producer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coupon-producer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image tag: image.tag, a number taken as written (--set image.tag=2), or the appVersion. */}}
{{- define "coupon-producer.tag" -}}
{{- if kindIs "invalid" .Values.image.tag }}
{{- .Chart.AppVersion }}
{{- else }}
{{- toString .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/*
The image repository, with global.imageRegistry (a mirror) in place of the
registry it names. As for Docker, the first path element is a registry
when it holds a "." or ":" or is "localhost"; a repository without one gets
the mirror as a prefix.
*/}}
{{- define "coupon-producer.repository" -}}
{{- $repo := .Values.image.repository }}
{{- $mirror := (.Values.global | default dict).imageRegistry }}
{{- if $mirror }}
{{- $parts := splitn "/" 2 $repo }}
{{- $first := $parts._0 }}
{{- if and $parts._1 (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $repo = $parts._1 }}
{{- end }}
{{- printf "%s/%s" (trimSuffix "/" $mirror) $repo }}
{{- else }}
{{- $repo }}
{{- end }}
{{- end }}

{{/* The image reference: a digest wins over the tag. */}}
{{- define "coupon-producer.image" -}}
{{- $ref := printf "%s:%s" (include "coupon-producer.repository" .) (include "coupon-producer.tag" .) }}
{{- with .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref . }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
imagePullSecrets: global.imagePullSecrets, then image.pullSecrets, each a
Secret name or a {name: ...} as in a pod spec; a name given twice is
rendered once.
*/}}
{{- define "coupon-producer.imagePullSecrets" -}}
{{- $names := list }}
{{- range (concat ((.Values.global | default dict).imagePullSecrets | default list) (.Values.image.pullSecrets | default list)) }}
{{- $name := . }}
{{- if kindIs "map" . }}{{ $name = .name }}{{ end }}
{{- $names = append $names $name }}
{{- end }}
{{- with ($names | uniq) }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "coupon-producer.claimName" -}}
{{- .Values.data.existingClaim | default (printf "%s-data" (include "coupon-producer.fullname" .)) }}
{{- end }}

{{/*
Seconds between SIGTERM and SIGKILL. The producer needs shutdownTimeoutSeconds
to flush what is in flight, plus time to log its summary and exit; a grace
period at or below it would kill the flush.
*/}}
{{- define "coupon-producer.terminationGracePeriodSeconds" -}}
{{- $shutdown := int .Values.producer.shutdownTimeoutSeconds }}
{{- if ne .Values.pod.terminationGracePeriodSeconds nil }}
{{- $grace := int .Values.pod.terminationGracePeriodSeconds }}
{{- if le $grace $shutdown }}
{{- fail (printf "pod.terminationGracePeriodSeconds %d must be greater than producer.shutdownTimeoutSeconds %d: the producer flushes for that long after SIGTERM" $grace $shutdown) }}
{{- end }}
{{- $grace }}
{{- else }}
{{- add $shutdown 20 }}
{{- end }}
{{- end }}

{{/*
Fixed paths inside the container. They are part of the contract with the
image (read-only root, data at /data), so they are not values.
*/}}
{{- define "coupon-producer.configDir" -}}/etc/coupon-producer{{- end }}
{{- define "coupon-producer.dataDir" -}}/data{{- end }}

{{/* The producer's config file: keys are its long flag names. */}}
{{- define "coupon-producer.configFile" -}}
{{- $p := .Values.producer }}
{{- $k := .Values.kafka -}}
{{- $dir := include "coupon-producer.configDir" . -}}
{{- $c := dict
  "brokers" $k.brokers
  "partitions" $p.partitions
  "replication-factor" $p.replicationFactor
  "compression" $p.compression
  "linger" $p.linger
  "batch-max-bytes" $p.batchMaxBytes
  "max-buffered-bytes" $p.maxBufferedBytes
  "client-id" $p.clientId
  "connect-timeout" $p.connectTimeout
  "delivery-timeout" $p.deliveryTimeout
  "shutdown-timeout" (printf "%ds" (int $p.shutdownTimeoutSeconds))
  "progress-interval" $p.progressInterval
  "log-format" $p.logFormat
  "log-level" $p.logLevel
}}
{{- with $p.topicConfig }}
{{- $_ := set $c "topic-config" . }}
{{- end }}
{{- if $k.tls.enabled }}
{{- $_ := set $c "tls" true }}
{{- if and $k.tls.existingSecret $k.tls.caKey }}
{{- $_ := set $c "tls-ca-file" (printf "%s/tls/ca.crt" $dir) }}
{{- end }}
{{- if and $k.tls.existingSecret $k.tls.certKey }}
{{- $_ := set $c "tls-cert-file" (printf "%s/tls/tls.crt" $dir) }}
{{- $_ := set $c "tls-key-file" (printf "%s/tls/tls.key" $dir) }}
{{- end }}
{{- with $k.tls.serverName }}
{{- $_ := set $c "tls-server-name" . }}
{{- end }}
{{- if $k.tls.insecureSkipVerify }}
{{- $_ := set $c "tls-insecure-skip-verify" true }}
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
{{- $_ := set $c "sasl-mechanism" $k.sasl.mechanism }}
{{- $_ := set $c "sasl-username" $k.sasl.username }}
{{- $_ := set $c "sasl-password-file" (printf "%s/sasl/password" $dir) }}
{{- end }}
{{- with .Values.metrics.pushgatewayUrl }}
{{- $_ := set $c "pushgateway-url" . }}
{{- end }}
{{- range $key, $value := $p.extraConfig }}
{{- if hasKey $c $key }}
{{- fail (printf "producer.extraConfig.%s is set by the chart from another value; set that value instead" $key) }}
{{- end }}
{{- if or (eq $key "file") (eq $key "topic") (eq $key "sasl-password") }}
{{- fail (printf "producer.extraConfig.%s is not allowed: the file and topic are set per job, the SASL password only from kafka.sasl.existingSecret" $key) }}
{{- end }}
{{- $_ := set $c $key $value }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Checks of values that the schema cannot express. */}}
{{- define "coupon-producer.validate" -}}
{{- $k := .Values.kafka -}}
{{- if and $k.sasl.mechanism (not $k.sasl.existingSecret) }}
{{- fail "kafka.sasl.mechanism is set but kafka.sasl.existingSecret is empty: the password comes only from a Secret" }}
{{- end }}
{{- if and $k.sasl.mechanism (not $k.sasl.username) }}
{{- fail "kafka.sasl.mechanism is set but kafka.sasl.username is empty" }}
{{- end }}
{{- if ne (empty $k.tls.certKey) (empty $k.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: set both for a client certificate, or neither" }}
{{- end }}
{{- if and $k.tls.certKey (not $k.tls.existingSecret) }}
{{- fail "kafka.tls.certKey needs kafka.tls.existingSecret" }}
{{- end }}
{{- if and $k.tls.existingSecret (not $k.tls.enabled) }}
{{- fail "kafka.tls.existingSecret is set but kafka.tls.enabled is false" }}
{{- end }}
{{- $enabled := 0 }}
{{- range $key, $job := .Values.jobs }}
{{- if and $job (or (not (hasKey $job "enabled")) $job.enabled) }}
{{- $enabled = add1 $enabled }}
{{- end }}
{{- end }}
{{- if eq $enabled 0 }}
{{- fail "jobs: no job is enabled; the chart would deploy nothing that runs" }}
{{- end }}
{{- end }}

{{/*
Environment of the producer container, shared by the CronJobs and the test
hook. Call with (dict "root" $ "job" $job).
*/}}
{{- define "coupon-producer.env" -}}
{{- $job := .job -}}
- name: COUPON_PRODUCER_CONFIG
  value: {{ printf "%s/config.yaml" (include "coupon-producer.configDir" .root) | quote }}
- name: COUPON_FILE
  value: {{ printf "%s/%s" (include "coupon-producer.dataDir" .root) $job.file | quote }}
{{- with $job.topic }}
- name: KAFKA_TOPIC
  value: {{ . | quote }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: JOB_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['batch.kubernetes.io/job-name']
{{- with .root.Values.pod.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with $job.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of the producer container: the chart's are read-only; then pod.extraVolumeMounts. */}}
{{- define "coupon-producer.volumeMounts" -}}
{{- $dir := include "coupon-producer.configDir" . -}}
- name: config
  mountPath: {{ printf "%s/config.yaml" $dir }}
  subPath: config.yaml
  readOnly: true
- name: data
  mountPath: {{ include "coupon-producer.dataDir" . }}
  {{- with .Values.data.subPath }}
  subPath: {{ . }}
  {{- end }}
  readOnly: true
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ printf "%s/tls" $dir }}
  readOnly: true
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: kafka-sasl
  mountPath: {{ printf "%s/sasl" $dir }}
  readOnly: true
{{- end }}
{{- with .Values.pod.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes of the pod: the ConfigMap, the data claim, the Kafka Secrets, then pod.extraVolumes. */}}
{{- define "coupon-producer.volumes" -}}
{{- $k := .Values.kafka -}}
- name: config
  configMap:
    name: {{ include "coupon-producer.fullname" . }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "coupon-producer.claimName" . }}
    readOnly: true
{{- if and $k.tls.enabled $k.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $k.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- if $k.tls.caKey }}
      - key: {{ $k.tls.caKey }}
        path: ca.crt
      {{- end }}
      {{- if $k.tls.certKey }}
      - key: {{ $k.tls.certKey }}
        path: tls.crt
      - key: {{ $k.tls.keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
- name: kafka-sasl
  secret:
    secretName: {{ $k.sasl.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.passwordKey }}
        path: password
{{- end }}
{{- with .Values.pod.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the CronJobs and the test hook. */}}
{{- define "coupon-producer.podSpecCommon" -}}
serviceAccountName: {{ include "coupon-producer.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- include "coupon-producer.imagePullSecrets" . }}
{{- with .Values.pod.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.initContainers }}
initContainers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
