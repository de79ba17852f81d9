#!/usr/bin/env python3
"""Checks the Helm chart helm/tributary without a cluster or a helm binary.

    python3 scripts/check_helm.py [TRIBUTARY_BIN]              # the check
    python3 scripts/check_helm.py --self-test [TRIBUTARY_BIN]  # the checker's own test

TRIBUTARY_BIN defaults to target/debug/tributary. scripts/check-helm.sh
installs what this needs and runs both. The check:

* lints the chart and renders it with Helm's own engine: the Go SDK of Helm
  v4, which the PyPI wheel helm-python-sdk bundles as a shared library
  (helm template semantics: values.schema.json is enforced, `lookup` finds
  nothing, Capabilities are Helm's defaults). Scenarios: the defaults plus
  the two required addresses, values-production.yaml, and a few others that
  turn on what those two leave off (embedded registry, KEDA, Gateway API,
  MQTT TLS from an existing Secret);
* validates every rendered object against the Kubernetes JSON schemas of
  PyPI's kubernetes-validate (strict: unknown fields are errors), for the
  oldest Kubernetes the chart supports and the newest the package knows.
  Custom resources (ServiceMonitor, PrometheusRule, KEDA ScaledObject,
  cert-manager Certificate, Gateway API HTTPRoute/GRPCRoute) have no schema
  there and are reported as skipped;
* asserts over the rendered YAML what an operator relies on: every
  Deployment has startup, liveness (/healthz) and readiness (/readyz)
  probes on its metrics port, runs as non-root with a read-only root
  filesystem, no privilege escalation, all capabilities dropped, seccomp
  RuntimeDefault, and has a PodDisruptionBudget selecting it; the processor
  never scales past kafka.partitions; ingest names itself after its pod;
  Services reach ports the pods declare; an embedded registry is one pod on
  a volume;
* requires every `--flag` of every container's args and every TRIBUTARY_*
  variable it gets (env and the ConfigMaps it loads) to be an option of
  `TRIBUTARY_BIN <role> --help` (scripts/check_compose.py's functions), and
  lets clap parse the args;
* renders values that must be refused (processor replicas past the
  partitions, no Kafka, no Scylla, a scaled embedded registry, ...) and
  requires each to fail with its message;
* requires the chart's dashboards to be byte-identical to
  deploy/grafana/dashboards, and every metric name in the chart's alerts,
  the processor's HPA and docs/operations.md to be one the crates register.

`--self-test` breaks copies of the rendered manifests (and of the
dashboards) one way at a time and fails unless the check reports each.
"""

from __future__ import annotations

import argparse
import base64
import copy
import filecmp
import re
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_compose  # noqa: E402  (its flag, env and metric helpers)
from check_compose import CheckError, Help, command_flags, declares, registered_metrics  # noqa: E402

try:
    import helm_python
    import kubernetes_validate
    import yaml
except ImportError as e:  # scripts/check-helm.sh installs them
    sys.exit(f"check_helm: {e.name} is missing: pip install helm-python-sdk kubernetes-validate pyyaml")

REPO = check_compose.REPO
CHART = REPO / "helm" / "tributary"
DEFAULT_BIN = check_compose.DEFAULT_BIN
ROLES = ("registry", "ingest", "processor", "query")
RELEASE, NAMESPACE = "tributary", "iot"
# The least the chart renders with: the two addresses it has no default for.
REQUIRED = {"kafka": {"brokers": ["kafka-0.kafka:9092", "kafka-1.kafka:9092"]},
            "scylla": {"url": "scylla://scylla-client.scylla:9042/tributary"}}
# Kinds kubernetes-validate has no schema for (custom resources).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "Certificate", "HTTPRoute", "GRPCRoute"}
# Ingest's drain after SIGTERM: MQTT drain_timeout_secs (10, crates/ingest-mqtt/src/config.rs)
# plus the 5 s grace MqttServer adds (crates/ingest-mqtt/src/lib.rs).
INGEST_DRAIN_S = 15
# Container port name -> the flag that binds it.
PORT_FLAGS = {"grpc": "--grpc-addr", "http": "--http-addr", "mqtt": "--mqtt-addr",
              "mqtt-ws": "--mqtt-ws-addr", "mqtts": "--mqtt-tls-addr", "mqtt-wss": "--mqtt-wss-addr"}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def production() -> dict:
    return yaml.safe_load((CHART / "values-production.yaml").read_text())


