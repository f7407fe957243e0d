{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "panreduce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "panreduce.fullname" -}}
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

{{/* <fullname>-<component>: the Deployment and Service name of a component (gateway or a
technique); a technique's Service is how the gateway finds it. Kubernetes names take no
'_': a technique named a_b is served by <fullname>-a-b. */}}
{{- define "panreduce.componentName" -}}
{{- printf "%s-%s" (include "panreduce.fullname" .root) (.component | replace "_" "-") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "panreduce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "panreduce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}
{{- define "panreduce.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "panreduce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: panreduce
{{- end }}

{{/* selector labels of one component: dict "root" $ "component" NAME */}}
{{- define "panreduce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "panreduce.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "panreduce.componentLabels" -}}
{{ include "panreduce.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if .technique }}
panreduce.io/technique: {{ .component }}
{{- end }}
{{- end }}

{{/* GPU ---------------------------------------------------------------------------------- */}}
{{/* The GPU resources of a values entry: dict "resources" R "root" $ -> YAML {name: count}
of every resources.limits key that names an accelerator: an extended resource (a name with
a domain, e.g. nvidia.com/gpu, nvidia.com/mig-1g.10gb, amd.com/gpu, gpu.intel.com/i915)
whose domain is one of gpu.vendors (or whose name is in gpu.extraResources), count > 0. */}}
{{- define "panreduce.gpuResources" -}}
{{- $limits := (.resources | default dict).limits | default dict }}
{{- $found := dict }}
{{- range $key, $n := $limits }}
{{- if and (contains "/" $key) (gt (int $n) 0) }}
{{- $domain := first (splitList "/" $key) }}
{{- if or (hasKey $.root.Values.gpu.vendors $domain) (has $key ($.root.Values.gpu.extraResources | default list)) }}
{{- $_ := set $found $key (int $n) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $found }}
{{- end }}

{{/* the number of accelerators a values entry asks for (0 when none): dict "resources" R "root" $ */}}
{{- define "panreduce.gpuCount" -}}
{{- $sum := 0 }}
{{- range $k, $n := include "panreduce.gpuResources" . | fromYaml }}{{ $sum = add $sum $n }}{{ end }}
{{- $sum }}
{{- end }}

{{/* Image ref: dict "root" $ "image" .image "gpu" BOOL ["suffix" S]: <registry>/<repository>:<tag>
(a GPU technique without its own tag: tag + the vendor's tag suffix); with the component's
image.digest, <registry>/<repository>@sha256:... (a digest names one image: the tag is ignored) */}}
{{- define "panreduce.image" -}}
{{- $v := .root.Values.image }}
{{- $tag := .image.tag | default $v.tag | default .root.Chart.AppVersion }}
{{- if and .gpu (not .image.tag) }}
{{- $tag = printf "%s%s" $tag (.suffix | default $v.gpuTagSuffix) }}
{{- end }}
{{- $registry := .image.registry | default $v.registry }}
{{- $repo := .image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) .image.repository }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* Routes of the gateway: TECHNIQUE=SERVICE:PORT,... ; sharded techniques through their
headless Service with gRPC's DNS resolver, so that the gateway sees every replica;
gateway.routes adds or replaces routes (a service elsewhere, or a local rehearsal). */}}
{{- define "panreduce.routes" -}}
{{- $routes := dict }}
{{- range $name, $t := .Values.techniques }}
{{- if $t.enabled }}
{{- $svc := include "panreduce.componentName" (dict "root" $ "component" $name) }}
{{- if $t.sharded }}
{{- $_ := set $routes $name (printf "dns:///%s-headless:50051" $svc) }}
{{- else }}
{{- $_ := set $routes $name (printf "%s:50051" $svc) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $address := .Values.gateway.routes }}
{{- $_ := set $routes $name $address }}
{{- end }}
{{- $pairs := list }}
{{- range $name := keys $routes | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $name (get $routes $name)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Environment shared by every container (S3, logs, metrics, extras) */}}
{{- define "panreduce.commonEnv" -}}
- name: PANREDUCE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: PANREDUCE_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: PANREDUCE_STORE
  value: {{ .Values.store.mountPath | quote }}
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
# the secret shared by the gateway and the technique services (they serve no one else)
- name: PANREDUCE_SERVICE_TOKEN_FILE
  value: {{ printf "/etc/panreduce/service-token/%s" .Values.serviceToken.secretKey | quote }}
{{- if .Values.serviceTLS.enabled }}
# mutual TLS between the gateway and the services (tls.crt, tls.key, ca.crt)
- name: PANREDUCE_SERVICE_TLS_DIR
  value: /etc/panreduce/service-tls
- name: PANREDUCE_SERVICE_TLS_SERVER_NAME
  value: {{ .Values.serviceTLS.serverName | quote }}
{{- end }}
{{- $s3 := .Values.s3 }}
{{- if $s3.enabled }}
{{- with $s3.endpoint }}
- name: PANREDUCE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $s3.region }}
- name: PANREDUCE_S3_REGION
  value: {{ . | quote }}
{{- end }}
- name: PANREDUCE_S3_ALLOW_HTTP
  value: {{ $s3.allowHttp | quote }}
{{- with $s3.buckets }}
- name: PANREDUCE_S3_BUCKETS
  value: {{ join "," . | quote }}
{{- end }}
{{- with $s3.resultsUri }}
- name: PANREDUCE_RESULTS_URI
  value: {{ . | quote }}
{{- end }}
{{- with $s3.scratchUri }}
- name: PANREDUCE_SCRATCH_URI
  value: {{ . | quote }}
{{- end }}
{{- with $s3.uploadsUri }}
- name: PANREDUCE_UPLOADS_URI
  value: {{ . | quote }}
{{- end }}
- name: PANREDUCE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "panreduce.s3SecretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: PANREDUCE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "panreduce.s3SecretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "panreduce.serviceTokenSecretName" -}}
{{- .Values.serviceToken.existingSecret | default (printf "%s-service-token" (include "panreduce.fullname" .)) }}
{{- end }}

