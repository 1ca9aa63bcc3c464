"""The cluster's containers, read from the rendered prod overlay.

Each service container takes its environment, arguments, user, read-only root
filesystem, dropped capabilities, memory and CPU limits, volumes, ports, probes,
preStop hook and termination grace from its rendered Deployment (or StatefulSet); each
database pair from its CloudNativePG Cluster. What podman cannot express is translated,
and every translation and omission is listed in TRANSLATIONS (`scripts/cluster
translations` prints it; docs/cluster.md explains it).
"""

import functools
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

import yaml

from . import images
from .paths import ROOT, state

NETWORK = "ticketing"
SERVICES = ["auth", "tickets", "orders", "payments", "expiration", "client"]
DATABASES = ["auth", "tickets", "orders", "payments", "expiration"]
# The HTTP services the ingress routes to or other services call (a Service each).
HTTP_SERVICES = ["auth", "tickets", "orders", "payments", "expiration", "client"]
NATS_NODES = 3
# Two replicas of each service: the autoscalers' minimum (expiration: its replicas).
REPLICAS = 2
DB_INSTANCES = ["1", "2"]
STANDIN = "stripe-standin"
STANDIN_KEY = "sk_test_local_standin"

# Settings a user may pass to `make cluster`, handed to every service as `make up`
# hands them (they override what the ConfigMap and Secrets say).
SETTINGS = [
    "JWT_KEY", "EXPIRATION_WINDOW_SECONDS", "RATE_LIMITS", "MAX_ACTIVE_ORDERS_PER_USER",
    "STRIPE_KEY", "STRIPE_API_BASE",
    "STRIPE_PUBLISHABLE_KEY", "SESSION_TTL_SECONDS", "SHUTDOWN_GRACE_SECONDS",
    "CHARGE_RECONCILE_AFTER_SECONDS", "STRIPE_TIMEOUT_SECONDS", "RUST_LOG", "LOG_FORMAT",
    "EVENT_ACK_WAIT_SECONDS", "EVENT_MAX_FAILURES", "OTEL_EXPORTER_OTLP_ENDPOINT",
]

TRANSLATIONS = [
    ("images", "the services' images are `make images`'s (the Dockerfile's runtime stage, "
     "assembled from this machine's files); NATS runs the stack's nats-server instead of "
     "nats:*-alpine; PostgreSQL is Debian's 15 instead of CloudNativePG's catalog image "
     "(17), as no image can be pulled here"),
    ("Services", "a Service of an HTTP app is a name on the ingress container, whose nginx "
     "sends it to the replicas whose readiness probe passes (what kube-proxy does with a "
     "Service's ready endpoints); `nats` and `nats-headless` are names on every NATS node "
     "(DNS round robin; a NATS client learns the other nodes from the server), "
     "`nats-N.nats-headless` the name of node N; `<db>-rw` is a name on the current "
     "primary, moved on a failover"),
    ("secrets", "generated into .cluster/secrets.json as an operator or CloudNativePG "
     "would create them: JWT_KEY (random unless passed), the databases' app secrets "
     "(uri to <db>-rw) and CAs, the NATS users' passwords (nats-credentials) and the bus "
     "CA and certificate (nats-tls, made with openssl where cert-manager issues them); "
     "STRIPE_KEY is the stand-in's unless passed"),
    ("Stripe", "STRIPE_API_BASE is the stand-in (stripe-standin, from the dev overlay) "
     "unless STRIPE_KEY is passed, as with `make up`"),
    ("TLS", "COOKIE_SECURE is false: the ingress answers plain HTTP on localhost (the "
     "prod Ingress's TLS and host are the cluster's); the services' TLS to PostgreSQL "
     "is kept (verify-full against each database's CA), and so is TLS to NATS (tls://, "
     "checked against the bus CA) and between its nodes; NATS also lets this machine's "
     "tools (the load generator, the checker) connect without TLS, by container address, "
     "which no certificate names (allow_non_tls)"),
    ("traces", "OTEL_EXPORTER_OTLP_ENDPOINT (the prod overlay's collector, in the "
     "namespace monitoring) is left out unless passed: no collector runs here, and the "
     "services then export nothing"),
    ("probes", "run by the harness's supervisor from the host (podman's health checks "
     "need systemd): startup, then readiness (the ingress's rotation) and liveness "
     "(a restart), with the manifests' paths, periods, timeouts and thresholds"),
    ("restarts", "the supervisor restarts an exited container (immediately, then after "
     "10 s doubling to 5 min, as a kubelet backs off) unless a fault holds it"),
    ("volumes", "PersistentVolumeClaims are directories under .cluster/volumes, owned by "
     "the pod's user (fsGroup); emptyDir is a directory there too, emptied for a new pod; ConfigMap and Secret volumes are "
     "files written under .cluster"),
    ("databases", "each CloudNativePG Cluster is two instances (the issue's primary and "
     "synchronous standby; the manifest asks for 3), with the stanza's synchronous "
     "replication (ANY 1, dataDurability required: a commit waits for the standby); the "
     "harness does the operator's part (initdb, base backup, failover, pg_rewind)"),
    ("ingress", "nginx with the rendered Ingress's routes, rewritten and reloaded when a "
     "replica enters or leaves the rotation (ingress-nginx changes endpoints without a "
     "reload); it keeps no idle client connections, which a reload would close under a "
     "request"),
    ("left out", "HorizontalPodAutoscalers (replicas fixed at their minimum), "
     "PodDisruptionBudgets (the rolling restart takes one replica at a time), "
     "NetworkPolicies (podman enforces none; make infra-tests evaluates them), topology "
     "spread and affinity (one host), resource requests (no scheduler), the "
     "ServiceAccount token (none is mounted anyway), seccomp RuntimeDefault (podman's "
     "default profile), the Ingress's TLS and annotations, CloudNativePG backups"),
]


