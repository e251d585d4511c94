{{- define "citoroute.name" -}}citoroute-controller{{- end -}}

{{- define "citoroute.labels" -}}
app.kubernetes.io/name: citoroute
app.kubernetes.io/component: controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "citoroute.selector" -}}
app.kubernetes.io/name: citoroute
app.kubernetes.io/component: controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
