"""What the infra tests look at: the overlays as kubectl renders them, the CRDs they
are validated against, and small helpers over the rendered objects."""

import functools
import os
import re
import shutil
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "infra", "k8s")
SCHEMAS = os.path.join(ROOT, "infra", "schemas")
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ["dev", "prod", "prod-gateway"]
APPS = ["auth", "tickets", "orders", "payments", "expiration", "client"]
BIN = os.path.dirname(os.path.abspath(__import__("sys").executable))


def read(path):
    with open(path) as file:
        return file.read()


def tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


@functools.cache
def render(overlay):
    """The objects of an overlay, as `kubectl kustomize` renders them."""
    out = subprocess.run(
        [tool("kubectl"), "kustomize", os.path.join(K8S, "overlays", overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


@functools.cache
def crd_schema(path, kind):
    crd = yaml.safe_load(read(os.path.join(SCHEMAS, path)))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return crd["spec"]["group"] + "/" + version["name"], python_patterns(version["schema"]["openAPIV3Schema"])


def python_patterns(schema):
    """The schema with its patterns in Python's dialect: Go's RE2 takes flags such as
    `(?i)` after `^` (prometheus-operator writes `^(?i)(abort|warn)?$`), Python only at
    the start."""
    if isinstance(schema, dict):
        return {
            key: (re.sub(r"^\^\((\?[a-z]+)\)", r"(\1)^", value) if key == "pattern" and isinstance(value, str)
                  else python_patterns(value))
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [python_patterns(item) for item in schema]
    return schema


def unknown_fields(value, schema, path="$"):
    """Fields a CRD schema does not know (the API server would prune them silently)."""
    problems = []
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        if properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, item in value.items():
                if key in properties:
                    problems += unknown_fields(item, properties[key], f"{path}.{key}")
                elif not schema.get("additionalProperties") and path != "$":
                    problems.append(f"{path}.{key}")
                elif path == "$" and key not in ("apiVersion", "kind", "metadata"):
                    problems.append(f"{path}.{key}")
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                problems += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return problems


CRDS = {
    "Gateway": "gateway-api-v1.6.1/gateways.yaml",
    "HTTPRoute": "gateway-api-v1.6.1/httproutes.yaml",
    "Cluster": "cloudnative-pg-v1.30.0/clusters.yaml",
    "ScheduledBackup": "cloudnative-pg-v1.30.0/scheduledbackups.yaml",
    "PodMonitor": "prometheus-operator-v0.93.0/podmonitors.yaml",
    "PrometheusRule": "prometheus-operator-v0.93.0/prometheusrules.yaml",
}
