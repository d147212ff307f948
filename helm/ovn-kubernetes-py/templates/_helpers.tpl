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

{{- define "ovnk.nbAddress" -}}
tcp:{{ include "ovnk.centralIP" . }}:{{ .Values.ovn.nbPort }}
{{- end -}}

{{- define "ovnk.sbAddress" -}}
tcp:{{ include "ovnk.centralIP" . }}:{{ .Values.ovn.sbPort }}
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