@functools.cache
def render(overlay):
    """The objects of an overlay, as `kubectl kustomize` renders them."""
    kubectl = os.path.join(ROOT, ".stack", "venv", "bin", "kubectl")
    kubectl = kubectl if os.path.exists(kubectl) else shutil.which("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", os.path.join(ROOT, "infra", "k8s", "overlays", overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects, kind, name):
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"no {kind} {name} in the rendered overlay")


@dataclass
class Probe:
    path: str
    port: int
    period: float = 10
    timeout: float = 1
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0


@dataclass
class Spec:
    """One container, as `podman create` is given it."""
    name: str
    app: str
    role: str  # service, nats, database, ingress or standin
    image: str
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    user: str | None = None
    read_only: bool = False
    cap_drop: list = field(default_factory=list)
    no_new_privileges: bool = False
    memory: str | None = None
    cpus: str | None = None
    aliases: list = field(default_factory=list)
    mounts: list = field(default_factory=list)  # (host path, container path, read-only)
    empty_dirs: list = field(default_factory=list)  # host paths of emptyDir volumes
    tmpfs: list = field(default_factory=list)  # (container path, options)
    ports: dict = field(default_factory=dict)  # name to container port
    probes: dict = field(default_factory=dict)  # startup, readiness, liveness
    pre_stop: dict | None = None  # {"sleep": s} or {"exec": [...]}
    grace: int = 30
    publish: list = field(default_factory=list)

    def digest(self):
        """Changes whenever anything `podman create` is given changes."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def create_args(self):
        args = [
            "--name", self.name, "--hostname", self.name,
            "--label", f"io.ticketing.cluster={self.role}",
            "--label", f"io.ticketing.app={self.app}",
            "--label", f"io.ticketing.spec={self.digest()}",
            "--network", NETWORK,
            # Containers are kept: a stopped one comes back with `podman start`.
            "--restart", "no",
            "--stop-timeout", str(self.grace),
            "--log-opt", "max-size=20mb",
        ]
        for alias in [self.name, *self.aliases]:
            args += ["--network-alias", alias]
        if self.user:
            args += ["--user", self.user]
        if self.read_only:
            # Kubernetes mounts no /tmp, /run or /var/tmp of its own.
            args += ["--read-only", "--read-only-tmpfs=false"]
        for capability in self.cap_drop:
            args += ["--cap-drop", capability]
        if self.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if self.memory:
            args += ["--memory", self.memory, "--memory-swap", self.memory]
        if self.cpus:
            args += ["--cpus", self.cpus]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        for host, inside, read_only in self.mounts:
            args += ["--volume", f"{host}:{inside}:{'ro' if read_only else 'rw'}"]
        for inside, options in self.tmpfs:
            args += ["--tmpfs", f"{inside}:{options}"]
        for mapping in self.publish:
            args += ["--publish", mapping]
        return [*args, self.image, *self.args]


def quantity_memory(value):
    """A Kubernetes memory quantity as podman's (binary units)."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if value.endswith(suffix):
            return value[: -len(suffix)] + unit
    return value


