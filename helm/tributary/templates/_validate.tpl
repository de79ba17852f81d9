{{/*
Settings the chart refuses, each with a message that says what to set.
values.schema.json checks types and ranges; these are the rules that need
two values at once, or a value the schema cannot require without a worse
message. Included once, from configmap.yaml.
*/}}
{{- define "tributary.validate" -}}
{{- $v := .Values }}
{{- if not $v.kafka.brokers }}
{{- fail "kafka.brokers is required: the Kafka bootstrap brokers, e.g. --set 'kafka.brokers={kafka-0.kafka:9092,kafka-1.kafka:9092}'" }}
{{- end }}
{{- if and (not $v.scylla.url) (not $v.scylla.existingSecret) }}
{{- fail "scylla.url is required: the ScyllaDB cluster, e.g. --set scylla.url=scylla://scylla-client.scylla:9042/tributary (or scylla.existingSecret naming a Secret that holds the URL)" }}
{{- end }}
{{- if and $v.scylla.url (not $v.scylla.existingSecret) }}
{{- if not (hasPrefix "scylla://" $v.scylla.url) }}
{{- fail (printf "scylla.url %q must start with scylla:// (docs/scylla.md)" $v.scylla.url) }}
{{- end }}
{{- $given := regexReplaceAll "^[?&]retention=" (regexFind "[?&]retention=[^&]*" $v.scylla.url) "" }}
{{- $want := ternary "none" (toString $v.retention) (eq (toString $v.retention) "0") }}
{{- if and $given (ne $given $want) }}
{{- fail (printf "scylla.url has retention=%s but retention is %s: the store's TTL and ingest's age limit must agree (drop retention= from the URL and the chart appends it)" $given (toString $v.retention)) }}
{{- end }}
{{- end }}
{{- if and $v.kafka.options $v.kafka.optionsSecret.name }}
{{- fail "kafka.options and kafka.optionsSecret.name are both set: TRIBUTARY_KAFKA_OPTIONS comes from one of them; put every option in the Secret" }}
{{- end }}
{{- if and (eq $v.registry.store "embedded") (ne (int $v.registry.replicaCount) 1) }}
{{- fail (printf "registry.store=embedded keeps the registry in one redb file on one volume: registry.replicaCount must be 1, not %d (use registry.store=scylla to scale it)" (int $v.registry.replicaCount)) }}
{{- end }}
{{- $partitions := int $v.kafka.partitions }}
{{- $p := $v.processor }}
{{- if $p.autoscaling.enabled }}
{{- if gt (int $p.autoscaling.maxReplicas) $partitions }}
{{- fail (printf "processor.autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d): a consumer group has at most one active member per partition, so replicas past it would sit idle" (int $p.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $p.autoscaling.minReplicas) (int $p.autoscaling.maxReplicas) }}
{{- fail "processor.autoscaling.minReplicas exceeds processor.autoscaling.maxReplicas" }}
{{- end }}
{{- else if gt (int $p.replicaCount) $partitions }}
{{- fail (printf "processor.replicaCount (%d) exceeds kafka.partitions (%d): a consumer group has at most one active member per partition, so replicas past it would sit idle" (int $p.replicaCount) $partitions) }}
{{- end }}
{{- range $role := list "ingest" "query" }}
{{- $a := (index $v $role).autoscaling }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas exceeds %s.autoscaling.maxReplicas" $role $role) }}
{{- end }}
{{- end }}
{{- $tls := $v.ingest.tls }}
{{- if $tls.enabled }}
{{- if and (not $tls.existingSecret) (not $tls.certManager.enabled) }}
{{- fail "ingest.tls.enabled needs a certificate: ingest.tls.existingSecret (a kubernetes.io/tls Secret) or ingest.tls.certManager.enabled" }}
{{- end }}
{{- if and $tls.certManager.enabled (not $tls.existingSecret) (or (not $tls.certManager.issuerRef.name) (not $tls.certManager.dnsNames)) }}
{{- fail "ingest.tls.certManager needs issuerRef.name and at least one of dnsNames (the names devices connect to)" }}
{{- end }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- if and (not $v.ingress.http.host) (not $v.ingress.grpc.host) }}
{{- fail "ingress.enabled needs ingress.http.host, ingress.grpc.host, or both" }}
{{- end }}
{{- if and $v.ingress.tls.certManager.enabled (not $v.ingress.tls.certManager.clusterIssuer) }}
{{- fail "ingress.tls.certManager.enabled needs ingress.tls.certManager.clusterIssuer" }}
{{- end }}
{{- end }}
{{- if $v.gateway.enabled }}
{{- if not $v.gateway.parentRefs }}
{{- fail "gateway.enabled needs gateway.parentRefs: the Gateway (and listener) the routes attach to" }}
{{- end }}
{{- if and (not $v.gateway.http.hostnames) (not $v.gateway.grpc.hostnames) }}
{{- fail "gateway.enabled needs gateway.http.hostnames, gateway.grpc.hostnames, or both" }}
{{- end }}
{{- if and $v.gateway.certificate.enabled (or (not $v.gateway.certificate.secretName) (not $v.gateway.certificate.issuerRef.name)) }}
{{- fail "gateway.certificate.enabled needs gateway.certificate.secretName and gateway.certificate.issuerRef.name" }}
{{- end }}
{{- end }}
{{- end }}