{{- /* the service token Secret as a volume, and its mount: gateway and technique pods */ -}}
{{- define "panreduce.serviceTokenVolume" -}}
- name: service-token
  secret:
    secretName: {{ include "panreduce.serviceTokenSecretName" . }}
    defaultMode: 0440
{{- end }}

{{- define "panreduce.serviceTokenMount" -}}
- name: service-token
  mountPath: /etc/panreduce/service-token
  readOnly: true
{{- end }}

{{- define "panreduce.scopeKeySecretName" -}}
{{- .Values.scopeKey.existingSecret | default (printf "%s-scope-key" (include "panreduce.fullname" .)) }}
{{- end }}

{{- /* the scope key: the gateway mounts the private key and signs each call's scope; a
technique service mounts only the certificate and verifies (dict "root" . "role" "gateway"|"service") */ -}}
{{- define "panreduce.scopeKeyEnv" -}}
- name: PANREDUCE_SCOPE_KEY_FILE
  value: {{ ternary "/etc/panreduce/scope-key/tls.key" "/etc/panreduce/scope-key/tls.crt" (eq .role "gateway") | quote }}
{{- end }}

{{- define "panreduce.scopeKeyVolume" -}}
- name: scope-key
  secret:
    secretName: {{ include "panreduce.scopeKeySecretName" .root }}
    defaultMode: 0440
    {{- if ne .role "gateway" }}
    items:
      - key: tls.crt
        path: tls.crt
    {{- end }}
{{- end }}

{{- define "panreduce.scopeKeyMount" -}}
- name: scope-key
  mountPath: /etc/panreduce/scope-key
  readOnly: true
{{- end }}

{{- define "panreduce.serviceTLSSecretName" -}}
{{- .Values.serviceTLS.secretName | default (printf "%s-service-tls" (include "panreduce.fullname" .)) }}
{{- end }}

