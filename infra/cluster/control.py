"""`make cluster`, `make cluster-down`, `make cluster-status`: the cluster's whole
life, and where its parts answer (for the chaos runner and the invariant checker)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from . import containers, images, ingress, podman, postgres, secrets, supervisor, topology
from .paths import ROOT, STATE, state

SETTINGS_FILE = state("settings.json")
PACKAGES = {"podman": "podman", "buildah": "buildah", "runc": "runc", "iptables": "iptables",
            "openssl": "openssl", "nsenter": "util-linux"}
NETWORKING = {"netavark": "/usr/lib/podman/netavark", "aardvark-dns": "/usr/lib/podman/aardvark-dns"}


def log(message):
    print(f"\033[1m[cluster]\033[0m {message}", file=sys.stderr, flush=True)


def cluster_port():
    return int(os.environ.get("CLUSTER_PORT", "8090"))


def install():
    """What the cluster needs and a fresh Debian machine lacks."""
    missing = {package for program, package in PACKAGES.items() if not shutil.which(program)}
    # podman's network backend and its DNS, which `--no-install-recommends` leaves out.
    missing |= {package for package, path in NETWORKING.items() if not os.path.exists(path)}
    missing = sorted(missing)
    if missing:
        log(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    podman.install_drop_in()
    subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "install"], check=True)


# --- specs ------------------------------------------------------------------------

def saved_settings():
    try:
        with open(SETTINGS_FILE) as file:
            return json.load(file)
    except FileNotFoundError:
        return {}


def save_settings(settings):
    os.makedirs(STATE, exist_ok=True)
    with open(os.open(SETTINGS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        json.dump(settings, file, indent=1)


def specs(settings=None):
    """Every container of the cluster, from the rendered overlays and the settings
    `make cluster` was given (those saved by the last `make cluster` by default)."""
    settings = saved_settings() if settings is None else settings
    sources = topology.Sources(topology.render("prod") + topology.render("dev"),
                               secrets.all_secrets(settings), settings)
    found = topology.service_specs(sources)
    for app in topology.DATABASES:
        found += [postgres.spec(app, name) for name in postgres.instances(app)]
    found.append(ingress.spec(int(settings.get("CLUSTER_PORT", cluster_port()))))
    return found


def spec_of(name):
    for spec in specs():
        if spec.name == name:
            return spec
    raise KeyError(f"no container {name} in the cluster")


# --- up -----------------------------------------------------------------------------

def ensure_network():
    if not podman.ok("network", "exists", topology.NETWORK):
        podman.podman("network", "create", "--label", f"{podman.LABEL}=network", topology.NETWORK)


def ensure_database(app, by_name):
    first, second = postgres.primary(app), postgres.standby_of(app)
    if not os.path.exists(os.path.join(postgres.data_dir(first), "PG_VERSION")):
        log(f"{app}-db: initdb on {first}")
        postgres.initdb(app, first)
    containers.ensure(by_name[first], extra_aliases=[postgres.rw(app)], log=log)
    postgres.move_rw(app, first)
    postgres.wait_accepting(first)
    postgres.bootstrap(app)
    if not os.path.exists(os.path.join(postgres.data_dir(second), "PG_VERSION")):
        log(f"{app}-db: base backup for the standby {second}")
        postgres.base_backup(app, second)
    containers.ensure(by_name[second], log=log)


def nats_healthy(within=60):
    deadline = time.monotonic() + within
    nodes = [f"nats-{n}" for n in range(topology.NATS_NODES)]
    while time.monotonic() < deadline:
        found = podman.inspect(*nodes)
        healthy = 0
        for name in nodes:
            address = podman.address(found.get(name), topology.NETWORK)
            try:
                with urllib.request.urlopen(f"http://{address}:8222/healthz", timeout=2):
                    healthy += 1
            except OSError:
                pass
        if healthy == len(nodes):
            return
        time.sleep(0.5)
    raise podman.Failed(f"the NATS cluster is not healthy after {within} s")


def stop_supervisor():
    """SIGTERM to a running supervisor; SIGKILL if it has not stopped 5 s later."""
    pid = supervisor.running_pid()
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not supervisor.running_pid():
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def start_supervisor():
    stop_supervisor()
    os.makedirs(supervisor.RUN, exist_ok=True)
    log_file = open(supervisor.LOG, "a")
    subprocess.Popen(
        [sys.executable, "-m", "cluster", "supervise"],
        cwd=ROOT, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "infra")},
    )


def view():
    try:
        with open(supervisor.VIEW) as file:
            return json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# The supervisor rewrites its view twice a second; one older than this means it stopped.
VIEW_STALE_AFTER = 10


def wait_ready(names, within=240):
    deadline = time.monotonic() + within
    while True:
        current = view() or {"containers": {}}
        if "t" in current and time.time() - current["t"] > VIEW_STALE_AFTER:
            raise podman.Failed(f"the supervisor has not written its view for "
                                f"{time.time() - current['t']:.0f} s: it stopped (see {supervisor.LOG})")
        waiting = [n for n in names if not (current["containers"].get(n) or {}).get("ready")]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise podman.Failed(f"not ready after {within} s: {', '.join(waiting)} "
                                f"(see podman logs NAME, {supervisor.EVENTS})")
        time.sleep(0.5)


def up(build=True):
    install()
    if build:
        images.build_all(log)
    settings = {**topology.settings_from(os.environ), "CLUSTER_PORT": str(cluster_port())}
    save_settings(settings)
    ensure_network()
    all_specs = specs(settings)
    by_name = {spec.name: spec for spec in all_specs}
    for app in topology.DATABASES:
        ensure_database(app, by_name)
    for spec in all_specs:
        if spec.role == "nats":
            containers.ensure(spec, log=log)
    nats_healthy()
    ingress.write({service: [] for service in topology.HTTP_SERVICES})
    start_supervisor()
    for spec in all_specs:
        if spec.role in ("standin", "ingress"):
            containers.ensure(spec, log=log)
    for spec in all_specs:
        if spec.role == "service":
            containers.ensure(spec, log=log)
    probed = [s.name for s in all_specs if s.probes]
    log(f"waiting for {len(probed)} containers to be ready")
    wait_ready(probed)
    log(f"Ticketing's cluster is up: http://localhost:{cluster_port()}  "
        "(make cluster-status; make cluster-down)")


# --- down ---------------------------------------------------------------------------

def down(purge=False):
    if not shutil.which("podman"):
        log("nothing runs (podman is not installed)")
        return
    stop_supervisor()
    names = podman.ours()
    if names:
        log(f"removing {len(names)} containers")
        podman.podman("rm", "-f", "-t", "10", *names, timeout=120, check=False)
        # A container caught between states (a fault's SIGSTOP, a restart under way)
        # can refuse the first removal: once it has settled, the next one takes it.
        for _ in range(5):
            left = podman.ours()
            if not left:
                break
            time.sleep(1)
            podman.podman("rm", "-f", "-t", "0", *left, timeout=120, check=False)
        if podman.ours():
            raise podman.Failed(f"could not remove {', '.join(podman.ours())}")
    if podman.ok("network", "exists", topology.NETWORK):
        podman.podman("network", "rm", "-f", topology.NETWORK)
    shutil.rmtree(state("holds"), ignore_errors=True)
    if purge and os.path.exists(STATE):
        log(f"removing {STATE} (databases, NATS's store, secrets)")
        shutil.rmtree(STATE)
    log("stopped" if names else "nothing was running")


# --- where things answer ----------------------------------------------------------

def endpoints():
    """Addresses from the host, for the chaos runner and the checker."""
    all_specs = specs()
    found = podman.inspect(*[s.name for s in all_specs])
    address = lambda name: podman.address(found.get(name), topology.NETWORK)  # noqa: E731
    values = secrets.generated()
    databases = {}
    for app in topology.DATABASES:
        dbname, owner = secrets.database(app)
        host = address(postgres.primary(app))
        databases[app] = (f"postgres://{owner}:{values['apps'][app]}@{host}:5432/{dbname}"
                          "?sslmode=require")
    nats = [f"nats://{address(f'nats-{n}')}:4222" for n in range(topology.NATS_NODES)]
    return {
        "ingress": f"http://127.0.0.1:{saved_settings().get('CLUSTER_PORT', cluster_port())}",
        "databases": databases,
        "nats": nats,
        "nats_admin_password": values["nats"]["admin"],
        "nats_monitors": {f"nats-{n}": f"http://{address(f'nats-{n}')}:8222"
                          for n in range(topology.NATS_NODES)},
        "standbys": {app: (f"postgres://{secrets.database(app)[1]}:{values['apps'][app]}@"
                           f"{address(postgres.standby_of(app))}:5432/{secrets.database(app)[0]}"
                           "?sslmode=require")
                     for app in topology.DATABASES},
        "standin": f"http://{address(topology.STANDIN)}:3000",
        "primaries": {app: postgres.primary(app) for app in topology.DATABASES},
        "replicas": {s.name: {"app": s.app, "address": address(s.name), "ops": s.ports.get("ops")}
                     for s in all_specs if s.role == "service"},
    }


def stream_nodes():
    """Per NATS node: its health and what it holds of the stream."""
    nodes = {}
    for name, monitor in endpoints()["nats_monitors"].items():
        try:
            with urllib.request.urlopen(f"{monitor}/jsz?streams=true", timeout=2) as answer:
                jsz = json.load(answer)
            streams = [s for a in jsz.get("account_details", []) for s in a.get("stream_detail", [])]
            stream = next((s for s in streams if s["name"] == "TICKETING"), None)
            nodes[name] = {
                "leader": (stream or {}).get("cluster", {}).get("leader"),
                "last_seq": (stream or {}).get("state", {}).get("last_seq"),
                "messages": (stream or {}).get("state", {}).get("messages"),
                "meta_leader": jsz.get("meta_cluster", {}).get("leader"),
            }
        except (OSError, ValueError) as error:
            nodes[name] = {"error": str(error)}
    return nodes


def status():
    if not shutil.which("podman"):
        print("the cluster does not run (podman is not installed)")
        return
    current = view()
    pid = supervisor.running_pid()
    print(f"supervisor: {'running (pid %d)' % pid if pid else 'not running'}")
    names = podman.ours()
    if not names:
        print("no containers: make cluster starts them")
        return
    found = podman.inspect(*names)
    print(f"{'NAME':<16} {'ROLE':<9} {'STATE':<8} {'READY':<6} {'RESTARTS':>8}  ADDRESS")
    for name in sorted(names):
        info = found.get(name)
        mine = (current or {"containers": {}})["containers"].get(name, {})
        ready = mine.get("ready")
        ready = "-" if ready is None else ("yes" if ready else "no")
        held = f"  held: {mine['held']}" if mine.get("held") else ""
        print(f"{name:<16} {info['Config']['Labels'].get(podman.LABEL, ''):<9} "
              f"{podman.state(info):<8} {ready:<6} {mine.get('restarts', 0):>8}  "
              f"{podman.address(info, topology.NETWORK) or ''}{held}")
    print()
    for app in topology.DATABASES:
        primary = postgres.primary(app)
        try:
            replication = postgres.psql(
                primary, "SELECT application_name || ' ' || state || ' ' || sync_state "
                "FROM pg_stat_replication").replace("\n", "; ")
        except podman.Failed:
            replication = "primary not answering"
        print(f"{app}-db: primary {primary}; standbys: {replication or 'none streaming'}")
    print()
    for name, node in stream_nodes().items():
        if "error" in node:
            print(f"{name}: not answering ({node['error']})")
        else:
            print(f"{name}: stream leader {node['leader']}, last sequence {node['last_seq']}")
    print(f"\ningress: http://localhost:{saved_settings().get('CLUSTER_PORT', cluster_port())}")
