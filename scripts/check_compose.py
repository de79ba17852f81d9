#!/usr/bin/env python3
"""Checks the Docker deployment files without Docker.

    python3 scripts/check_compose.py [TRIBUTARY_BIN]          # the check
    python3 scripts/check_compose.py --self-test [TRIBUTARY_BIN]

TRIBUTARY_BIN defaults to target/debug/tributary. The check:

* validates docker-compose.yml against the Compose Specification's JSON
  schema (fetched once from a registry package, cached under
  target/deploy-check/, never committed);
* for every Tributary service (a service with `build:`), runs
  `TRIBUTARY_BIN <subcommand> --help` and requires every `--flag` of its
  `command:` and every TRIBUTARY_* key of its `environment:` to appear there
  (clap prints `[env: NAME=` for each flag's variable), then runs the whole
  command line with `--help` appended, so clap also parses every value;
* checks that the Dockerfile's EXPOSE covers every container port those
  services publish, that their healthcheck probes /readyz on their
  --metrics-addr port, and that bind-mounted files exist;
* checks deploy/: Prometheus scrapes every Tributary service's metrics port,
  the collector's pipelines use only components it defines, and the Grafana
  dashboards use only their provisioned datasource and metric names that
  crates/*/src register.

`--self-test` runs the checker against broken copies (a fixture with a fake
binary, and, when TRIBUTARY_BIN runs, a copy of the real files) and fails
unless every breakage is reported. Exit status 0 only when all is well.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

try:
    import jsonschema
    import yaml
except ImportError as e:  # scripts/check-deploy.sh installs them
    sys.exit(f"check_compose: {e.name} is missing: pip install jsonschema pyyaml")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BIN = "target/debug/tributary"
DEFAULT_CACHE = REPO / "target" / "deploy-check"

# The subcommands docker-compose.yml must run, one service each at least.
EXPECTED_SUBCOMMANDS = ("registry", "ingest", "processor", "query")
DEFAULT_METRICS_PORT = 9100
# Longest a `--help` call may take.
HELP_TIMEOUT_S = 30
# Suffixes the OpenMetrics encoder adds to a registered metric name.
METRIC_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


class CheckError(Exception):
    """A check could not run at all (missing binary, no schema)."""


# ---------------------------------------------------------------------------
# The Compose Specification schema
# ---------------------------------------------------------------------------

# Where the schema comes from: dclint, a Compose linter on npm, ships a
# current copy of compose-spec/compose-spec's schema/compose-spec.json. (PyPI's
# docker-compose 1.29.2 wheel has the 2021 schema, which refuses keys Compose
# v2 accepts, such as the top-level `name`, so it is not a fallback.)
SCHEMA_SOURCES = (
    {
        "label": "compose-spec schema from npm dclint@3.1.0 (schemas/compose.schema.json)",
        "file": "compose-spec.dclint-3.1.0.json",
        "package": "dclint@3.1.0",
        "member": "package/schemas/compose.schema.json",
    },
)


def _fetch_npm(source: dict, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", source["package"], "--pack-destination", tmp, "--loglevel=error"],
            capture_output=True, text=True, timeout=300, check=True,
        )
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(source["member"])
            if member is None:
                raise KeyError(source["member"])
            dest.write_bytes(member.read())


def load_schema(cache: Path) -> tuple[dict, str]:
    """The schema and where it came from; fetched once into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in SCHEMA_SOURCES:
        path = cache / source["file"]
        if not path.exists():
            part = path.with_suffix(".part")
            try:
                _fetch_npm(source, part)
                json.loads(part.read_text())
                part.replace(path)
            except (OSError, subprocess.SubprocessError, KeyError, IndexError,
                    tarfile.TarError, json.JSONDecodeError) as e:
                detail = getattr(e, "stderr", "") or str(e) or type(e).__name__
                failures.append(f"{source['package']}: {detail.strip()[:300]}")
                part.unlink(missing_ok=True)
                continue
        schema = json.loads(path.read_text())
        if "service" not in schema.get("definitions", {}):
            raise CheckError(f"{path} is not the Compose schema (no definitions.service)")
        return schema, source["label"]
    raise CheckError("cannot get the Compose Specification schema (needs npm and the npm "
                     "registry once; Debian: apt-get install npm):\n  " + "\n  ".join(failures))