{{- /* the service mTLS Secret as a volume and its mount (gateway and technique pods; empty when off) */ -}}
{{- define "panreduce.serviceTLSVolume" -}}
{{- if .Values.serviceTLS.enabled }}
- name: service-tls
  secret:
    secretName: {{ include "panreduce.serviceTLSSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "panreduce.serviceTLSMount" -}}
{{- if .Values.serviceTLS.enabled }}
- name: service-tls
  mountPath: /etc/panreduce/service-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "panreduce.s3SecretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "panreduce.fullname" .)) }}
{{- end }}

{{- define "panreduce.storeClaimName" -}}
{{- .Values.store.persistence.existingClaim | default (printf "%s-store" (include "panreduce.fullname" .)) }}
{{- end }}

{{- define "panreduce.jobsClaimName" -}}
{{- .Values.jobStore.sqlite.persistence.existingClaim | default (printf "%s-jobs" (include "panreduce.fullname" .)) }}
{{- end }}

{{/* Native gRPC probe: dict "port" N "probe" SETTINGS ("kind" "tcp": a TCP probe instead) */}}
{{- define "panreduce.grpcProbe" -}}
{{- if eq (.kind | default "grpc") "tcp" }}
tcpSocket:
  port: {{ .port }}
{{- else }}
grpc:
  port: {{ .port }}
{{- end }}
{{- range $k, $v := .probe }}
{{ $k }}: {{ $v }}
{{- end }}
{{- end }}

{{/* Pod annotations for Prometheus scraping */}}
{{- define "panreduce.metricsAnnotations" -}}
{{- if .Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Resources with the scratch emptyDir's sizeLimit as the ephemeral-storage request (unless
one is given), so that the scheduler counts the scratch: dict "resources" R "sizeLimit" Q */}}
{{- define "panreduce.resources" -}}
{{- $r := deepCopy (.resources | default dict) }}
{{- $req := $r.requests | default dict }}
{{- if and .sizeLimit (not (hasKey $req "ephemeral-storage")) }}
{{- $_ := set $req "ephemeral-storage" .sizeLimit }}
{{- end }}
{{- $_ := set $r "requests" $req }}
{{- toYaml $r }}
{{- end }}

{{/* The scratch emptyDir and the store's volume and mounts of a pod: dict "root" $
"sizeLimit" Q. With store.persistence off the pod's local store is a subPath of its scratch
emptyDir, so one sizeLimit (and one ephemeral-storage request) covers both. */}}
{{- define "panreduce.scratchMounts" -}}
{{- if .root.Values.store.persistence.enabled }}
- name: tmp
  mountPath: /tmp
- name: store
  mountPath: {{ .root.Values.store.mountPath }}
{{- else }}
- name: tmp
  mountPath: /tmp
  subPath: tmp
- name: tmp
  mountPath: {{ .root.Values.store.mountPath }}
  subPath: store
{{- end }}
{{- end }}

{{- define "panreduce.scratchVolumes" -}}
# scratch: staged inputs and outputs before they are published
- name: tmp
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- if .root.Values.store.persistence.enabled }}
- name: store
  persistentVolumeClaim:
    claimName: {{ include "panreduce.storeClaimName" .root }}
{{- end }}
{{- end }}