def quantity_cpu(value):
    value = str(value)
    return str(int(value[:-1]) / 1000) if value.endswith("m") else value


# What `make cluster` adds to the prod NATS configuration: the tools on this machine
# (the load generator, the invariant checker) reach the nodes by container address,
# which no certificate can name, so they may connect without TLS, as the admin user.
# The services connect with TLS (tls://, NATS_CA_FILE) as in prod.
NATS_HOST_TOOLS = (
    "# make cluster only: this machine's tools reach the nodes by container address,\n"
    "# which the certificate does not name; they connect without TLS. Services use TLS.\n"
    "allow_non_tls: true\n"
)


class Sources:
    """Where containers' settings come from: the rendered ConfigMaps, the generated
    Secrets, the settings passed to `make cluster`."""

    def __init__(self, objects, secrets, settings):
        self.config_maps = {o["metadata"]["name"]: dict(o.get("data", {}))
                            for o in objects if o["kind"] == "ConfigMap"}
        for name, data in self.config_maps.items():
            if name.startswith("nats-config") and "nats.conf" in data:
                data["nats.conf"] += NATS_HOST_TOOLS
        self.secrets = secrets
        self.settings = settings

    def secret(self, name):
        """A Secret by name; a generated one's name carries kustomize's hash."""
        if name in self.secrets:
            return self.secrets[name]
        base, _, suffix = name.rpartition("-")
        return self.secrets.get(base, {}) if len(suffix) == 10 else {}

    def value(self, variable, pod_name):
        if "value" in variable:
            return str(variable["value"])
        source = variable["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = self.config_maps[ref["name"]]
            if ref["key"] not in data and ref.get("optional"):
                return None
            return str(data[ref["key"]])
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = self.secret(ref["name"])
            if ref["key"] not in secret and ref.get("optional"):
                return None
            return str(secret[ref["key"]])
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                return pod_name
            if path == "metadata.namespace":
                return "ticketing"
        raise ValueError(f"cannot translate {variable['name']}: {source}")


def probe(spec, ports):
    if not spec:
        return None
    get = spec["httpGet"]
    port = get["port"]
    return Probe(
        path=get["path"],
        port=ports[port] if isinstance(port, str) else int(port),
        period=spec.get("periodSeconds", 10),
        timeout=spec.get("timeoutSeconds", 1),
        failure_threshold=spec.get("failureThreshold", 3),
        success_threshold=spec.get("successThreshold", 1),
        initial_delay=spec.get("initialDelaySeconds", 0),
    )


def from_pod(workload, pod_name, role, sources, image):
    """A container spec from a Deployment's or StatefulSet's pod template."""
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    env = {}
    for variable in container.get("env", []):
        value = sources.value(variable, pod_name)
        if value is not None:
            env[variable["name"]] = value
    spec = Spec(
        name=pod_name,
        app=workload["metadata"]["name"],
        role=role,
        image=image,
        args=list(container.get("command", [])[1:]) + list(container.get("args", [])),
        env=env,
        user=f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"
        if "runAsUser" in security else None,
        read_only=bool(security.get("readOnlyRootFilesystem")),
        cap_drop=list(security.get("capabilities", {}).get("drop", [])),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        memory=quantity_memory(container["resources"]["limits"]["memory"]),
        cpus=quantity_cpu(container["resources"]["limits"]["cpu"]),
        ports=ports,
        probes={kind: probe(container.get(f"{kind}Probe"), ports)
                for kind in ("startup", "readiness", "liveness") if container.get(f"{kind}Probe")},
        pre_stop=translate_pre_stop(container.get("lifecycle", {}).get("preStop")),
        grace=pod.get("terminationGracePeriodSeconds", 30),
    )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
    uid = security.get("fsGroup", security.get("runAsUser", 0))
    for mount in container.get("volumeMounts", []):
        inside, name = mount["mountPath"], mount["name"]
        if name in claims:
            host = state("volumes", pod_name, name)
            os.makedirs(host, exist_ok=True)
            os.chown(host, uid, uid)
            spec.mounts.append((host, inside, False))
            continue
        volume = volumes[name]
        if "emptyDir" in volume:
            # On the node's disk, as an emptyDir without `medium: Memory` is: it
            # outlives a restart of the container, not the pod (replace() empties it).
            host = state("volumes", pod_name, name)
            os.makedirs(host, exist_ok=True)
            os.chmod(host, 0o777)
            spec.mounts.append((host, inside, False))
            spec.empty_dirs.append(host)
        elif "configMap" in volume:
            data = sources.config_maps[volume["configMap"]["name"]]
            spec.mounts.append((write_files(("configmaps", volume["configMap"]["name"]), data), inside, True))
        elif "secret" in volume:
            secret = sources.secret(volume["secret"]["secretName"])
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in secret]
            data = {item["path"]: secret[item["key"]] for item in items}
            # A directory per pod, as a kubelet mounts a volume per pod: pods of other
            # users (groups) and other items of the same Secret never share files.
            where = ("secrets", pod_name, volume["secret"]["secretName"])
            spec.mounts.append((write_files(where, data, uid), inside, True))
        else:
            raise ValueError(f"cannot translate volume {name} of {pod_name}")
    return spec


