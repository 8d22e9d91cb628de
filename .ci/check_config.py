#!/usr/bin/env python3
"""Static checks of the stack's configuration files (no Docker engine or Grafana runs here):
every YAML and JSON file parses, every dashboard panel has a description, a provisioned
datasource and a query, and every path docker-compose.yml and the Dockerfile copy or mount
exists. Panel SQL is run against a real server by server/tests/it/example.rs."""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def load_yaml(path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        errors.append(f"{path.relative_to(ROOT)}: invalid YAML: {e}")
        return None


yaml_files = [ROOT / "docker-compose.yml", *sorted((ROOT / "grafana").rglob("*.yml")),
              *sorted((ROOT / "prometheus").glob("*.yml"))]
docs = {p: load_yaml(p) for p in yaml_files}

# Grafana: datasources provisioned, dashboards well formed.
provisioned = set()
for path, doc in docs.items():
    if doc and "datasources" in doc:
        provisioned |= {d["uid"] for d in doc["datasources"]}
if not provisioned:
    errors.append("grafana/provisioning: no datasources")
dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
if len(dashboards) < 2:
    errors.append("grafana/dashboards: expected the financial and the operations dashboards")
for path in dashboards:
    name = path.relative_to(ROOT)
    try:
        board = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        errors.append(f"{name}: invalid JSON: {e}")
        continue
    uids = [board.get("uid")]
    for panel in board.get("panels", []):
        title = panel.get("title", "?")
        if not panel.get("description", "").strip():
            errors.append(f"{name}: panel {title!r} has no description")
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid not in provisioned:
                errors.append(f"{name}: panel {title!r} uses datasource {uid!r}, not provisioned")
            if not (target.get("rawSql") or target.get("expr")):
                errors.append(f"{name}: panel {title!r} has a target without a query")
        if not panel.get("targets"):
            errors.append(f"{name}: panel {title!r} has no query")
    for variable in board.get("templating", {}).get("list", []):
        uid = (variable.get("datasource") or {}).get("uid")
        if variable.get("type") == "query" and uid not in provisioned:
            errors.append(f"{name}: variable {variable.get('name')!r} uses {uid!r}")

# docker-compose.yml: mounted host paths and the build context exist.
compose = docs.get(ROOT / "docker-compose.yml") or {}
for service, spec in (compose.get("services") or {}).items():
    for volume in spec.get("volumes", []):
        host = volume.split(":")[0]
        if host.startswith(".") and not (ROOT / host).exists():
            errors.append(f"docker-compose.yml: {service} mounts missing {host}")
    build = spec.get("build")
    if build and not (ROOT / build / "Dockerfile").exists():
        errors.append(f"docker-compose.yml: {service} builds {build} without a Dockerfile")
    command = " ".join(spec.get("command", []))
    for config in re.findall(r"/etc/prometheus/([\w.]+)", command):
        if not (ROOT / "prometheus" / config).exists():
            errors.append(f"docker-compose.yml: {service} reads missing prometheus/{config}")

# Dockerfile: what it copies from the repository exists.
for line in (ROOT / "Dockerfile").read_text().splitlines():
    parts = line.split()
    if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
        for source in parts[1:-1]:
            if source != "." and not (ROOT / source).exists():
                errors.append(f"Dockerfile: COPY of missing {source}")

for e in errors:
    print(f"error: {e}", file=sys.stderr)
print(f"checked {len(yaml_files)} YAML files and {len(dashboards)} dashboards: "
      f"{'ok' if not errors else f'{len(errors)} problems'}")
sys.exit(1 if errors else 0)