{{/* Check one pod's extra volumes and mounts; fails the render with the reason.
dict "root" $ "where" "techniques.scan" "volumes" LIST "mounts" LIST */}}
{{- define "panreduce.checkExtraVolumes" -}}
{{- $root := .root }}
{{- $where := .where }}
{{- $reserved := list "tmp" "store" "service-token" "service-tls" "jobs" "tokens" "tls" }}
{{- $names := dict }}
{{- range .volumes }}
{{- if has .name $reserved }}
{{- fail (printf "%s.extraVolumes: the name %q is the chart's own volume; choose another" $where .name) }}
{{- end }}
{{- if hasKey $names .name }}
{{- fail (printf "%s.extraVolumes: the volume %q is given twice (global extraVolumes and the pod's own share one list)" $where .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- if and (hasKey . "hostPath") (not $root.Values.allowHostPath) }}
{{- fail (printf "%s.extraVolumes: %q is a hostPath volume, refused at the restricted pod security level; set allowHostPath=true where the cluster admits it" $where .name) }}
{{- end }}
{{- end }}
{{- $own := list "/tmp" $root.Values.store.mountPath "/etc/panreduce" }}
{{- if eq $where "gateway" }}{{ $own = append $own $root.Values.jobStore.sqlite.mountPath }}{{ end }}
{{- $paths := dict }}
{{- range .mounts }}
{{- if not (hasKey $names .name) }}
{{- fail (printf "%s.extraVolumeMounts: %q mounts no volume of this pod (extraVolumes: %s)" $where .name (keys $names | sortAlpha | join ", ")) }}
{{- end }}
{{- $path := trimSuffix "/" .mountPath }}
{{- if not $path }}
{{- fail (printf "%s.extraVolumeMounts: %q cannot be mounted on /" $where .name) }}
{{- end }}
{{- range $own }}
{{- if or (eq $path .) (hasPrefix (printf "%s/" .) $path) (hasPrefix (printf "%s/" $path) .) }}
{{- fail (printf "%s.extraVolumeMounts: %s overlaps the chart's own mount %s" $where $path .) }}
{{- end }}
{{- end }}
{{- if hasKey $paths $path }}
{{- fail (printf "%s.extraVolumeMounts: two mounts on %s" $where $path) }}
{{- end }}
{{- $_ := set $paths $path true }}
{{- end }}
{{- end }}

{{/* The pod securityContext of every pod: podSecurityContext, without runAsUser, runAsGroup
and fsGroup when podSecurity.arbitraryUid (OpenShift's restricted SCC assigns a UID and an
fsGroup from the namespace's range; the store is group-writable for them). */}}
{{- define "panreduce.podSecurityContext" -}}
{{- $psc := deepCopy (.Values.podSecurityContext | default dict) }}
{{- if .Values.podSecurity.arbitraryUid }}
{{- $psc = omit $psc "runAsUser" "runAsGroup" "fsGroup" "fsGroupChangePolicy" }}
{{- end }}
{{- toYaml $psc }}
{{- end }}

{{/* Is access control configured on the gateway (static tokens or OIDC)? "true" or "" */}}
{{- define "panreduce.authConfigured" -}}
{{- $a := .Values.gateway.auth }}
{{- if or $a.tokensSecret.name $a.jwks }}true{{ end }}
{{- end }}

{{/* The web page's login: web.auth, else none with gateway.auth.disabled, oidc with an
issuer and a client id (web.oidc.clientId or the audience), else tokens */}}
{{- define "panreduce.webAuth" -}}
{{- $a := .Values.gateway.auth }}
{{- if .Values.web.auth }}{{ .Values.web.auth }}
{{- else if and $a.disabled (not (include "panreduce.authConfigured" .)) }}none
{{- else if and $a.jwtIssuer (or .Values.web.oidc.clientId $a.jwtAudience) }}oidc
{{- else }}tokens
{{- end }}
{{- end }}

{{/* The gateway's TLS Secret: gateway.tls.existingSecret, else <fullname>-gateway-tls when
cert-manager makes it (gateway.tls.certManager.enabled), else "" (plain gRPC) */}}
{{- define "panreduce.gatewayTLSSecret" -}}
{{- $tls := .Values.gateway.tls }}
{{- if $tls.existingSecret }}{{ $tls.existingSecret }}
{{- else if $tls.certManager.enabled }}{{ include "panreduce.componentName" (dict "root" . "component" "gateway-tls") }}
{{- end }}
{{- end }}

{{/* Techniques scaled by KEDA: enabled ones, keda.enabled, in keda.techniques (empty: all) */}}
{{- define "panreduce.kedaScaled" -}}
{{- $k := .root.Values.keda }}
{{- if and $k.enabled (or (not $k.techniques) (has .name $k.techniques)) }}true{{ end }}
{{- end }}
