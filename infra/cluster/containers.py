"""A container's life as a kubelet gives it: created from its spec, started, stopped
with its preStop hook and grace, replaced when its spec changes; and holds, with which
a fault (or a rollout) tells the supervisor to leave a container alone."""

import os
import shutil
import time

from . import podman
from .paths import state


def create(spec, extra_aliases=()):
    args = spec.create_args()
    image = args.index(spec.image)
    for alias in extra_aliases:
        args[image:image] = ["--network-alias", alias]
        image += 2
    podman.podman("create", *args)


def ensure(spec, extra_aliases=(), log=print):
    """Running, and from this spec: created if missing, replaced if its spec changed
    (a new pod), started if stopped."""
    info = podman.inspect(spec.name).get(spec.name)
    if info and info["Config"]["Labels"].get("io.ticketing.spec") != spec.digest():
        log(f"{spec.name}: its spec changed; replacing it")
        stop(spec)
        podman.podman("rm", "-f", spec.name)
        info = None
    if not info:
        create(spec, extra_aliases)
    if podman.state(podman.inspect(spec.name).get(spec.name)) == "paused":
        podman.podman("unpause", spec.name)
    elif podman.state(podman.inspect(spec.name).get(spec.name)) != "running":
        podman.podman("start", spec.name)


def pre_stop(spec):
    """The preStop hook, as the kubelet runs it before the SIGTERM."""
    hook = spec.pre_stop or {}
    if "sleep" in hook:
        time.sleep(hook["sleep"])
    elif "exec" in hook:
        podman.run("podman", "exec", spec.name, *hook["exec"], check=False, timeout=spec.grace)


def stop(spec, hook=True):
    """preStop, then SIGTERM, then SIGKILL once the grace is over (the grace counts
    the hook's time, as in Kubernetes)."""
    if podman.state(podman.inspect(spec.name).get(spec.name)) not in ("running", "paused"):
        return
    started = time.monotonic()
    if podman.state(podman.inspect(spec.name).get(spec.name)) == "paused":
        podman.podman("unpause", spec.name, check=False)
    if hook:
        pre_stop(spec)
    left = max(1, int(spec.grace - (time.monotonic() - started)))
    podman.podman("stop", "-t", left, spec.name, check=False, timeout=left + 30)


def replace(spec, extra_aliases=()):
    """A new container in place of the old one (a new pod of the same name, with
    empty emptyDir volumes)."""
    podman.podman("rm", "-f", "-t", "0", spec.name, check=False)
    for directory in spec.empty_dirs:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        os.chmod(directory, 0o777)
    create(spec, extra_aliases)
    podman.podman("start", spec.name)


# Holds: a file per held container, naming why. The supervisor neither restarts a held
# container nor counts it ready.

def hold_path(name):
    return state("holds", name)


def hold(name, reason):
    os.makedirs(state("holds"), exist_ok=True)
    with open(hold_path(name), "w") as file:
        file.write(reason)


def release(name):
    try:
        os.remove(hold_path(name))
    except FileNotFoundError:
        pass


def held(name):
    try:
        with open(hold_path(name)) as file:
            return file.read().strip() or "held"
    except FileNotFoundError:
        return None


class Held:
    """`with Held(name, reason):` holds a container for the block's length."""

    def __init__(self, name, reason):
        self.name, self.reason = name, reason

    def __enter__(self):
        hold(self.name, self.reason)
        return self

    def __exit__(self, *_):
        release(self.name)