# (name, values) rendered and checked; together they render every template.
def scenarios() -> list[tuple[str, dict]]:
    return [
        ("defaults", REQUIRED),
        ("values-production.yaml", production()),
        ("embedded registry, KEDA, Gateway API, MQTT TLS from a Secret", merge(REQUIRED, {
            "registry": {"store": "embedded", "replicaCount": 1},
            "kafka": {"partitions": 6, "options": ["security.protocol=SSL"]},
            "processor": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 6,
                                          "keda": {"enabled": True, "authenticationRef": "kafka-auth"}}},
            "ingest": {"tls": {"enabled": True, "existingSecret": "mqtt-tls",
                               "clientCA": {"enabled": True}},
                       "mqttService": {"type": "NodePort", "nodePorts": {"mqtt": 31883, "mqtts": 31884},
                                       "proxyProtocol": True},
                       "extraEnv": [{"name": "TRIBUTARY_MAX_BODY_BYTES", "value": "1048576"}]},
            "query": {"extraArgs": ["--max-points-per-request=50000"]},
            "gateway": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gw"}],
                        "http": {"hostnames": ["ingest.example.com"]},
                        "grpc": {"hostnames": ["api.example.com"]},
                        "certificate": {"enabled": True, "secretName": "api-tls",
                                        "issuerRef": {"name": "letsencrypt"}}},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "networkPolicy": {"enabled": True},
            "grafana": {"dashboards": {"enabled": True}},
        })),
    ]


# (what, values, text the error must contain): renders that must fail.
def refusals() -> list[tuple[str, dict, list[str]]]:
    lag = {"enabled": True, "minReplicas": 2, "maxReplicas": 13}
    return [
        ("processor HPA maxReplicas > kafka.partitions", merge(REQUIRED, {"processor": {"autoscaling": lag}}),
         ["processor.autoscaling.maxReplicas (13) exceeds kafka.partitions (12)"]),
        ("processor KEDA maxReplicas > kafka.partitions", merge(REQUIRED, {
            "processor": {"autoscaling": {**lag, "keda": {"enabled": True}}}}),
         ["processor.autoscaling.maxReplicas (13) exceeds kafka.partitions (12)"]),
        ("production values with fewer partitions than processor maxReplicas",
         merge(production(), {"kafka": {"partitions": 12}}),
         ["processor.autoscaling.maxReplicas (24) exceeds kafka.partitions (12)"]),
        ("processor replicaCount > kafka.partitions", merge(REQUIRED, {
            "kafka": {"partitions": 3}, "processor": {"replicaCount": 4}}),
         ["processor.replicaCount (4) exceeds kafka.partitions (3)"]),
        ("no Kafka brokers", {"scylla": REQUIRED["scylla"]}, ["kafka.brokers is required"]),
        ("no Scylla address", {"kafka": REQUIRED["kafka"]}, ["scylla.url is required"]),
        ("embedded registry with two replicas", merge(REQUIRED, {
            "registry": {"store": "embedded", "replicaCount": 2}}), ["/registry/replicaCount"]),
        ("Scylla retention unlike ingest's", merge(REQUIRED, {
            "scylla": {"url": "scylla://s:9042/t?retention=30d"}}), ["retention=30d but retention is 90d"]),
        ("MQTT TLS without a certificate", merge(REQUIRED, {"ingest": {"tls": {"enabled": True}}}),
         ["ingest.tls.enabled needs a certificate"]),
        ("misspelt value", merge(REQUIRED, {"kafka": {"partition": 6}}), ["'partition' not allowed"]),
        ("unknown store type", merge(REQUIRED, {"registry": {"store": "redb"}}), ["/registry/store"]),
        ("writable root filesystem", merge(REQUIRED, {
            "containerSecurityContext": {"readOnlyRootFilesystem": False}}),
         ["/containerSecurityContext/readOnlyRootFilesystem"]),
        ("Gateway without a parent", merge(REQUIRED, {"gateway": {"enabled": True}}),
         ["gateway.enabled needs gateway.parentRefs"]),
    ]


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def render(values: dict, chart: Path = CHART) -> tuple[list[dict], str]:
    """(the rendered objects, NOTES.txt); HelmError on refusal."""
    with helm_python.Chart.load(str(chart)) as c:
        out = c.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs, notes = [], ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})["_template"] = path
                objs.append(doc)
    return objs, notes


def strip(obj: dict) -> dict:
    o = copy.deepcopy(obj)
    o.get("metadata", {}).pop("_template", None)
    return o