def translate_pre_stop(hook):
    if not hook:
        return None
    if "sleep" in hook:
        return {"sleep": hook["sleep"]["seconds"]}
    if "exec" in hook:
        return {"exec": hook["exec"]["command"]}
    raise ValueError(f"cannot translate preStop {hook}")


def write_files(where, data, group=None):
    """A ConfigMap's or Secret's keys as the files of a directory (what a volume of it
    holds): readable by all, or for a Secret by root and the pod's group (fsGroup)."""
    directory = state(*where)
    os.makedirs(directory, exist_ok=True)
    for key, value in data.items():
        path = os.path.join(directory, key)
        with open(path, "w") as file:
            file.write(value)
        os.chmod(path, 0o644 if group is None else 0o440)
        os.chown(path, 0, group or 0)
    return directory


def settings_from(environ):
    return {k: environ[k] for k in SETTINGS if environ.get(k)}


def service_specs(sources):
    """The services' replicas, the NATS nodes and the stand-in."""
    prod = render("prod")
    specs = []
    for app in SERVICES:
        deployment = find(prod, "Deployment", app)
        for replica in range(REPLICAS):
            spec = from_pod(deployment, f"{app}-{replica}", "service", sources,
                            f"localhost/{images.image_name(app)}:latest")
            translate_service_env(spec, sources.settings)
            specs.append(spec)
    nats = find(prod, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == NATS_NODES
    for node in range(NATS_NODES):
        spec = from_pod(nats, f"nats-{node}", "nats", sources, f"localhost/{images.NATS_IMAGE}:latest")
        spec.aliases = ["nats", "nats-headless", f"nats-{node}.nats-headless"]
        specs.append(spec)
    standin = from_pod(find(render("dev"), "Deployment", STANDIN), STANDIN, "standin", sources,
                       f"localhost/{images.image_name(STANDIN)}:latest")
    specs.append(standin)
    return specs


def translate_service_env(spec, settings):
    env = spec.env
    if "COOKIE_SECURE" in env:
        env["COOKIE_SECURE"] = "false"
    if "STRIPE_API_BASE" in env and "STRIPE_KEY" not in settings:
        env["STRIPE_API_BASE"] = f"http://{STANDIN}:3000"
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(settings)
