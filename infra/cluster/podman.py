"""podman and buildah as the harness calls them: one place that runs them, with the
configuration this machine needs, and small readers of what they answer."""

import json
import os
import subprocess

# crun, podman's default runtime, fails on these machines; runc with limits under the
# machine's hard limits works (../shared/notes/containers.md). `make cluster` installs
# this as a drop-in, so that a person's own `podman start nats-0` works as well.
CONTAINERS_CONF = """\
# Installed by `make cluster` (infra/cluster): podman's default runtime, crun, cannot
# run on this machine; runc can, with limits under the machine's hard limits.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Containers find each other by name (aardvark-dns); podman 4.3 falls back to CNI,
# whose networks have no DNS, when netavark is missing or CNI networks exist.
[network]
network_backend = "netavark"
"""
DROP_IN = "/etc/containers/containers.conf.d/50-ticketing.conf"

# Every container and image of the cluster carries this label: `make cluster-down`
# removes what has it and nothing else.
LABEL = "io.ticketing.cluster"


class Failed(RuntimeError):
    """A podman or buildah command that did not succeed, with what it printed."""


def run(program, *args, check=True, input=None, timeout=120):
    result = subprocess.run(
        [program, *map(str, args)],
        capture_output=True, text=True, input=input, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise Failed(f"{program} {' '.join(map(str, args))}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def podman(*args, **kwargs):
    return run("podman", *args, **kwargs)


def buildah(*args, **kwargs):
    return run("buildah", *args, **kwargs)


def install_drop_in():
    """The configuration podman needs here, as a drop-in every podman call reads."""
    current = open(DROP_IN).read() if os.path.exists(DROP_IN) else None
    if current != CONTAINERS_CONF:
        os.makedirs(os.path.dirname(DROP_IN), exist_ok=True)
        with open(DROP_IN, "w") as file:
            file.write(CONTAINERS_CONF)


def ok(*args, timeout=30):
    """Whether a podman command succeeds."""
    return subprocess.run(["podman", *map(str, args)], capture_output=True,
                          timeout=timeout).returncode == 0


def inspect(*names):
    """What podman knows of each named container that exists, by name."""
    if not names:
        return {}
    out = subprocess.run(
        ["podman", "container", "inspect", *names], capture_output=True, text=True,
    ).stdout
    try:
        found = json.loads(out or "[]")
    except json.JSONDecodeError:
        found = []
    return {c["Name"]: c for c in found}


def state(info):
    """running, paused, exited, created or stopping (None when it does not exist)."""
    return info["State"]["Status"] if info else None


def networks(info):
    """The networks a container is attached to, by name. None are listed for one
    between a `podman network disconnect` and the `connect` after it (a failover moving
    a database's -rw name), nor for some stopped ones."""
    return ((info or {}).get("NetworkSettings") or {}).get("Networks") or {}


def address(info, network):
    if not info or info["State"]["Status"] not in ("running", "paused"):
        return None
    return (networks(info).get(network) or {}).get("IPAddress") or None


def exists(name):
    return subprocess.run(["podman", "container", "exists", name]).returncode == 0


def image_exists(name):
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def ours():
    """The names of every container of the cluster, running or not."""
    out = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
    return [line for line in out.splitlines() if line]
