{{/* The chart's name, for labels. */}}
{{- define "cerise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, the prefix of namespaced object names (at most 63 characters;
the longest suffix added to it is "-apiserver", so keep release names short). */}}
{{- define "cerise.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The prefix of cluster-scoped object names (ClusterRoles and their bindings): the
namespace and the full name, so that releases in different namespaces never share one. */}}
{{- define "cerise.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "cerise.fullname" .) }}
{{- end }}

{{- define "cerise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "cerise.labels" -}}
helm.sh/chart: {{ include "cerise.chart" . }}
{{ include "cerise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cerise
{{- end }}

{{- define "cerise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cerise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference: repository, then @digest or :tag (default: appVersion). */}}
{{- define "cerise.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "cerise.specialisationName" -}}
{{- default .Release.Name .Values.specialisation.name }}
{{- end }}

{{- define "cerise.exchangeClaim" -}}
{{- default (printf "%s-exchange" (include "cerise.fullname" .)) .Values.exchange.persistence.existingClaim }}
{{- end }}

{{/* The URL clients see the exchange under (the same for the operator and the apiserver). */}}
{{- define "cerise.exchangeUrl" -}}
{{- $suffix := ternary "/ns/{namespace}/files" "/files" (eq .Values.mode "cluster") }}
{{- $url := "" }}
{{- if .Values.exchange.url }}
{{- $url = .Values.exchange.url }}
{{- else if .Values.ingress.enabled }}
{{- $url = printf "%s://%s%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host $suffix }}
{{- else }}
{{- $url = printf "http://localhost:29593%s" $suffix }}
{{- end }}
{{- if and (eq .Values.mode "cluster") (not (contains "{namespace}" $url)) }}
{{- fail (printf "exchange.url %q: in cluster mode each namespace has its own exchange, so the URL must contain {namespace}, e.g. https://cerise.example.org/ns/{namespace}/files" $url) }}
{{- end }}
{{- $url }}
{{- end }}

{{/* The name of a ComputeResource's Secret made from `credentials`. */}}
{{- define "cerise.credentialsSecret" -}}
{{- printf "%s-%s-credentials" (include "cerise.fullname" .root) .resource.name }}
{{- end }}

{{/* The rules of one of deploy/rbac's ClusterRoles (symlinked to files/rbac/), split by
the scope of their resources: `{"namespaced": [...], "cluster": [...]}` as YAML. A rule
whose resources are all cluster-scoped goes to "cluster"; one that mixes both is refused
(split it in deploy/rbac). Call with (dict "root" $ "file" "operator-role.yaml"). */}}
{{- define "cerise.rbacRules" -}}
{{- $path := printf "files/rbac/%s" .file }}
{{- $role := .root.Files.Get $path | fromYaml }}
{{- if not $role.rules }}
{{- fail (printf "%s (deploy/rbac/%s) is missing or has no rules" $path .file) }}
{{- end }}
{{- $clusterScoped := list "namespaces" "nodes" "persistentvolumes" "customresourcedefinitions" "storageclasses" "clusterroles" "clusterrolebindings" "priorityclasses" "ingressclasses" "selfsubjectaccessreviews" "selfsubjectrulesreviews" "subjectaccessreviews" "tokenreviews" }}
{{- $namespaced := list }}
{{- $cluster := list }}
{{- range $role.rules }}
{{- $scoped := 0 }}
{{- range .resources }}
{{- if has (splitList "/" . | first) $clusterScoped }}
{{- $scoped = add1 $scoped }}
{{- end }}
{{- end }}
{{- if eq $scoped 0 }}
{{- $namespaced = append $namespaced . }}
{{- else if eq $scoped (len .resources) }}
{{- $cluster = append $cluster . }}
{{- else }}
{{- fail (printf "a rule of deploy/rbac/%s mixes namespaced and cluster-scoped resources %v: split it" $.file .resources) }}
{{- end }}
{{- end }}
{{- dict "namespaced" $namespaced "cluster" $cluster | toYaml }}
{{- end }}

{{/* The volumes and mounts: the exchange, and a writable /tmp and home directory (the root
file system is read-only; cwltool, for `local` compute resources, writes to both). */}}
{{- define "cerise.volumes" -}}
- name: exchange
  persistentVolumeClaim:
    claimName: {{ include "cerise.exchangeClaim" . }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end }}

{{- define "cerise.volumeMounts" -}}
- name: exchange
  mountPath: /var/lib/cerise
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/cerise
{{- end }}

{{/* Environment shared by the operator and the apiserver. */}}
{{- define "cerise.exchangeEnv" -}}
- name: CERISE_EXCHANGE_DIR
  value: /var/lib/cerise/files
- name: CERISE_EXCHANGE_URL
  value: {{ include "cerise.exchangeUrl" . | quote }}
{{- end }}

{{/* The archive's URL, from the site's Secret (nothing without one: no archive). */}}
{{- define "cerise.archiveEnv" -}}
{{- with .Values.archive.existingSecret }}
- name: CERISE_ARCHIVE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.archive.secretKey | quote }}
{{- end }}
{{- end }}
