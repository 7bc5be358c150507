{{/*
The chart's name, or nameOverride.
*/}}
{{- define "analyzerd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name for the release's objects: fullnameOverride, or the release name
(prefixed with the chart's name unless it already holds it). Truncated to 63 characters, the
limit of a DNS label.
*/}}
{{- define "analyzerd.fullname" -}}
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
The chart label: name-version.
*/}}
{{- define "analyzerd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels every object carries.
*/}}
{{- define "analyzerd.labels" -}}
helm.sh/chart: {{ include "analyzerd.chart" . }}
{{ include "analyzerd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "analyzerd.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: analyzerd
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The labels that select the release's pods. They never change across upgrades.
*/}}
{{- define "analyzerd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "analyzerd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The service account the pods run as.
*/}}
{{- define "analyzerd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "analyzerd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, or the chart's appVersion.
*/}}
{{- define "analyzerd.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image reference: repository:tag, or repository@digest when a digest is given.
*/}}
{{- define "analyzerd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "analyzerd.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Whether the daemon runs its own NATS server in the pod ("true" or "").
*/}}
{{- define "analyzerd.embedded" -}}
{{- if eq .Values.nats.mode "embedded" }}true{{ end }}
{{- end }}

{{/*
Where the chart mounts what the daemon reads.
*/}}
{{- define "analyzerd.configDir" -}}/etc/analyzerd/config{{- end }}
{{- define "analyzerd.secretsDir" -}}/etc/analyzerd/secrets{{- end }}

{{/*
The Secret volumes: one per referenced Secret and purpose, each projecting only the keys the
values name, under fixed file names. A list of dicts:
  name (the volume), secret, mountPath, files (a list of {key, path, configKey}).
configKey is the dotted configuration key the file's path goes to.
*/}}
{{- define "analyzerd.secretVolumes" -}}
{{- $dir := include "analyzerd.secretsDir" . }}
{{- $volumes := list }}
{{- $nats := .Values.nats }}
{{- $prom := .Values.prometheus }}
{{- $methods := list }}
{{- if or $nats.auth.user $nats.auth.passwordKey }}{{ $methods = append $methods "user and password" }}{{ end }}
{{- if $nats.auth.tokenKey }}{{ $methods = append $methods "tokenKey" }}{{ end }}
{{- if $nats.auth.nkeySeedKey }}{{ $methods = append $methods "nkeySeedKey" }}{{ end }}
{{- if $nats.auth.credentialsKey }}{{ $methods = append $methods "credentialsKey" }}{{ end }}
{{- if gt (len $methods) 1 }}
{{- fail (printf "nats.auth: give one authentication method, got %s" (join " and " $methods)) }}
{{- end }}
{{- if and (not (include "analyzerd.embedded" .)) $nats.auth.existingSecret }}
{{- $files := list }}
{{- if $nats.auth.passwordKey }}{{ $files = append $files (dict "key" $nats.auth.passwordKey "path" "password" "configKey" "nats.auth.passwordFile") }}{{ end }}
{{- if $nats.auth.tokenKey }}{{ $files = append $files (dict "key" $nats.auth.tokenKey "path" "token" "configKey" "nats.auth.tokenFile") }}{{ end }}
{{- if $nats.auth.nkeySeedKey }}{{ $files = append $files (dict "key" $nats.auth.nkeySeedKey "path" "nkey.seed" "configKey" "nats.auth.nkeySeedFile") }}{{ end }}
{{- if $nats.auth.credentialsKey }}{{ $files = append $files (dict "key" $nats.auth.credentialsKey "path" "user.creds" "configKey" "nats.auth.credentialsFile") }}{{ end }}
{{- $volumes = append $volumes (dict "name" "nats-auth" "secret" $nats.auth.existingSecret "mountPath" (printf "%s/nats-auth" $dir) "files" $files) }}
{{- end }}
{{- if and (not (include "analyzerd.embedded" .)) $nats.tls.existingSecret }}
{{- $files := list }}
{{- if $nats.tls.caKey }}{{ $files = append $files (dict "key" $nats.tls.caKey "path" "ca.crt" "configKey" "nats.tls.caFile") }}{{ end }}
{{- if $nats.tls.certKey }}{{ $files = append $files (dict "key" $nats.tls.certKey "path" "tls.crt" "configKey" "nats.tls.certFile") }}{{ end }}
{{- if $nats.tls.keyKey }}{{ $files = append $files (dict "key" $nats.tls.keyKey "path" "tls.key" "configKey" "nats.tls.keyFile") }}{{ end }}
{{- $volumes = append $volumes (dict "name" "nats-tls" "secret" $nats.tls.existingSecret "mountPath" (printf "%s/nats-tls" $dir) "files" $files) }}
{{- end }}
{{- if $prom.auth.existingSecret }}
{{- $files := list }}
{{- if $prom.auth.bearerTokenKey }}{{ $files = append $files (dict "key" $prom.auth.bearerTokenKey "path" "token" "configKey" "prometheus.bearerTokenFile") }}{{ end }}
{{- if $prom.auth.basicAuth.passwordKey }}{{ $files = append $files (dict "key" $prom.auth.basicAuth.passwordKey "path" "password" "configKey" "prometheus.basicAuth.passwordFile") }}{{ end }}
{{- $volumes = append $volumes (dict "name" "prometheus-auth" "secret" $prom.auth.existingSecret "mountPath" (printf "%s/prometheus-auth" $dir) "files" $files) }}
{{- end }}
{{- if $prom.tls.existingSecret }}
{{- $files := list }}
{{- if $prom.tls.caKey }}{{ $files = append $files (dict "key" $prom.tls.caKey "path" "ca.crt" "configKey" "prometheus.tls.caFile") }}{{ end }}
{{- if $prom.tls.certKey }}{{ $files = append $files (dict "key" $prom.tls.certKey "path" "tls.crt" "configKey" "prometheus.tls.certFile") }}{{ end }}
{{- if $prom.tls.keyKey }}{{ $files = append $files (dict "key" $prom.tls.keyKey "path" "tls.key" "configKey" "prometheus.tls.keyFile") }}{{ end }}
{{- $volumes = append $volumes (dict "name" "prometheus-tls" "secret" $prom.tls.existingSecret "mountPath" (printf "%s/prometheus-tls" $dir) "files" $files) }}
{{- end }}
{{- range $volumes }}
{{- if not .files }}
{{- fail (printf "the Secret %s (%s) is referenced, but none of its keys is named" .secret .name) }}
{{- end }}
{{- end }}
{{- toJson (dict "volumes" $volumes) }}
{{- end }}