def where(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and
    the newest kubernetes-validate knows."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    m = re.search(r">=\s*v?(\d+\.\d+)", chart.get("kubeVersion", ""))
    if not m:
        raise CheckError("Chart.yaml has no `kubeVersion: >=X.Y` to validate against")
    newest = kubernetes_validate.latest_version()
    return sorted({m.group(1), ".".join(newest.split(".")[:2])}, key=lambda v: [int(x) for x in v.split(".")])


def validate_kube(objs: list[dict], versions: list[str]) -> tuple[list[str], set[str], int]:
    errors, skipped, ok = [], set(), 0
    for o in objs:
        if o.get("kind") in CUSTOM_KINDS:
            skipped.add(f"{o['kind']} ({o['apiVersion']})")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(strip(o), v, strict=True)
                ok += 1
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where(o)}: no Kubernetes {v} schema for {o.get('apiVersion')} {o.get('kind')}")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path) or "(top)"
                errors.append(f"{where(o)}: invalid for Kubernetes {v} at {path}: {e.message[:300]}")
    return errors, skipped, ok


# ---------------------------------------------------------------------------
# Assertions over the rendered manifests
# ---------------------------------------------------------------------------

def matches(selector: dict, labels: dict) -> bool:
    want = selector.get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def role_of(dep: dict) -> str:
    return dep["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "?")


def port_of(text: str) -> int | None:
    m = re.search(r":(\d+)$", str(text))
    return int(m.group(1)) if m else None


def container_env(c: dict, objs: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """TRIBUTARY_* variables a container gets: {name: env entry}, from env
    and from the ConfigMaps it loads; and errors."""
    env, errors = {}, []
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if name not in cms:
                errors.append(f"loads ConfigMap {name}, which the chart does not render")
                continue
            for k, v in (cms[name].get("data") or {}).items():
                env[k] = {"name": k, "value": v, "from": f"ConfigMap {name}"}
        else:
            errors.append(f"envFrom {src}: only ConfigMaps the chart renders can be checked")
    for e in c.get("env") or []:
        env[e["name"]] = e
    return env, errors


def check_deployments(objs: list[dict], helps: Help, report: list[str]) -> list[str]:
    errors = []
    deps = by_kind(objs, "Deployment")
    roles = sorted(role_of(d) for d in deps)
    if roles != sorted(ROLES):
        errors.append(f"Deployments for roles {roles}, want one each of {sorted(ROLES)}")
    pdbs = by_kind(objs, "PodDisruptionBudget")
    for d in deps:
        name, role = where(d), role_of(d)
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        e = []
        # Security.
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            e.append("pod securityContext.runAsNonRoot is not true")
        if psc.get("runAsUser") != 10001:
            e.append(f"pod securityContext.runAsUser is {psc.get('runAsUser')}, the image's user is 10001")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            e.append("pod seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            e.append("mounts a service account token it has no use for")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        containers = pod.get("containers") or []
        if len(containers) != 1:
            e.append(f"{len(containers)} containers, want 1")
        for c in containers:
            csc = c.get("securityContext") or {}
            for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                              ("allowPrivilegeEscalation", False)):
                if csc.get(key) is not want:
                    e.append(f"container {c['name']}: securityContext.{key} is {csc.get(key)}, want {want}")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                e.append(f"container {c['name']}: capabilities.drop lacks ALL")
            # Every writable path is a volume.
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            if "/tmp" not in mounts or "emptyDir" not in volumes.get(mounts["/tmp"]["name"], {}):
                e.append(f"container {c['name']}: /tmp is not an emptyDir (the root filesystem is read-only)")
            if "resources" not in c or not c["resources"].get("requests") or not c["resources"].get("limits"):
                e.append(f"container {c['name']}: no resource requests and limits")
            env, env_errors = container_env(c, objs)
            e += [f"container {c['name']}: {x}" for x in env_errors]
            # Probes on the metrics port.
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            metrics_addr = (env.get("TRIBUTARY_METRICS_ADDR") or {}).get("value", "0.0.0.0:9100")
            metrics_port = port_of(metrics_addr)
            if ports.get("metrics") != metrics_port:
                e.append(f"container {c['name']}: port 'metrics' is {ports.get('metrics')}, "
                         f"but TRIBUTARY_METRICS_ADDR listens on {metrics_port}")
            for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                                ("readinessProbe", "/readyz")):
                p = (c.get(probe) or {}).get("httpGet")
                if not p:
                    e.append(f"container {c['name']}: no {probe} (httpGet {path})")
                    continue
                port = ports.get(p.get("port")) if isinstance(p.get("port"), str) else p.get("port")
                if p.get("path") != path or port != metrics_port:
                    e.append(f"container {c['name']}: {probe} asks {p.get('path')} on port {p.get('port')}, "
                             f"want {path} on the metrics port {metrics_port}")
            # Listen flags agree with the declared ports.
            args = [str(a) for a in c.get("args") or []]
            flags = dict(a.split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
            for pname, flag in PORT_FLAGS.items():
                if pname in ports and port_of(flags.get(flag, "")) != ports[pname]:
                    e.append(f"container {c['name']}: port {pname} is {ports[pname]}, but {flag} is "
                             f"{flags.get(flag, '(not given)')}")
            e += [f"container {c['name']}: {x}" for x in check_cli(args, env, role, helps, report, name)]
            if role == "ingest":
                fid = (env.get("TRIBUTARY_FRONTEND_ID") or {}).get("valueFrom", {}).get("fieldRef", {})
                if fid.get("fieldPath") != "metadata.name":
                    e.append("TRIBUTARY_FRONTEND_ID does not come from the pod name (fieldRef metadata.name)")
            # The grace period covers the preStop sleep and the drain.
            grace = pod.get("terminationGracePeriodSeconds", 30)
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command") or []
            sleep = int(pre[-1]) if pre and str(pre[-1]).isdigit() else 0
            need = sleep + (INGEST_DRAIN_S if role == "ingest" else 0)
            if grace <= need:
                e.append(f"terminationGracePeriodSeconds {grace} does not cover the preStop sleep ({sleep} s)"
                         + (f" and ingest's drain ({INGEST_DRAIN_S} s)" if role == "ingest" else ""))
        # Scheduling.
        aff = (pod.get("affinity") or {}).get("podAntiAffinity")
        if not aff:
            e.append("no pod anti-affinity")
        if not pod.get("topologySpreadConstraints"):
            e.append("no topologySpreadConstraints")
        # A PDB that selects this Deployment's pods.
        covering = [p for p in pdbs if matches(p["spec"].get("selector") or {}, labels)]
        if not covering:
            e.append("no PodDisruptionBudget selects its pods")
        # An embedded registry is one pod with its volume.
        if role == "registry":
            store = (container_env(containers[0], objs)[0].get("TRIBUTARY_STORE") or {}).get("value", "")
            if store and not store.startswith("scylla://"):
                if d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
                    e.append("embedded registry store: want replicas 1 and strategy Recreate")
                if not any("persistentVolumeClaim" in v for v in volumes.values()):
                    e.append("embedded registry store without a PersistentVolumeClaim")
        errors += [f"{name}: {x}" for x in e]
        if not e:
            report.append(f"ok: {name}: probes /healthz /readyz on :{metrics_port}, non-root read-only, "
                          f"PDB {covering[0]['metadata']['name']}")
    return errors


def check_cli(args: list[str], env: dict, role: str, helps: Help, report: list[str], name: str) -> list[str]:
    """Every --flag and TRIBUTARY_* variable is an option of `tributary <role>`."""
    if not args or args[0] != role:
        return [f"args must start with the role {role!r}, got {args[:1]}"]
    text, why = helps.of(role)
    if text is None:
        return [f"`tributary {role} --help` failed: {why}"]
    flat = " ".join(text.split())
    errors = []
    for flag in command_flags(args):
        if not declares(text, flag):
            errors.append(f"flag {flag} is not an option of `tributary {role}`")
    for key, entry in env.items():
        if key.startswith("TRIBUTARY_") and f"[env: {key}=" not in flat:
            src = entry.get("from", "env")
            errors.append(f"variable {key} ({src}) is read by no flag of `tributary {role}`")
    if errors:
        return errors
    r = helps.run([*args, "--help"])
    if r.returncode != 0:
        return [f"`tributary {' '.join(args)}` is refused: {' '.join((r.stderr or r.stdout).split())[:300]}"]
    own = [k for k in env if k.startswith("TRIBUTARY_")]
    report.append(f"ok: {name}: `tributary {role}` accepts {', '.join(command_flags(args)) or 'no flags'} "
                  f"and reads {len(own)} TRIBUTARY_* variables")
    return []


def check_services(objs: list[dict], report: list[str]) -> list[str]:
    errors = []
    pods = [(d["spec"]["template"]["metadata"]["labels"],
             {p.get("name"): p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"]
              for p in c.get("ports") or []}) for d in by_kind(objs, "Deployment")]
    for s in by_kind(objs, "Service"):
        sel = s["spec"].get("selector") or {}
        targets = [ports for labels, ports in pods if matches({"matchLabels": sel}, labels)]
        if not targets:
            errors.append(f"{where(s)}: its selector matches no Deployment's pods")
            continue
        for p in s["spec"].get("ports") or []:
            t = p.get("targetPort", p.get("port"))
            known = t in targets[0] if isinstance(t, str) else t in targets[0].values()
            if not known:
                errors.append(f"{where(s)}: port {p.get('name')} targets {t}, which its pods do not declare")
    if not errors:
        report.append(f"ok: {len(by_kind(objs, 'Service'))} Services reach declared pod ports")
    return errors


def check_scaling(objs: list[dict], report: list[str]) -> list[str]:
    errors = []
    common = next((o for o in by_kind(objs, "ConfigMap") if "TRIBUTARY_KAFKA_PARTITIONS" in (o.get("data") or {})),
                  None)
    if common is None:
        return ["no ConfigMap sets TRIBUTARY_KAFKA_PARTITIONS"]
    partitions = int(common["data"]["TRIBUTARY_KAFKA_PARTITIONS"])
    deps = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    processor = next((n for n, d in deps.items() if role_of(d) == "processor"), None)
    scaled = set()
    for h in by_kind(objs, "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]["name"]
        scaled.add(ref)
        if ref not in deps:
            errors.append(f"{where(h)}: scales {ref}, which is no Deployment of the chart")
        if ref == processor:
            if h["spec"]["maxReplicas"] > partitions:
                errors.append(f"{where(h)}: processor maxReplicas {h['spec']['maxReplicas']} exceeds the "
                              f"{partitions} telemetry partitions")
            ext = [m for m in h["spec"].get("metrics") or [] if m.get("type") == "External"]
            if not ext:
                errors.append(f"{where(h)}: the processor scales on no External (consumer lag) metric")
    for so in by_kind(objs, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]["name"]
        scaled.add(ref)
        if ref == processor and so["spec"].get("maxReplicaCount", 100) > partitions:
            errors.append(f"{where(so)}: processor maxReplicaCount {so['spec'].get('maxReplicaCount')} exceeds "
                          f"the {partitions} telemetry partitions")
    for n, d in deps.items():
        if n in scaled and "replicas" in d["spec"]:
            errors.append(f"Deployment/{n}: sets replicas although an autoscaler owns them "
                          "(every upgrade would reset the count)")
        if n == processor and n not in scaled and d["spec"].get("replicas", 1) > partitions:
            errors.append(f"Deployment/{n}: {d['spec']['replicas']} processor replicas for {partitions} partitions")
    if not errors:
        report.append(f"ok: the processor never scales past the {partitions} telemetry partitions "
                      f"(autoscaled: {', '.join(sorted(scaled)) or 'none'})")
    return errors


def check_secrets(objs: list[dict], report: list[str]) -> list[str]:
    errors = []
    for s in by_kind(objs, "Secret"):
        for k, v in (s.get("data") or {}).items():
            if k.endswith("jwt.secret") and len(base64.b64decode(v)) < 32:
                errors.append(f"{where(s)}: {k} is under the 32 bytes the services require")
    return errors


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\btributary_[a-z0-9_]+", text))


def unregistered(names: set[str], known: set[str]) -> list[str]:
    out = []
    for m in sorted(names):
        base = next((m[: -len(s)] for s in check_compose.METRIC_SUFFIXES
                     if m.endswith(s) and m[: -len(s)] in known), m)
        if base not in known:
            out.append(m)
    return out


def check_metric_names(objs: list[dict], known: set[str], report: list[str]) -> list[str]:
    errors, used = [], set()
    for o in by_kind(objs, "PrometheusRule") + by_kind(objs, "HorizontalPodAutoscaler"):
        names = metric_names(yaml.safe_dump(strip(o)))
        used |= names
        errors += [f"{where(o)}: {m} is no metric the crates register" for m in unregistered(names, known)]
    if used and not errors:
        report.append(f"ok: {len(used)} metric names in alerts and autoscalers are registered")
    return errors


def check_notes(notes: str, objs: list[dict]) -> list[str]:
    errors = []
    registry = next((d["metadata"]["name"] for d in by_kind(objs, "Deployment") if role_of(d) == "registry"), "?")
    for want in (f"exec deploy/{registry}", "data/admin.token", "devices create"):
        if want not in notes:
            errors.append(f"NOTES.txt does not show {want!r}")
    return errors


def check_manifests(objs: list[dict], notes: str, helps: Help, known: set[str],
                    report: list[str]) -> list[str]:
    errors = []
    for check in (lambda: check_deployments(objs, helps, report), lambda: check_services(objs, report),
                  lambda: check_scaling(objs, report), lambda: check_secrets(objs, report),
                  lambda: check_metric_names(objs, known, report), lambda: check_notes(notes, objs)):
        try:
            errors += check()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            errors.append(f"a check could not read the manifests: {type(e).__name__}: {e}")
    return errors


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def check_dashboards(chart_dir: Path, deploy_dir: Path, report: list[str]) -> list[str]:
    chart = {p.name: p for p in chart_dir.glob("*.json")}
    deploy = {p.name: p for p in deploy_dir.glob("*.json")}
    errors = []
    if not chart:
        errors.append(f"{chart_dir} holds no dashboard")
    for n in sorted(set(chart) | set(deploy)):
        if n not in chart or n not in deploy:
            errors.append(f"dashboard {n} is in only one of {chart_dir} and {deploy_dir}; keep the two identical "
                          f"(cp {deploy_dir / n} {chart_dir / n})")
        elif not filecmp.cmp(chart[n], deploy[n], shallow=False):
            errors.append(f"dashboard {n} differs between {chart_dir} and {deploy_dir}; keep the two identical")
    if not errors:
        report.append(f"ok: the chart's dashboards are identical to deploy/grafana/dashboards ({', '.join(sorted(chart))})")
    return errors


def check_docs(path: Path, known: set[str], report: list[str]) -> list[str]:
    if not path.exists():
        return [f"{path} is missing"]
    names = metric_names(path.read_text())
    bad = unregistered(names, known)
    if bad:
        return [f"{path.name}: {m} is no metric the crates register" for m in bad]
    report.append(f"ok: {path.name} names {len(names)} metrics, all registered")
    return []


# ---------------------------------------------------------------------------

def run_check(binary: str) -> tuple[list[str], list[str], int]:
    """(errors, report, assertions that ran)."""
    errors, report, ran = [], [], 0
    helps = Help(binary)
    known = registered_metrics(REPO / "crates")
    versions = kube_versions()
    lint = helm_python.lint(str(CHART), REQUIRED, strict=True)
    ran += 1
    lint_errors = [m["error"].strip() for m in lint["messages"] if m["severity"] >= 2] + lint["errors"]
    errors += [f"helm lint: {m}" for m in lint_errors]
    if not lint_errors:
        report.append("ok: helm lint --strict: no warnings")
    skipped_all: set[str] = set()
    rendered_kinds: set[str] = set()
    for name, values in scenarios():
        ran += 1
        try:
            objs, notes = render(values)
        except helm_python.HelmError as e:
            errors.append(f"[{name}] does not render: {e}")
            continue
        rendered_kinds |= {o["kind"] for o in objs}
        report.append(f"ok: [{name}] rendered {len(objs)} objects with Helm {helm_python.helm_sdk_version()}")
        kerr, skipped, n = validate_kube(objs, versions)
        skipped_all |= skipped
        errors += [f"[{name}] {e}" for e in kerr]
        if not kerr:
            report.append(f"ok: [{name}] {n} validations against the Kubernetes {' and '.join(versions)} "
                          f"schemas (strict)")
        sub_report: list[str] = []
        errs = check_manifests(objs, notes, helps, known, sub_report)
        errors += [f"[{name}] {e}" for e in errs]
        report += [f"   [{name}] {r[4:]}" if r.startswith("ok: ") else r for r in sub_report]
    report.append(f"SKIPPED by the Kubernetes schema validator (custom resources, no schema bundled): "
                  f"{', '.join(sorted(skipped_all)) or 'none'}")
    for kind in ("ServiceMonitor", "PrometheusRule", "ScaledObject", "Certificate", "HTTPRoute", "GRPCRoute",
                 "Ingress", "NetworkPolicy", "HorizontalPodAutoscaler", "PersistentVolumeClaim"):
        if kind not in rendered_kinds:
            errors.append(f"no scenario renders a {kind}: add one to scenarios() so it is checked")
    for what, values, expected in refusals():
        ran += 1
        try:
            render(values)
            errors.append(f"refusal [{what}]: rendered, but must fail with {expected}")
        except helm_python.HelmError as e:
            msg = str(e)
            if all(x in msg for x in expected):
                report.append(f"ok: refused [{what}]: {' '.join(msg.split())[:160]}")
            else:
                errors.append(f"refusal [{what}]: failed, but not with {expected}: {' '.join(msg.split())[:300]}")
    ran += 2
    errors += check_dashboards(CHART / "dashboards", REPO / "deploy/grafana/dashboards", report)
    errors += check_docs(REPO / "docs/operations.md", known, report)
    return errors, report, ran


# ---------------------------------------------------------------------------
# Self-test: the checks must catch each breakage
# ---------------------------------------------------------------------------

def _dep(objs: list[dict], role: str) -> dict:
    return next(d for d in by_kind(objs, "Deployment") if role_of(d) == role)


def _ctr(objs: list[dict], role: str) -> dict:
    return _dep(objs, role)["spec"]["template"]["spec"]["containers"][0]


def _cm(objs: list[dict], suffix: str) -> dict:
    return next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith(suffix))


def _drop_pdb(objs: list[dict], role: str) -> None:
    objs[:] = [o for o in objs if not (o["kind"] == "PodDisruptionBudget"
                                      and o["metadata"]["name"].endswith("-" + role))]


def _set_hpa_max(objs: list[dict], n: int) -> None:
    hpa = next(h for h in by_kind(objs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-processor"))
    hpa["spec"]["maxReplicas"] = n


# (name, scenario index, breakage, text an error must contain)
MANIFEST_CASES = [
    ("no readiness probe", 0, lambda o: _ctr(o, "ingest").pop("readinessProbe"), ["ingest", "no readinessProbe"]),
    ("liveness on /readyz", 0, lambda o: _ctr(o, "query")["livenessProbe"]["httpGet"].update(path="/readyz"),
     ["query", "livenessProbe asks /readyz"]),
    ("startup probe on another port", 0,
     lambda o: _ctr(o, "registry")["startupProbe"]["httpGet"].update(port="grpc"),
     ["registry", "startupProbe", "metrics port"]),
    ("writable root filesystem", 0,
     lambda o: _ctr(o, "processor")["securityContext"].update(readOnlyRootFilesystem=False),
     ["processor", "readOnlyRootFilesystem"]),
    ("runs as root", 0, lambda o: _dep(o, "ingest")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
     ["ingest", "runAsNonRoot"]),
    ("capabilities kept", 0, lambda o: _ctr(o, "query")["securityContext"]["capabilities"].update(drop=[]),
     ["query", "capabilities.drop lacks ALL"]),
    ("no PDB", 0, lambda o: _drop_pdb(o, "query"), ["query", "no PodDisruptionBudget"]),
    ("PDB selecting other pods", 0, lambda o: next(
        p for p in by_kind(o, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-ingest")
    )["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "ingset"}),
     ["ingest", "no PodDisruptionBudget"]),
    ("processor HPA past the partitions", 1, lambda o: _set_hpa_max(o, 25),
     ["processor maxReplicas 25 exceeds the 24 telemetry partitions"]),
    ("KEDA past the partitions", 2, lambda o: by_kind(o, "ScaledObject")[0]["spec"].update(maxReplicaCount=7),
     ["maxReplicaCount 7 exceeds the 6"]),
    ("unknown flag", 0, lambda o: _ctr(o, "ingest")["args"].append("--no-such-flag=1"),
     ["ingest", "flag --no-such-flag"]),
    ("flag of another role", 0, lambda o: _ctr(o, "registry")["args"].append("--registry-url=http://x:1"),
     ["registry", "flag --registry-url"]),
    ("value clap refuses", 0, lambda o: _ctr(o, "query")["args"].__setitem__(1, "--grpc-addr=nowhere"),
     ["query", "refused", "nowhere"]),
    ("variable of another role", 0,
     lambda o: _ctr(o, "registry").setdefault("env", []).append({"name": "TRIBUTARY_REGISTRY_URL", "value": "x"}),
     ["registry", "TRIBUTARY_REGISTRY_URL"]),
    ("ConfigMap key a loader does not read", 0,
     lambda o: _cm(o, "-common")["data"].update(TRIBUTARY_RETENTION="30d"),
     ["registry", "TRIBUTARY_RETENTION (ConfigMap"]),
    ("ingest without its pod name", 0,
     lambda o: _ctr(o, "ingest").update(env=[e for e in _ctr(o, "ingest")["env"]
                                             if e["name"] != "TRIBUTARY_FRONTEND_ID"]),
     ["TRIBUTARY_FRONTEND_ID"]),
    ("grace period shorter than the drain", 0,
     lambda o: _dep(o, "ingest")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
     ["ingest", "terminationGracePeriodSeconds 10"]),
    ("Service to an undeclared port", 0,
     lambda o: next(s for s in by_kind(o, "Service") if s["metadata"]["name"].endswith("-query")
                    )["spec"]["ports"][0].update(targetPort="grcp"),
     ["query", "targets grcp"]),
    ("metrics port unlike the listener", 0,
     lambda o: _cm(o, "-common")["data"].update(TRIBUTARY_METRICS_ADDR="0.0.0.0:9200"),
     ["port 'metrics' is 9100", "9200"]),
    ("listen flag unlike the container port", 0,
     lambda o: _ctr(o, "ingest")["args"].__setitem__(1, "--http-addr=0.0.0.0:8081"),
     ["port http is 8080", "--http-addr"]),
    ("scaled embedded registry", 2, lambda o: _dep(o, "registry")["spec"].update(replicas=2),
     ["embedded registry store"]),
    ("alert on an unregistered metric", 1, lambda o: by_kind(o, "PrometheusRule")[0]["spec"]["groups"][0]["rules"][0]
     .update(expr="tributary_processor_consumer_lagg_records > 1"), ["tributary_processor_consumer_lagg_records"]),
    ("NOTES without the first device", 0, "notes", ["NOTES.txt"]),
]

# Breakages the Kubernetes schemas must catch.
KUBE_CASES = [
    ("misspelt field", lambda o: _ctr(o, "ingest").update(containerPorts=[]), ["containerPorts"]),
    ("wrong type", lambda o: _dep(o, "query")["spec"].update(replicas="two"), ["replicas"]),
    ("unknown probe field", lambda o: _ctr(o, "registry")["readinessProbe"].update(path="/readyz"),
     ["readinessProbe"]),
]


def self_test(binary: str) -> tuple[int, int]:
    helps = Help(binary)
    known = registered_metrics(REPO / "crates")
    versions = kube_versions()
    rendered = []
    for _, values in scenarios():
        rendered.append(render(values))
    passed, failed = 0, []
    # Unbroken renders pass.
    for (name, _), (objs, notes) in zip(scenarios(), rendered):
        errs = check_manifests(copy.deepcopy(objs), notes, helps, known, []) + validate_kube(objs, versions)[0]
        if errs:
            failed.append(f"unbroken [{name}]: expected no error, got:\n    " + "\n    ".join(errs))
        else:
            passed += 1
            print(f"ok: self-test unbroken [{name}]: no error")
    for case, idx, breakage, expected in MANIFEST_CASES:
        objs, notes = copy.deepcopy(rendered[idx][0]), rendered[idx][1]
        if breakage == "notes":
            notes = "Tributary is deployed."
        else:
            try:
                breakage(objs)
            except (KeyError, StopIteration, IndexError, TypeError) as e:
                failed.append(f"{case}: cannot break the manifests this way ({type(e).__name__}: {e}); "
                              "update the self-test")
                continue
        errs = check_manifests(objs, notes, helps, known, [])
        hit = next((e for e in errs if all(x in e for x in expected)), None)
        if hit:
            passed += 1
            print(f"ok: self-test [{case}]: caught: {hit}")
        else:
            failed.append(f"{case}: expected an error containing {expected}, got:\n    "
                          + ("\n    ".join(errs) or "(no error)"))
    for case, breakage, expected in KUBE_CASES:
        objs = copy.deepcopy(rendered[0][0])
        breakage(objs)
        errs = validate_kube(objs, versions[:1])[0]
        hit = next((e for e in errs if all(x in e for x in expected)), None)
        if hit:
            passed += 1
            print(f"ok: self-test kube schema [{case}]: caught: {hit}")
        else:
            failed.append(f"kube schema {case}: expected an error containing {expected}, got: {errs or '(none)'}")
    # Dashboards that drift apart.
    with tempfile.TemporaryDirectory(prefix="check-helm-") as tmp:
        a, b = Path(tmp, "chart"), Path(tmp, "deploy")
        a.mkdir()
        b.mkdir()
        for src in (CHART / "dashboards").glob("*.json"):
            (a / src.name).write_bytes(src.read_bytes())
            (b / src.name).write_bytes(src.read_bytes().replace(b"points", b"pointz", 1))
        (b / "extra.json").write_text("{}")
        errs = check_dashboards(a, b, [])
        if any("differs" in e for e in errs) and any("extra.json" in e for e in errs):
            passed += 1
            print(f"ok: self-test [dashboards drift]: caught: {errs[0]}")
        else:
            failed.append(f"dashboards drift: expected 'differs' and 'extra.json', got {errs}")
    for f in failed:
        print(f"FAIL: self-test {f}", file=sys.stderr)
    return passed, len(failed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", nargs="?", default=DEFAULT_BIN,
                    help=f"the tributary binary whose --help is the reference (default {DEFAULT_BIN})")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checker against deliberately broken manifests")
    args = ap.parse_args()
    binary = args.binary
    if not Path(binary).is_absolute() and not Path(binary).exists() and (REPO / binary).exists():
        binary = str(REPO / binary)
    print(f"check_helm: Helm SDK {helm_python.helm_sdk_version()} (helm-python-sdk, libhelm_c "
          f"{helm_python.helm_c_version()}), kubernetes-validate {kubernetes_validate.version.__version__}, "
          f"binary {binary}")
    try:
        if args.self_test:
            passed, failed = self_test(binary)
            print(f"check-helm-self-test: {passed} passed, {failed} failed")
            return 1 if failed else 0
        errors, report, ran = run_check(binary)
    except CheckError as e:
        print(f"check_helm: {e}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    print(f"check_helm: {len(errors)} problem(s) in {ran} checks of helm/tributary")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
