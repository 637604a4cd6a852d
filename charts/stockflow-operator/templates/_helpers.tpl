{{- define "stockflow-operator.name" -}}stockflow-operator{{- end -}}
{{- define "stockflow-operator.labels" -}}
app.kubernetes.io/name: stockflow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "stockflow-operator.selector" -}}
app.kubernetes.io/name: stockflow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
