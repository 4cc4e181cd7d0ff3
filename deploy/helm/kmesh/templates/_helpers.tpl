{{/* Labels of every object */}}
{{- define "kmesh.labels" -}}
app: kmesh
app.kubernetes.io/name: kmesh
{{- end -}}
