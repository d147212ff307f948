{{- define "ovnk.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "ovnk.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "ovnk.centralIP" -}}
{{ required "ovn.centralIP is required (the IP of ovn.centralNode)" .Values.ovn.centralIP }}
{{- end -}}

{{/* The databases' members: centralNode alone, or the dbNodes of a raft cluster. */}}
{{- define "ovnk.dbMembers" -}}
{{- if eq (int .Values.ovn.dbReplicas) 1 -}}
{{ list (dict "name" (required "ovn.centralNode is required" .Values.ovn.centralNode) "ip" (include "ovnk.centralIP" .)) | toJson }}
{{- else -}}
{{- if ne (len .Values.ovn.dbNodes) (int .Values.ovn.dbReplicas) -}}
{{- fail (printf "ovn.dbReplicas=%v wants that many ovn.dbNodes ({name, ip}), got %d" .Values.ovn.dbReplicas (len .Values.ovn.dbNodes)) -}}
{{- end -}}
{{ .Values.ovn.dbNodes | toJson }}
{{- end -}}
{{- end -}}

{{/* Clients' remotes: every member, comma-separated (they follow the raft leader). */}}
{{- define "ovnk.nbAddress" -}}
{{- $port := .Values.ovn.nbPort -}}
{{- $out := list -}}
{{- $scheme := include "ovnk.scheme" . -}}
{{- range (include "ovnk.dbMembers" . | fromJsonArray) }}{{ $out = append $out (printf "%s:%s:%v" $scheme .ip $port) }}{{ end -}}
{{ join "," $out }}
{{- end -}}

{{- define "ovnk.sbAddress" -}}
{{- $port := .Values.ovn.sbPort -}}
{{- $out := list -}}
{{- $scheme := include "ovnk.scheme" . -}}
{{- range (include "ovnk.dbMembers" . | fromJsonArray) }}{{ $out = append $out (printf "%s:%s:%v" $scheme .ip $port) }}{{ end -}}
{{ join "," $out }}
{{- end -}}

{{/* In-cluster config, but pointed at the apiserver itself, not its ClusterIP. */}}
{{- define "ovnk.apiEnv" -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ required "kubernetes.apiServerHost is required" .Values.kubernetes.apiServerHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubernetes.apiServerPort | quote }}
- name: OVNKUBE_CLUSTER_SUBNETS
  value: {{ .Values.cluster.subnets | quote }}
- name: OVNKUBE_K8S_SERVICE_CIDR
  value: {{ .Values.cluster.serviceCIDR | quote }}
- name: OVNKUBE_JOIN_SUBNET
  value: {{ .Values.cluster.joinSubnet | quote }}
- name: OVNKUBE_MTU
  value: {{ .Values.cluster.mtu | quote }}
{{- end -}}

{{- define "ovnk.tolerations" -}}
tolerations:
- operator: Exists
{{- end -}}

{{/* OVS/OVN daemons' console level for .Values.logLevel */}}
{{- define "ovnk.ovsLogLevel" -}}
{{ get (dict "debug" "dbg" "info" "info" "warning" "warn" "error" "err") .Values.logLevel | default "info" }}
{{- end -}}

{{/* ssl or tcp: how everything reaches the databases */}}
{{- define "ovnk.scheme" -}}
{{ ternary "ssl" "tcp" .Values.ovn.ssl }}
{{- end -}}

{{/* OVS/OVN daemons' SSL options, the Secret mounted at /ovn-cert */}}
{{- define "ovnk.sslArgs" -}}
{{- if .Values.ovn.ssl }} --private-key=/ovn-cert/tls.key --certificate=/ovn-cert/tls.crt --ca-cert=/ovn-cert/ca.crt{{ end -}}
{{- end -}}

{{- define "ovnk.sslMount" -}}
{{- if .Values.ovn.ssl }}
- {name: ovn-cert, mountPath: /ovn-cert, readOnly: true}
{{- end }}
{{- end -}}

{{- define "ovnk.sslVolume" -}}
{{- if .Values.ovn.ssl }}
- name: ovn-cert
  secret: {secretName: {{ .Values.ovn.sslSecret | quote }}}
{{- end }}
{{- end -}}