def schema_errors(doc: object, schema: dict) -> list[str]:
    meta = schema.get("$schema", "")
    if "draft-07" in meta:
        cls = jsonschema.Draft7Validator
    elif "2019-09" in meta:
        cls = jsonschema.Draft201909Validator
    else:
        cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    out = []
    for e in sorted(cls(schema).iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        # oneOf/anyOf failures say little; the deepest sub-error says why.
        best = e
        stack = list(e.context or [])
        while stack:
            sub = stack.pop(0)
            if len(sub.absolute_path) > len(best.absolute_path):
                best = sub
            stack.extend(sub.context or [])
        where = ".".join(str(p) for p in best.absolute_path) or "(top level)"
        out.append(f"docker-compose.yml: {where}: {best.message}")
    return out


# ---------------------------------------------------------------------------
# Reading the compose file
# ---------------------------------------------------------------------------

def load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise CheckError(f"{path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CheckError(f"{path}: not valid YAML: {e}") from e


def tributary_services(doc: dict) -> dict[str, dict]:
    """Services built from this repository's Dockerfile."""
    return {name: svc for name, svc in (doc.get("services") or {}).items()
            if isinstance(svc, dict) and "build" in svc}


def command_words(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(w) for w in cmd]


def environment(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else None) for p in pairs}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def command_flags(words: list[str]) -> list[str]:
    """`--name` and `-x` options of a command line (values skipped)."""
    flags = []
    for w in words[1:]:
        if w == "--":
            break
        if w.startswith("--"):
            flags.append(w.split("=", 1)[0])
        elif re.fullmatch(r"-[A-Za-z]", w):
            flags.append(w)
    return flags


def port_of(addr: str) -> int | None:
    m = re.search(r":(\d+)$", addr.strip())
    return int(m.group(1)) if m else None


def metrics_port(svc: dict) -> int:
    for w in command_words(svc):
        if w.startswith("--metrics-addr="):
            return port_of(w.split("=", 1)[1]) or DEFAULT_METRICS_PORT
    words = command_words(svc)
    if "--metrics-addr" in words[:-1]:
        return port_of(words[words.index("--metrics-addr") + 1]) or DEFAULT_METRICS_PORT
    addr = environment(svc).get("TRIBUTARY_METRICS_ADDR")
    return (port_of(addr) if addr else None) or DEFAULT_METRICS_PORT


def _port_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def container_ports(svc: dict) -> list[tuple[int, str, str]]:
    """(container port, protocol, as written) for each published port."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            target, proto = str(p.get("target", "")), str(p.get("protocol", "tcp"))
        else:
            text, _, proto = str(p).partition("/")
            target, proto = text.rsplit(":", 1)[-1], proto or "tcp"
        try:
            out.extend((n, proto, str(p)) for n in _port_range(target))
        except ValueError:
            out.append((-1, proto, str(p)))
    return out


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

class Help:
    """`TRIBUTARY_BIN <subcommand> --help`, once per subcommand."""

    def __init__(self, binary: str):
        self.binary = binary
        self.cache: dict[str, tuple[str | None, str]] = {}
        # The services' own variables must not change what clap prints.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
        self.env["RUST_BACKTRACE"] = "0"  # a panic's message, not its backtrace

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.binary, *args], capture_output=True, text=True,
                                  timeout=HELP_TIMEOUT_S, env=self.env)
        except FileNotFoundError as e:
            raise CheckError(f"{self.binary}: not found (build it: cargo build -p tributary)") from e
        except PermissionError as e:
            raise CheckError(f"{self.binary}: not executable") from e
        except subprocess.TimeoutExpired as e:
            raise CheckError(f"`{self.binary} {' '.join(args)}` took over {HELP_TIMEOUT_S}s") from e

    def of(self, sub: str) -> tuple[str | None, str]:
        """(help text, or None and why not)."""
        if sub not in self.cache:
            r = self.run([sub, "--help"])
            out = r.stderr or r.stdout
            # A panic's message is on the line after its location.
            lines = [l for l in out.splitlines() if l.strip() and "panicked at" not in l]
            why = " ".join(" ".join(lines[:3]).split())[:300]
            self.cache[sub] = (r.stdout if r.returncode == 0 else None, why)
        return self.cache[sub]


def declares(help_text: str, flag: str) -> bool:
    """Whether clap's help lists `flag` as an option (not merely mentions it
    in another option's description): `  -o, --output <OUTPUT>`."""
    if flag.startswith("--"):
        pattern = rf"^\s*(?:-[A-Za-z0-9], )?{re.escape(flag)}(?=[\s=<\[,]|$)"
    else:
        pattern = rf"^\s*{re.escape(flag)}(?=[\s,]|$)"
    return re.search(pattern, help_text, re.M) is not None


def check_cli(doc: dict, helps: Help, report: list[str]) -> list[str]:
    errors = []
    seen = set()
    for name, svc in tributary_services(doc).items():
        words = command_words(svc)
        if not words or words[0].startswith("-"):
            errors.append(f"service {name}: command must start with the tributary subcommand, got {words!r}")
            continue
        sub = words[0]
        seen.add(sub)
        text, why = helps.of(sub)
        if text is None:
            errors.append(f"service {name}: `tributary {sub} --help` failed: {why}")
            continue
        flat = " ".join(text.split())
        own = []
        for flag in command_flags(words):
            if declares(text, flag):
                own.append(flag)
            else:
                errors.append(f"service {name}: flag {flag} is not an option of `tributary {sub}` "
                              f"(not in `tributary {sub} --help`)")
        envs = []
        for key in environment(svc):
            if not key.startswith("TRIBUTARY_"):
                continue
            if f"[env: {key}=" in flat:
                envs.append(key)
            else:
                errors.append(f"service {name}: environment variable {key} is read by no flag of "
                              f"`tributary {sub}` (no `[env: {key}=` in its --help)")
        if any(e.startswith(f"service {name}:") for e in errors):
            continue
        # Let clap parse the values too: --help at the end stops it before it
        # would start anything.
        r = helps.run([*words, "--help"])
        if r.returncode != 0:
            detail = " ".join((r.stderr or r.stdout).split())[:400]
            errors.append(f"service {name}: `tributary {' '.join(words)}` is refused: {detail}")
            continue
        report.append(f"ok: {name}: `tributary {sub}` accepts {', '.join(own) or 'no flags'}"
                      f" and reads {len(envs)} TRIBUTARY_* variables ({', '.join(envs)})")
    missing = [s for s in EXPECTED_SUBCOMMANDS if s not in seen]
    if missing:
        errors.append(f"docker-compose.yml runs no service for: {', '.join(missing)}")
    return errors


def dockerfile_exposed(text: str) -> set[tuple[int, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = set()
    for line in joined.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts and parts[0].upper() == "EXPOSE":
            for tok in parts[1:]:
                port, _, proto = tok.partition("/")
                if port.startswith("$"):
                    continue
                out.update((n, proto or "tcp") for n in _port_range(port))
    return out


def check_ports(doc: dict, dockerfile: Path, report: list[str]) -> list[str]:
    exposed = dockerfile_exposed(dockerfile.read_text())
    errors, covered = [], []
    for name, svc in tributary_services(doc).items():
        for port, proto, written in container_ports(svc):
            if (port, proto) in exposed:
                covered.append(port)
            else:
                errors.append(f"service {name}: publishes {written!r}, but the Dockerfile does not "
                              f"EXPOSE {port}/{proto}")
    report.append(f"ok: Dockerfile EXPOSE covers the published container ports {sorted(set(covered))}")
    return errors


def check_health(doc: dict, report: list[str]) -> list[str]:
    errors = []
    for name, svc in tributary_services(doc).items():
        test = (svc.get("healthcheck") or {}).get("test")
        text = " ".join(test) if isinstance(test, list) else str(test or "")
        port = metrics_port(svc)
        if not re.search(rf":{port}/readyz\b", text):
            errors.append(f"service {name}: healthcheck must probe /readyz on its metrics port "
                          f"{port}, got {text!r}")
    if not errors:
        report.append("ok: every Tributary service's healthcheck probes /readyz on its metrics port")
    return errors


def check_bind_mounts(doc: dict, root: Path, report: list[str]) -> list[str]:
    errors, n = [], 0
    for name, svc in (doc.get("services") or {}).items():
        for v in (svc or {}).get("volumes") or []:
            if isinstance(v, dict):
                src = v.get("source") if v.get("type") == "bind" else None
            else:
                src = str(v).split(":", 1)[0]
            if src and src.startswith((".", "/")):
                n += 1
                if not (root / src).exists():
                    errors.append(f"service {name}: bind mount source {src} does not exist")
    report.append(f"ok: {n} bind-mounted files and directories exist")
    return errors


def check_prometheus(doc: dict, path: Path, report: list[str]) -> list[str]:
    conf = load_yaml(path) or {}
    targets = {t for job in conf.get("scrape_configs") or []
               for sc in job.get("static_configs") or [] for t in sc.get("targets") or []}
    errors = []
    for name, svc in tributary_services(doc).items():
        want = f"{name}:{metrics_port(svc)}"
        if want not in targets:
            errors.append(f"{path.name}: no scrape target {want} for service {name}")
    report.append(f"ok: Prometheus scrapes every Tributary service ({len(targets)} targets)")
    return errors


def check_collector(path: Path, report: list[str]) -> list[str]:
    conf = load_yaml(path) or {}
    pipelines = ((conf.get("service") or {}).get("pipelines")) or {}
    errors = [] if pipelines else [f"{path.name}: no service.pipelines"]
    for pname, p in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            defined = conf.get(kind) or {}
            for comp in (p or {}).get(kind) or []:
                if comp not in defined:
                    errors.append(f"{path.name}: pipeline {pname} uses {kind[:-1]} {comp}, "
                                  f"which is not defined under {kind}")
    report.append(f"ok: collector pipelines {sorted(pipelines)} use only defined components")
    return errors


def registered_metrics(crates: Path) -> set[str]:
    """Metric names the Rust code registers (prometheus-client), prefixed."""
    names = set()
    # A `Collector` names its metrics when scraped, in `encode_descriptor`.
    token = re.compile(r'sub_registry_with_prefix\(\s*"([A-Za-z0-9_]+)"\s*\)'
                       r'|\.register(?:_with_unit)?\(\s*"([A-Za-z0-9_]+)"'
                       r'|\.encode_descriptor\(\s*"([A-Za-z0-9_]+)"')
    for rs in crates.glob("*/src/**/*.rs"):
        prefix = ""
        for m in token.finditer(rs.read_text(errors="replace")):
            if m.group(1):
                prefix = m.group(1) + "_"
            else:
                names.add(prefix + (m.group(2) or m.group(3)))
    return names


def _panels(panels: list) -> list:
    out = []
    for p in panels or []:
        out.append(p)
        out.extend(_panels(p.get("panels")))
    return out


def check_grafana(deploy: Path, crates: Path, report: list[str]) -> list[str]:
    errors = []
    uids = set()
    for f in sorted((deploy / "grafana/provisioning/datasources").glob("*.y*ml")):
        for ds in (load_yaml(f) or {}).get("datasources") or []:
            uids.add(ds.get("uid"))
    known = registered_metrics(crates)
    if not known:
        errors.append(f"no metric registrations found under {crates}")
    used = set()
    dashboards = sorted((deploy / "grafana/dashboards").glob("*.json"))
    if not dashboards:
        errors.append("deploy/grafana/dashboards holds no dashboard")
    for f in dashboards:
        try:
            dash = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            errors.append(f"{f.name}: not valid JSON: {e}")
            continue
        for p in _panels(dash.get("panels")):
            for obj in [p, *(p.get("targets") or [])]:
                ds = obj.get("datasource")
                if isinstance(ds, dict) and ds.get("uid") not in uids:
                    errors.append(f"{f.name}: panel {p.get('title')!r} uses datasource uid "
                                  f"{ds.get('uid')!r}; provisioned: {sorted(uids)}")
            for t in p.get("targets") or []:
                for metric in re.findall(r"\btributary_[A-Za-z0-9_]+", t.get("expr", "")):
                    base = next((metric[: -len(s)] for s in METRIC_SUFFIXES
                                 if metric.endswith(s) and metric[: -len(s)] in known), metric)
                    if base not in known:
                        errors.append(f"{f.name}: panel {p.get('title')!r} queries {metric}, "
                                      f"which no crate registers")
                    used.add(base)
    report.append(f"ok: Grafana dashboards use the provisioned datasource and {len(used)} registered "
                  f"metrics ({', '.join(sorted(used))})")
    return errors


def check_all(root: Path, binary: str, schema: dict, schema_label: str) -> tuple[list[str], list[str]]:
    """Every check over a repository-shaped directory; (errors, report)."""
    compose = root / "docker-compose.yml"
    deploy = root / "deploy"
    doc = load_yaml(compose)
    if not isinstance(doc, dict):
        return [f"{compose}: not a mapping"], []
    report: list[str] = []
    errors = schema_errors(doc, schema)
    if not errors:
        report.append(f"ok: docker-compose.yml matches the Compose Specification ({schema_label})")
    # A missing file, a binary that does not run, or a file shaped unlike
    # the schema fails its own check and lets the others run.
    checks = {
        "command line": lambda: check_cli(doc, Help(binary), report),
        "Dockerfile ports": lambda: check_ports(doc, root / "Dockerfile", report),
        "healthchecks": lambda: check_health(doc, report),
        "bind mounts": lambda: check_bind_mounts(doc, root, report),
        "Prometheus": lambda: check_prometheus(doc, deploy / "prometheus/prometheus.yml", report),
        "collector": lambda: check_collector(deploy / "otel/collector.yaml", report),
        "Grafana": lambda: check_grafana(deploy, root / "crates", report),
    }
    for what, check in checks.items():
        try:
            errors += check()
        except (CheckError, OSError, AttributeError, TypeError, ValueError) as e:
            errors.append(f"{what} check could not run: {e}")
    return errors, report


# ---------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------

FAKE_HELP = {
    "registry": ["--store", "--data-dir", "--grpc-addr", "--jwt-secret-file", "--log",
                 "--kafka-partitions", "--metrics-addr"],
    "ingest": ["--http-addr", "--mqtt-addr", "--registry-url", "--jwt-secret-file", "--log",
               "--kafka-partitions", "--metrics-addr"],
    "processor": ["--store", "--group", "--jwt-secret-file", "--log", "--kafka-partitions",
                  "--metrics-addr"],
    "query": ["--store", "--grpc-addr", "--registry-url", "--jwt-secret-file", "--log",
              "--kafka-partitions", "--metrics-addr"],
}
FAKE_ENV = {"--store": "TRIBUTARY_STORE", "--data-dir": "TRIBUTARY_DATA_DIR",
            "--grpc-addr": "TRIBUTARY_GRPC_ADDR", "--jwt-secret-file": "TRIBUTARY_JWT_SECRET_FILE",
            "--log": "TRIBUTARY_LOG_URL", "--kafka-partitions": "TRIBUTARY_KAFKA_PARTITIONS",
            "--metrics-addr": "TRIBUTARY_METRICS_ADDR", "--http-addr": "TRIBUTARY_HTTP_ADDR",
            "--mqtt-addr": "TRIBUTARY_MQTT_ADDR", "--registry-url": "TRIBUTARY_REGISTRY_URL",
            "--group": "TRIBUTARY_PROCESSOR_GROUP"}

# A stand-in for the binary: clap-shaped help, and clap's refusal of an
# unknown option.
FAKE_BIN = r'''#!/usr/bin/env python3
import json, sys
helps = json.load(open(sys.argv[0] + ".json"))
args = sys.argv[1:]
if not args or args[0] not in helps:
    sys.exit("error: unrecognized subcommand")
known = helps[args[0]]["flags"]
for a in args[1:]:
    if a.startswith("--") and a.split("=")[0] not in known + ["--help"]:
        sys.stderr.write("error: unexpected argument '%s' found\n" % a.split("=")[0])
        sys.exit(2)
print(helps[args[0]]["text"])
'''


def _fake_help_text(sub: str) -> str:
    lines = [f"Run the {sub} service", "", f"Usage: tributary {sub} [OPTIONS]", "", "Options:"]
    for flag in FAKE_HELP[sub]:
        # clap's descriptions mention other flags; those are not options.
        lines += [f"      {flag} <VALUE>", "          A setting (see also --tls-cert)", "",
                  f"          [env: {FAKE_ENV[flag]}=]", ""]
    lines += ["  -h, --help", "          Print help"]
    return "\n".join(lines)


def _tributary(sub: str, words: list[str], env: dict, ports: list[str]) -> dict:
    return {
        "build": ".", "image": "tributary:local", "command": [sub, *words], "environment": env,
        "ports": ports,
        "healthcheck": {"test": ["CMD", "busybox", "wget", "-q", "-O", "/dev/null",
                                 "http://127.0.0.1:9100/readyz"], "timeout": "3s"},
    }


def _write_fixture(root: Path) -> None:
    common = {"TRIBUTARY_LOG_URL": "kafka://kafka:9092", "TRIBUTARY_METRICS_ADDR": "0.0.0.0:9100"}
    store = {"TRIBUTARY_STORE": "scylla://scylla:9042/t?rf=1&replication=simple"}
    doc = {
        "name": "fixture",
        "services": {
            "kafka": {"image": "apache/kafka:3.9.0"},
            "registry": _tributary("registry", ["--grpc-addr=0.0.0.0:50052"], {**common, **store},
                                   ["50052:50052", "9101:9100"]),
            "ingest": _tributary("ingest", ["--http-addr=0.0.0.0:8080"],
                                 {**common, "TRIBUTARY_REGISTRY_URL": "http://registry:50052"},
                                 ["8080:8080", "9102:9100"]),
            "processor": _tributary("processor", ["--group", "g"], {**common, **store}, []),
            "query": _tributary("query", [], {**common, **store}, ["50051:50051"]),
            "prometheus": {"image": "prom/prometheus",
                           "volumes": ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]},
        },
    }
    (root / "docker-compose.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "Dockerfile").write_text("FROM scratch\nEXPOSE 8080 \\\n  50051 50052\nEXPOSE 9100/tcp\n")
    d = root / "deploy"
    (d / "prometheus").mkdir(parents=True)
    (d / "prometheus/prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": [
        {"job_name": "t", "static_configs": [
            {"targets": [f"{s}:9100" for s in EXPECTED_SUBCOMMANDS]}]}]}))
    (d / "otel").mkdir()
    (d / "otel/collector.yaml").write_text(yaml.safe_dump({
        "receivers": {"otlp": {}}, "processors": {"batch": {}}, "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["debug"]}}}}))
    (d / "grafana/provisioning/datasources").mkdir(parents=True)
    (d / "grafana/provisioning/datasources/p.yml").write_text(yaml.safe_dump(
        {"apiVersion": 1, "datasources": [{"name": "P", "uid": "prom", "type": "prometheus"}]}))
    (d / "grafana/dashboards").mkdir()
    (d / "grafana/dashboards/d.json").write_text(json.dumps({"panels": [{
        "title": "acked", "datasource": {"type": "prometheus", "uid": "prom"},
        "targets": [{"expr": "sum(rate(tributary_ingest_points_acked_total[1m]))"}]}]}))
    (root / "crates/ingest/src").mkdir(parents=True)
    (root / "crates/ingest/src/metrics.rs").write_text(
        'let r = registry.sub_registry_with_prefix("tributary_ingest");\n'
        'r.register(\n    "points_acked",\n    "help",\n    m.acked.clone(),\n);\n')
    fake = root / "fake-tributary"
    fake.write_text(FAKE_BIN)
    fake.chmod(0o755)
    Path(str(fake) + ".json").write_text(json.dumps(
        {s: {"flags": f, "text": _fake_help_text(s)} for s, f in FAKE_HELP.items()}))


def _edit_yaml(path: Path, edit) -> None:
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _edit_compose(root: Path, edit) -> None:
    _edit_yaml(root / "docker-compose.yml", edit)


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise CheckError(f"self-test: {path} no longer contains {old!r}; update the self-test")
    path.write_text(text.replace(old, new, 1))


def _svc(doc: dict, name: str) -> dict:
    return doc["services"][name]


def _add_env(doc: dict, name: str, key: str, value: str) -> None:
    env = _svc(doc, name).setdefault("environment", {})
    if isinstance(env, list):
        env.append(f"{key}={value}")
    else:
        env[key] = value


def _command(doc: dict, name: str) -> list:
    svc = _svc(doc, name)
    svc["command"] = command_words(svc)
    return svc["command"]


# (name, how to break a copy, text the errors must contain)
COMMON_CASES = [
    ("unknown flag", lambda r: _edit_compose(r, lambda d: _command(d, "ingest").append("--no-such-flag=1")),
     ["service ingest", "--no-such-flag"]),
    ("flag of another subcommand", lambda r: _edit_compose(
        r, lambda d: _command(d, "registry").append("--registry-url=http://x:1")),
     ["service registry", "--registry-url"]),
    ("unknown environment variable", lambda r: _edit_compose(
        r, lambda d: _add_env(d, "processor", "TRIBUTARY_NO_SUCH_SETTING", "1")),
     ["service processor", "TRIBUTARY_NO_SUCH_SETTING"]),
    ("environment variable of another subcommand", lambda r: _edit_compose(
        r, lambda d: _add_env(d, "registry", "TRIBUTARY_REGISTRY_URL", "http://registry:50052")),
     ["service registry", "TRIBUTARY_REGISTRY_URL"]),
    ("key the Compose Specification does not have", lambda r: _edit_compose(
        r, lambda d: _svc(d, "query").update(restart_policy="always")),
     ["services.query", "restart_policy"]),
    ("wrong type for a Compose key", lambda r: _edit_compose(
        r, lambda d: _svc(d, "query").update(depends_on={"registry": {"condition": "healthy"}})),
     ["services.query.depends_on", "healthy"]),
    ("published port the image does not expose", lambda r: _edit_compose(
        r, lambda d: _svc(d, "ingest").setdefault("ports", []).append("18830:18830")),
     ["service ingest", "18830"]),
    ("subcommand without a service", lambda r: _edit_compose(
        r, lambda d: d["services"].pop("processor")),
     ["runs no service for: processor"]),
    ("healthcheck off the metrics port", lambda r: _edit_compose(
        r, lambda d: _add_env(d, "query", "TRIBUTARY_METRICS_ADDR", "0.0.0.0:9200")),
     ["service query: healthcheck", "9200"]),
    ("Tributary service Prometheus does not scrape", lambda r: _edit_text(
        r / "deploy/prometheus/prometheus.yml", "query:9100", "queryy:9100"),
     ["no scrape target query:9100"]),
    ("collector pipeline with an undefined exporter", lambda r: _edit_yaml(
        r / "deploy/otel/collector.yaml",
        lambda c: next(iter(c["service"]["pipelines"].values()))["exporters"].append("no_such_exporter")),
     ["no_such_exporter"]),
    ("dashboard metric no crate registers", lambda r: _edit_text(
        next(p for p in sorted((r / "deploy/grafana/dashboards").glob("*.json"))
             if "tributary_ingest_points_acked_total" in p.read_text()),
        "tributary_ingest_points_acked_total", "tributary_ingest_points_akced_total"),
     ["tributary_ingest_points_akced_total"]),
    ("missing bind-mount source", lambda r: _edit_compose(
        r, lambda d: _svc(d, "prometheus").update(
            volumes=["./deploy/prometheus/missing.yml:/etc/prometheus/prometheus.yml:ro"])),
     ["bind mount source ./deploy/prometheus/missing.yml"]),
]

# The fake's help mentions --tls-cert in descriptions only; the real ingest
# has the option.
FIXTURE_ONLY_CASES = [
    ("flag only mentioned in another option's help", lambda r: _edit_compose(
        r, lambda d: _command(d, "ingest").append("--tls-cert=/x.pem")),
     ["service ingest", "--tls-cert"]),
]

REAL_ONLY_CASES = [
    ("value clap refuses", lambda r: _edit_compose(
        r, lambda d: _svc(d, "ingest").update(command=[
            "--http-addr=not-an-address" if w.startswith("--http-addr=") else w
            for w in _command(d, "ingest")])),
     ["service ingest", "refused", "not-an-address"]),
]


def _copy_real(dest: Path) -> None:
    for f in ("docker-compose.yml", "Dockerfile"):
        shutil.copy2(REPO / f, dest / f)
    shutil.copytree(REPO / "deploy", dest / "deploy")
    (dest / "crates").symlink_to(REPO / "crates")


def _binary_runs(binary: str) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, timeout=HELP_TIMEOUT_S).returncode == 0
    except OSError:
        return False


def self_test(binary: str, schema: dict, label: str) -> int:
    suites = [("fixture with a fake tributary", _write_fixture, None, COMMON_CASES + FIXTURE_ONLY_CASES)]
    if _binary_runs(binary):
        suites.append((f"copy of the real files with {binary}", _copy_real, binary,
                       COMMON_CASES + REAL_ONLY_CASES))
    else:
        print(f"SKIPPED: self-test on a copy of the real files ({binary} does not run; "
              f"build it: cargo build -p tributary)")
    ran, failures = 0, []
    for suite, make, real_bin, cases in suites:
        for case, breakage, expected in [("unbroken", None, [])] + cases:
            ran += 1
            with tempfile.TemporaryDirectory(prefix="check-compose-") as tmp:
                root = Path(tmp)
                make(root)
                bin_path = real_bin or str(root / "fake-tributary")
                try:
                    if breakage:
                        breakage(root)
                except (CheckError, KeyError, StopIteration, OSError) as e:
                    failures.append(f"[{suite}] {case}: cannot break the copy this way "
                                    f"({type(e).__name__}: {e}); update the self-test")
                    continue
                try:
                    errors, _ = check_all(root, bin_path, schema, label)
                except CheckError as e:
                    errors = [f"(check could not run) {e}"]
            joined = "\n".join(errors)
            if breakage is None and errors:
                failures.append(f"[{suite}] {case}: expected no error, got:\n    " + joined.replace("\n", "\n    "))
            elif breakage is not None and not any(all(x in e for x in expected) for e in errors):
                failures.append(f"[{suite}] {case}: expected an error containing {expected}, got:\n    "
                                + (joined.replace("\n", "\n    ") or "(no error)"))
            elif breakage is None:
                print(f"ok: self-test [{suite}] {case}: no error")
            else:
                hit = next(e for e in errors if all(x in e for x in expected))
                more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
                print(f"ok: self-test [{suite}] {case}: caught: {hit}{more}")
    for f in failures:
        print(f"FAIL: self-test {f}", file=sys.stderr)
    print(f"check_compose self-test: {ran - len(failures)} of {ran} cases behaved as expected")
    return 1 if failures else 0


# ---------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", nargs="?", default=DEFAULT_BIN,
                    help=f"the tributary binary whose --help is the reference (default {DEFAULT_BIN})")
    ap.add_argument("--root", type=Path, default=REPO,
                    help="directory holding docker-compose.yml, Dockerfile, deploy/ and crates/")
    ap.add_argument("--schema-cache", type=Path, default=DEFAULT_CACHE,
                    help="where the Compose schema is cached (default target/deploy-check)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checker against deliberately broken copies")
    args = ap.parse_args()
    binary = args.binary
    if os.sep in binary and not Path(binary).exists() and (REPO / binary).exists():
        binary = str(REPO / binary)  # relative to the repository, not the cwd
    try:
        schema, label = load_schema(args.schema_cache)
        if args.self_test:
            return self_test(binary, schema, label)
        errors, report = check_all(args.root, binary, schema, label)
    except CheckError as e:
        print(f"check_compose: {e}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if errors:
        print(f"check_compose: {len(errors)} problem(s) in the deployment files", file=sys.stderr)
        return 1
    print(f"check_compose: docker-compose.yml, Dockerfile and deploy/ are consistent with {binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