{{/*
The daemon's configuration file: values.config, the keys the chart owns (NATS mode and
embedded server, HTTP address, Prometheus URL and credentials as file paths), then
values.extraConfig merged over everything.
*/}}
{{- define "analyzerd.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $nats := dict }}
{{- if include "analyzerd.embedded" . }}
{{- $_ := set $nats "url" "" }}
{{- $host := "127.0.0.1" }}
{{- if .Values.nats.embedded.expose }}{{ $host = "0.0.0.0" }}{{ end }}
{{- $_ := set $nats "embedded" (dict "host" $host "port" (int .Values.nats.embedded.port) "storeDir" .Values.nats.embedded.storeDir) }}
{{- else }}
{{- $_ := set $nats "url" .Values.nats.url }}
{{- $auth := dict }}
{{- if .Values.nats.auth.user }}{{ $_ := set $auth "user" .Values.nats.auth.user }}{{ end }}
{{- $tls := dict }}
{{- if .Values.nats.tls.serverName }}{{ $_ := set $tls "serverName" .Values.nats.tls.serverName }}{{ end }}
{{- $_ := set $nats "auth" $auth }}
{{- $_ := set $nats "tls" $tls }}
{{- end }}
{{- $prom := dict "url" .Values.prometheus.url }}
{{- $promTLS := dict }}
{{- if .Values.prometheus.tls.serverName }}{{ $_ := set $promTLS "serverName" .Values.prometheus.tls.serverName }}{{ end }}
{{- if .Values.prometheus.tls.insecureSkipVerify }}{{ $_ := set $promTLS "insecureSkipVerify" true }}{{ end }}
{{- $_ := set $prom "tls" $promTLS }}
{{- $basic := dict }}
{{- if .Values.prometheus.auth.basicAuth.username }}{{ $_ := set $basic "username" .Values.prometheus.auth.basicAuth.username }}{{ end }}
{{- $_ := set $prom "basicAuth" $basic }}
{{- $owned := dict "nats" $nats "prometheus" $prom "http" (dict "addr" (printf ":%d" (int .Values.http.port))) }}
{{- /* The Secret files: each path goes to its configuration key. */}}
{{- range (include "analyzerd.secretVolumes" . | fromJson).volumes }}
{{- $mount := .mountPath }}
{{- range .files }}
{{- $keys := splitList "." .configKey }}
{{- $node := $owned }}
{{- range $i, $k := initial $keys }}
{{- if not (hasKey $node $k) }}{{ $_ := set $node $k dict }}{{ end }}
{{- $node = get $node $k }}
{{- end }}
{{- $_ := set $node (last $keys) (printf "%s/%s" $mount .path) }}
{{- end }}
{{- end }}
{{- $cfg = mustMergeOverwrite $cfg $owned }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy .Values.extraConfig) }}
{{- /* Empty sections the daemon has no use for are left out. */}}
{{- range $section := list "nats" "prometheus" }}
{{- $s := get $cfg $section }}
{{- range $k := list "auth" "tls" "basicAuth" }}
{{- if and (hasKey $s $k) (empty (get $s $k)) }}{{ $_ := unset $s $k }}{{ end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
